"""Stage 4: scoring and its files, on a tiny model of the synthetic split (the real model on the real
test split is in test_evaluate_mnist.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.evaluation.scoring import score
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from support.training import checked_metrics


def test_metrics_agree_with_themselves_the_labels_and_keras(tiny_strong, synthetic_split):
    checked_metrics(tiny_strong, synthetic_split)


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
