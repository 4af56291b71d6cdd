"""Stage 4: metrics of a real model on the real test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_CLASS_COUNTS
from tasks.evaluate import evaluate_model, load_model, predict_probabilities, score


@pytest.fixture(scope="module")
def evaluation(trained_mlp, split_files, tmp_path_factory):
    return evaluate_model(trained_mlp, split_files, tmp_path_factory.mktemp("eval"))


def test_metrics_are_consistent(evaluation, trained_mlp, split_files):
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


def test_accuracy_and_loss_match_keras(evaluation, trained_mlp, split_files):
    import keras

    images, labels = split_files.load("test")
    model = load_model(trained_mlp.model_path)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_loss, keras_accuracy = model.evaluate(images, labels, batch_size=1000, verbose=0)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-3)


def test_plots_are_png_files(evaluation):
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


def test_prediction_batches_cover_every_image(trained_mlp, split_files):
    images, _ = split_files.load("validation")
    assert predict_probabilities(load_model(trained_mlp.model_path), images[:2500]).shape == (2500, 10)
