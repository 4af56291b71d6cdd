"""Stage 4 on the real MNIST: the metrics of a real model on the official test split."""

from __future__ import annotations

import pytest

from support.data import TEST_CLASS_COUNTS
from support.training import checked_metrics

pytestmark = pytest.mark.slow


def test_metrics_on_the_official_test_split_agree_with_keras(mlp_run, split_files):
    metrics = checked_metrics(mlp_run, split_files)
    assert metrics["total"] == 10000
    assert [row["count"] for row in metrics["per_class"]] == TEST_CLASS_COUNTS
    low, high = metrics["accuracy_interval_95"]
    assert high - low < 0.01
