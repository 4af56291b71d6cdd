"""Stage 3: training, on the synthetic split (the train task in a Prefect run is in test_train_task.py)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.modelling.models import load_model, training_config
from mnist_pipeline.core.modelling.training import MissingModelError, fit
from mnist_pipeline.core.support.faults import FAIL_ONCE_ENV, InjectedFault
from support.training import QUIET_LOG


def epoch_recorder():
    """A Keras callback that records the epochs training starts (0-based) and the weights after each."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begun, self.weights = [], {}

        def on_epoch_begin(self, epoch, logs=None):
            self.begun.append(epoch)

        def on_epoch_end(self, epoch, logs=None):
            self.weights[epoch] = self.model.get_weights()

    return EpochRecorder()


def last_epoch_diverges(epochs: int):
    """A Keras callback that raises the learning rate to 1 for the last epoch, so that training ends
    with an epoch worse than an earlier one (the test checks that it did)."""
    import keras

    class LastEpochDiverges(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == epochs - 1:
                self.model.optimizer.learning_rate.assign(1.0)

    return LastEpochDiverges()


def test_trained_model_is_saved_as_keras_and_loads_safely(tiny_strong):
    trained, _ = tiny_strong
    path = Path(trained.model_path)
    assert path.name == "model.keras" and path.stat().st_size > 0
    assert not list(path.parent.glob(".*.tmp*")), "no temporary file left behind"
    model = load_model(path)
    assert model.inputs[0].dtype == "uint8"
    history = json.loads(Path(trained.history_path).read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == trained.epochs_run == 3


def test_saved_weights_are_the_best_epochs(synthetic_split, tmp_path):
    import keras

    epochs, recorder = 3, epoch_recorder()
    config = training_config("seed-mlp", seed=5, epochs=epochs, patience=epochs, batch_size=32)
    trained = fit(
        config, synthetic_split, tmp_path / "run", QUIET_LOG, callbacks=(last_epoch_diverges(epochs), recorder)
    )
    history = json.loads(Path(trained.history_path).read_text())
    best = int(np.argmin(history["val_loss"]))
    assert len(history["val_loss"]) == epochs and best < epochs - 1, history  # the last epoch is not the best

    saved = load_model(trained.model_path)
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), recorder.weights[best], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), recorder.weights[epochs - 1], strict=True))
    images, labels = synthetic_split.load("validation")
    probabilities = saved.predict(images, batch_size=1000, verbose=0)
    val_loss = float(keras.losses.sparse_categorical_crossentropy(labels, probabilities).numpy().mean())
    assert val_loss == pytest.approx(min(history["val_loss"]), rel=1e-3)
    assert trained.best_epoch == best + 1


def test_a_model_whose_run_folder_was_deleted_is_a_clear_error_saying_how_to_train_it_again(tiny_strong, tmp_path):
    """Prefect's cache of a training keeps its record after the run folder is deleted (to free space,
    say): the stages that read the model then say so and how to train it anew, not Keras' "File not found"."""
    trained, _ = tiny_strong
    assert trained.fetched().model_path == trained.model_path
    gone = replace(trained, model_path=str(tmp_path / "deleted-run" / "model.keras"))
    with pytest.raises(MissingModelError, match=r"deleted-run/model.keras is gone .* --force-retrain"):
        gone.fetched()
    history_gone = replace(trained, history_path=str(tmp_path / "deleted-run" / "history.json"))
    with pytest.raises(MissingModelError, match="--force-retrain"):
        history_gone.fetched()


def test_same_seed_same_model_and_one_log_line_per_epoch(tiny_strong, synthetic_split, tmp_path, caplog):
    first, _ = tiny_strong
    logger = logging.getLogger("tests.repeat")
    with caplog.at_level(logging.INFO, logger="tests.repeat"):
        second = fit(first.config, synthetic_split, tmp_path / "again", logger)
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == second.epochs_run == first.config.epochs
    for field in ("loss=", "accuracy=", "val_loss=", "val_accuracy=", "seconds="):
        assert field in epoch_lines[0]
    weights_a = load_model(first.model_path).get_weights()
    weights_b = load_model(second.model_path).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))


def test_a_retried_training_resumes_after_the_last_finished_epoch(synthetic_split, tmp_path, monkeypatch, caplog):
    config = training_config("seed-mlp", seed=2, epochs=3, patience=3, batch_size=32)
    run_dir = tmp_path / "run"
    monkeypatch.setenv(FAIL_ONCE_ENV, "train@epoch2")
    first = epoch_recorder()
    with pytest.raises(InjectedFault, match="epoch 2"):
        fit(config, synthetic_split, run_dir, QUIET_LOG, attempt=1, callbacks=(first,))
    assert first.begun == [0, 1]

    retry = epoch_recorder()
    with caplog.at_level(logging.INFO, logger=QUIET_LOG.name):
        trained = fit(config, synthetic_split, run_dir, QUIET_LOG, attempt=2, callbacks=(retry,))
    assert retry.begun == [2], "the retry trained finished epochs again"
    assert "resuming training from the checkpoint of epoch 2 of 3" in caplog.text
    with open(run_dir / "history.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]  # each epoch trained once
    history = json.loads(Path(trained.history_path).read_text())
    assert trained.epochs_run == len(history["val_loss"]) == 3


def test_no_tensorboard_logs_unless_asked(synthetic_split, tmp_path, monkeypatch):
    """`fit` writes TensorBoard logs only into a `tensorboard_dir` it is given (the train task gives
    one: test_train_task.py); outside Prefect, it needs nothing but its run folder."""
    monkeypatch.chdir(tmp_path)  # where a relative default (Keras' "logs") would go
    trained = fit(
        training_config("seed-mlp", seed=12, epochs=1, batch_size=32), synthetic_split, tmp_path / "run", QUIET_LOG
    )
    assert Path(trained.model_path).is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["run"]
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_progress_is_reported_within_long_epochs_with_the_time_left(synthetic_split, tmp_path):
    """600 pictures in batches of 4 are 150 batches an epoch, three calls into TensorFlow (50 steps
    each): with no minimum interval, each call's end is reported (the train stage reports every 10 s)."""
    from mnist_pipeline.core.modelling.progress import Progress, progress_callback

    reports: list[Progress] = []
    config = training_config("seed-mlp", seed=3, epochs=2, patience=5, batch_size=4)
    fit(config, synthetic_split, tmp_path / "run", QUIET_LOG, callbacks=(progress_callback(reports.append, 0.0),))

    assert reports[0] == Progress(0, 2, 0, 150, None)
    within = [(r.epochs_done, r.batches_done) for r in reports if r.batches_done]
    assert within == [(0, 50), (0, 100), (0, 150), (1, 50), (1, 100), (1, 150)]
    assert all(r.seconds_left is not None and r.seconds_left >= 0 for r in reports[1:])
    assert [r.epochs_done for r in reports if not r.batches_done][1:] == [1, 2, 2]  # epoch ends, then the end
    assert reports[-1].finished and reports[-1].fraction == 1.0
    assert [round(r.fraction, 3) for r in reports[1:4]] == [0.167, 0.333, 0.5]
    assert reports[1].describe().startswith("epoch 1 of 2, 50 of 150 batches, about ")
    assert reports[-1].describe() == "done after epoch 2 of 2"
    assert Progress(3, 15, 0, 430, 250.0).describe() == "epoch 3 of 15, about 4 min 10 s left"
    assert Progress(3, 15, 0, 430, 0.0, finished=True).describe() == "done after epoch 3 of 15 (early stopping)"
