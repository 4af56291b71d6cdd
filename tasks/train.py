"""Stage 3, train: fit a preset model on the train split, early-stopped on the validation split."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from tasks.files import atomic_path, write_json_atomic
from tasks.models import TrainingConfig, build_model
from tasks.preprocess import SplitFiles, input_pipeline


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


def fit(config: TrainingConfig, data: SplitFiles, run_dir: Path, log) -> TrainedModel:
    """Train, keep the best epoch's weights (by validation loss), and save `model.keras` atomically."""
    import keras

    keras.utils.set_random_seed(config.seed)
    train_images, train_labels = data.load("train")
    train_ds = input_pipeline(train_images, train_labels, config.batch_size, shuffle_seed=config.seed)
    validation_ds = input_pipeline(*data.load("validation"), config.batch_size)
    model = build_model(config, steps_per_epoch=math.ceil(len(train_labels) / config.batch_size))
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=validation_ds,
        epochs=config.epochs,
        callbacks=[early_stopping, _epoch_logger(log)],
        shuffle=False,  # the pipeline shuffles
        verbose=0,
    )
    train_seconds = time.perf_counter() - started
    val_losses = history.history["val_loss"]
    best_epoch = val_losses.index(min(val_losses)) + 1

    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = run_dir / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    history_path = run_dir / "history.json"
    write_json_atomic(history_path, {k: [float(v) for v in vs] for k, vs in history.history.items()})
    log.info("trained %s: %d epochs in %.1f s, best epoch %d", config.preset, len(val_losses), train_seconds, best_epoch)
    return TrainedModel(str(model_path), str(history_path), config, len(val_losses), best_epoch, train_seconds)


@task(name="train")
def train(config: TrainingConfig, data: SplitFiles, run_dir: str) -> TrainedModel:
    return fit(config, data, Path(run_dir), get_run_logger())

