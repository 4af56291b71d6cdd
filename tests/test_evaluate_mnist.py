"""Stage 4 on the real MNIST: the metrics of a real model on the official test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import TEST_CLASS_COUNTS
from mnist_pipeline.core.models import load_model

pytestmark = pytest.mark.slow


def test_metrics_are_consistent(mlp_run):
    _, evaluation = mlp_run
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == metrics["total"] == 10000
    assert confusion.sum(axis=1).tolist() == TEST_CLASS_COUNTS
    assert np.trace(confusion) == metrics["correct"]
    assert metrics["accuracy"] == evaluation.accuracy == metrics["correct"] / 10000
    assert [row["correct"] for row in metrics["per_class"]] == np.diag(confusion).tolist()
    low, high = metrics["accuracy_interval_95"]
    assert low < metrics["accuracy"] < high and high - low < 0.01
    assert metrics["model_sha256"] and metrics["test_split_sha256"] and metrics["data_sha256"]


def test_accuracy_and_loss_match_keras(mlp_run, split_files):
    trained, evaluation = mlp_run
    images, labels = split_files.load("test")
    model = load_model(trained.model_path)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_loss, keras_accuracy = model.evaluate(images, labels, batch_size=1000, verbose=0)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-3)
