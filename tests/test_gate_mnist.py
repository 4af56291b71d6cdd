"""The stricter gate on real MNIST: an mlp whose training labels of one class were shuffled, offered
to a registry whose production model is a real mlp, is rejected with that class named."""

from __future__ import annotations

import pytest

from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry import open_registry
from support.data import split_with_shuffled_labels
from support.training import register, train_and_evaluate

pytestmark = pytest.mark.slow


def test_an_mlp_trained_with_class_5_shuffled_is_rejected_naming_class_5(mlp_artifacts, split_files, tmp_path):
    sabotaged_split = split_with_shuffled_labels(split_files, 5, tmp_path / "splits")
    sabotaged = train_and_evaluate(sabotaged_split, tmp_path / "sabotaged", "mlp", seed=7)  # the preset, as run
    registry = open_registry(mlp_artifacts / "registry")
    defaults = PipelineParameters()  # the gate as a run applies it
    decision = register(
        registry,
        sabotaged,
        sabotaged_split,
        threshold=defaults.threshold,
        per_class_floor=defaults.per_class_floor,
        per_class_margin=defaults.per_class_margin,
    )

    assert not decision.promoted and registry.production() == "v0001"
    failed = {c["name"]: c for c in decision.criteria if not c["passed"]}
    assert "per-class floor" in failed and "per-class margin" in failed
    assert failed["per-class floor"]["text"].startswith("test accuracy of class 5 (")
    assert failed["per-class floor"]["text"].endswith(") is below the per-class floor 0.9500")  # class 5 alone
    assert failed["per-class floor"]["value"] < 0.5
    assert "test accuracy of class 5 (" in decision.reason
    assert "more than the per-class margin 0.0100 below production v0001's" in decision.reason
    # compared image by image on the same 10,000 test images (the sabotaged split keeps the test split)
    comparison = decision.comparison
    assert comparison["production"] == "v0001" and comparison["total"] == 10_000
    assert comparison["only_production"] > comparison["only_candidate"] and comparison["p_value"] < 1e-6
