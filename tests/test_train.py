"""Stage 3: training on the real split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tasks.evaluate import load_model
from tasks.models import training_config
from tasks.train import fit


def test_trained_model_is_saved_as_keras_and_loads_safely(trained_mlp):
    path = Path(trained_mlp.model_path)
    assert path.name == "model.keras" and path.stat().st_size > 0
    assert not list(path.parent.glob(".*.tmp*")), "no temporary file left behind"
    model = load_model(path)
    assert model.inputs[0].dtype == "uint8"
    history = json.loads(Path(trained_mlp.history_path).read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == trained_mlp.epochs_run == 2


def test_saved_weights_are_the_best_epochs(trained_mlp, split_files):
    import keras

    model = load_model(trained_mlp.model_path)
    images, labels = split_files.load("validation")
    probabilities = model.predict(images, batch_size=1000, verbose=0)
    val_loss = float(keras.losses.sparse_categorical_crossentropy(labels, probabilities).numpy().mean())
    history = json.loads(Path(trained_mlp.history_path).read_text())
    assert val_loss == pytest.approx(min(history["val_loss"]), rel=1e-3)
    assert trained_mlp.best_epoch == int(np.argmin(history["val_loss"])) + 1


def test_same_seed_same_model_and_one_log_line_per_epoch(split_files, tmp_path, caplog):
    config = training_config("seed-mlp", seed=11, epochs=1)
    logger = logging.getLogger("tests.repeat")
    with caplog.at_level(logging.INFO, logger="tests.repeat"):
        first = fit(config, split_files, tmp_path / "a", logger)
        second = fit(config, split_files, tmp_path / "b", logger)
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 2
    for field in ("loss=", "accuracy=", "val_loss=", "val_accuracy=", "seconds="):
        assert field in epoch_lines[0]
    weights_a = load_model(first.model_path).get_weights()
    weights_b = load_model(second.model_path).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))
