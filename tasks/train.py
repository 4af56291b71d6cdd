"""Stage 3, train: fit a preset model on the train split, early-stopped on the validation split."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from tasks.errors import retry_unless_permanent
from tasks.faults import crash_point, inject_fault
from tasks.files import atomic_path, write_json_atomic
from tasks.models import TrainingConfig, build_model
from tasks.preprocess import SplitFiles, input_pipeline

PROGRESS_KEY = "mnist-training-progress"


@dataclass(frozen=True)
class TrainedModel:
    model_path: str
    history_path: str
    config: TrainingConfig
    epochs_run: int
    best_epoch: int
    train_seconds: float


def _epoch_logger(log):
    """A Keras callback that logs one line per epoch: loss, accuracy, val_loss, val_accuracy, seconds."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            log.info(
                "epoch %d/%d: loss=%.4f accuracy=%.4f val_loss=%.4f val_accuracy=%.4f seconds=%.1f",
                epoch + 1, self.params["epochs"], logs.get("loss", float("nan")),
                logs.get("accuracy", float("nan")), logs.get("val_loss", float("nan")),
                logs.get("val_accuracy", float("nan")), time.perf_counter() - self.started,
            )

    return EpochLogger()


def _fault_injector():
    """A Keras callback for the test aids: fails the first attempt at the epoch `MNIST_FAIL_ONCE` names,
    kills the process at the epoch `MNIST_CRASH_AT` names (see tasks/faults.py)."""
    import keras

    class FaultInjector(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            crash_point(f"train@epoch{epoch + 1}")
            inject_fault("train", epoch=epoch + 1)

    return FaultInjector()


def _progress_reporter(preset: str):
    """A Keras callback that shows "epoch k of n" as a Prefect progress artifact while training runs."""
    import keras
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    class ProgressReporter(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.epochs_done = 0
            self.artifact_id = create_progress_artifact(
                0.0, key=PROGRESS_KEY, description=f"Training {preset}: epoch 0 of {self.params['epochs']}")

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_done, planned = epoch + 1, self.params["epochs"]
            update_progress_artifact(self.artifact_id, 100.0 * self.epochs_done / planned,
                                     description=f"Training {preset}: epoch {self.epochs_done} of {planned}")

        def on_train_end(self, logs=None):
            if self.epochs_done < self.params["epochs"]:
                update_progress_artifact(self.artifact_id, 100.0, description=(
                    f"Trained {preset}: early stopping after epoch {self.epochs_done} of {self.params['epochs']}"))

    return ProgressReporter()


def completed_epochs(checkpoint_dir: Path) -> int:
    """Epochs an earlier attempt completed, as Keras' BackupAndRestore recorded them (0 if none)."""
    try:
        return int(json.loads((checkpoint_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def read_history(history_csv: Path) -> dict[str, list[float]]:
    """Per-metric lists from Keras' CSVLogger file; an epoch logged twice (by an attempt that failed
    before its checkpoint, then by the retry) counts once, as last logged."""
    with open(history_csv, newline="") as f:
        rows = {int(row.pop("epoch")): row for row in csv.DictReader(f)}
    ordered = [rows[epoch] for epoch in sorted(rows)]
    return {metric: [float(row[metric]) for row in ordered] for metric in ordered[0]} if ordered else {}


def fit(config: TrainingConfig, data: SplitFiles, run_dir: Path, log, tensorboard_dir: Path | None = None) -> TrainedModel:
    """Train, keep the best epoch's weights (by validation loss), and save `model.keras` atomically.

    TensorBoard logs go to `tensorboard_dir` when given; inside a Prefect task run, a progress
    artifact shows the epochs done.

    A checkpoint is kept after every epoch in `run_dir/checkpoint`: when a failed attempt is retried
    with the same `run_dir`, training resumes after the last completed epoch instead of from scratch.
    Early stopping then counts its patience, and picks its best weights, from the resumed epochs.
    """
    import keras

    inject_fault("train")
    keras.utils.set_random_seed(config.seed)
    train_images, train_labels = data.load("train")
    train_ds = input_pipeline(train_images, train_labels, config.batch_size, shuffle_seed=config.seed)
    validation_ds = input_pipeline(*data.load("validation"), config.batch_size)
    model = build_model(config, steps_per_epoch=math.ceil(len(train_labels) / config.batch_size))

    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir, history_csv = run_dir / "checkpoint", run_dir / "history.csv"
    if resumed := completed_epochs(checkpoint_dir):
        log.info("resuming training from the checkpoint of epoch %d of %d (an earlier attempt failed)",
                 resumed, config.epochs)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    callbacks = [
        keras.callbacks.CSVLogger(str(history_csv), append=True),  # before the checkpoint: see read_history
        keras.callbacks.BackupAndRestore(str(checkpoint_dir), double_checkpoint=True),
        early_stopping,
        _epoch_logger(log),
        _fault_injector(),
    ]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    if TaskRunContext.get() is not None:
        callbacks.append(_progress_reporter(config.preset))
    started = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=validation_ds,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles
        verbose=0,
    )
    train_seconds = time.perf_counter() - started
    history = read_history(history_csv)
    best_epoch = early_stopping.best_epoch + 1

    model_path = run_dir / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    history_path = run_dir / "history.json"
    write_json_atomic(history_path, history)
    epochs_run = len(history["val_loss"])
    log.info("trained %s: %d epochs in %.1f s, best epoch %d", config.preset, epochs_run, train_seconds, best_epoch)
    return TrainedModel(str(model_path), str(history_path), config, epochs_run, best_epoch, train_seconds)


@task(name="train", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_permanent)
def train(config: TrainingConfig, data: SplitFiles, run_dir: str, tensorboard_dir: str | None = None) -> TrainedModel:
    return fit(config, data, Path(run_dir), get_run_logger(), Path(tensorboard_dir) if tensorboard_dir else None)

