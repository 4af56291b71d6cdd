"""Stage 4: scoring and its files, on a tiny model of the synthetic split (the real model on the real
test split is in test_evaluate_mnist.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.models import load_model, predict_probabilities
from mnist_pipeline.core.scoring import score


def test_metrics_are_consistent(tiny_strong, synthetic_split):
    _, evaluation = tiny_strong
    _, labels = synthetic_split.load("test")
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == metrics["total"] == evaluation.total == len(labels)
    assert confusion.sum(axis=1).tolist() == np.bincount(labels, minlength=10).tolist()
    assert np.trace(confusion) == metrics["correct"] == evaluation.correct
    assert metrics["accuracy"] == evaluation.accuracy == metrics["correct"] / len(labels)
    assert [row["correct"] for row in metrics["per_class"]] == np.diag(confusion).tolist()
    low, high = metrics["accuracy_interval_95"]
    assert low < metrics["accuracy"] <= high and (low, high) == evaluation.interval_95
    assert metrics["model_sha256"] and metrics["test_split_sha256"] and metrics["data_sha256"]


def test_accuracy_and_loss_match_keras(tiny_strong, synthetic_split):
    trained, evaluation = tiny_strong
    images, labels = synthetic_split.load("test")
    model = load_model(trained.model_path)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_loss, keras_accuracy = model.evaluate(images, labels, batch_size=1000, verbose=0)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-3)


def test_plots_are_png_files(tiny_strong):
    _, evaluation = tiny_strong
    assert len(evaluation.plot_paths) == 2
    for path in map(Path, evaluation.plot_paths):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_counts_each_confusion():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.eye(10)[[0, 2, 2, 1]] * 0.9 + 0.01
    metrics = score(probabilities, labels)
    assert metrics["correct"] == 2
    assert metrics["confusion_matrix"][1][2] == 1 and metrics["confusion_matrix"][2][1] == 1


def test_only_keras_files_are_loaded(tmp_path):
    pickle_file = tmp_path / "model.pkl"
    pickle_file.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=".keras"):
        load_model(pickle_file)


def test_prediction_batches_cover_every_image(tiny_strong, synthetic_split):
    images, _ = synthetic_split.load("train")
    images = np.concatenate([images] * 5)[:2500]  # more than two batches of 1000, the last one short
    assert predict_probabilities(load_model(tiny_strong[0].model_path), images).shape == (2500, 10)
