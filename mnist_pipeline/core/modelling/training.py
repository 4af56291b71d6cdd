"""Training: fit a preset model on the train split, early-stopped on the validation split.

Keras does the work (its callbacks log the history, checkpoint each epoch, stop early and keep the
best weights); this module wires them and saves the result atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.data.splits import Log, SplitFiles
from mnist_pipeline.core.modelling.batches import batches_of
from mnist_pipeline.core.modelling.models import TrainingConfig, build_model, for_inference
from mnist_pipeline.core.modelling.progress import Progress, progress_callback
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.errors import PermanentError
from mnist_pipeline.core.support.faults import crash_point, fail_training_in, inject_fault
from mnist_pipeline.core.support.files import atomic_path, sha256_file, write_json_atomic
from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow


class MissingModelError(PermanentError):
    """A trained model whose files are no longer where its record says."""


@dataclass(frozen=True)
class TrainedModel:
    model_path: str
    history_path: str
    config: TrainingConfig
    epochs_run: int
    best_epoch: int
    train_seconds: float
    weights_sha256: str = ""  # the trained weights' values: equal weights are the same model, whatever the file's bytes

    def fetched(self) -> TrainedModel:
        """This model with its files on this machine (downloaded from the artifact store if need be).
        Files that are gone raise MissingModelError: a run folder deleted after Prefect cached its
        training leaves the cache pointing at it."""
        try:
            model_path, history_path = store.fetch(self.model_path), store.fetch(self.history_path)
            found = model_path.is_file() and history_path.is_file()
        except FileNotFoundError:  # not in the artifact store
            found = False
        if not found:
            raise MissingModelError(
                f"the trained model {self.model_path} is gone (its run folder was deleted after the training "
                "was cached): run again with --force-retrain (the parameter force_retrain) to train it anew"
            )
        return replace(self, model_path=str(model_path), history_path=str(history_path))

    def published(self) -> TrainedModel:
        """This model with its files referenced by their URLs in the artifact store, if they mirror one
        (once its run folder was uploaded with `store.publish`)."""
        return replace(self, model_path=store.ref_of(self.model_path), history_path=store.ref_of(self.history_path))


def training_key(config: TrainingConfig, data_sha256: str, runs_root: str) -> str:
    """The hash of everything that decides the trained model: the configuration (seed included),
    the data (the split's hash), the code that builds and trains it, and TensorFlow's and Keras'
    versions. With `runs_root`, the folder (or store URL) the model is kept in: another artifacts
    folder's model is not this one's. The training stage is cached on this key."""
    from importlib.metadata import version

    from mnist_pipeline.core.modelling import batches, models

    inputs = {
        "config": asdict(config),
        "data_sha256": data_sha256,
        "runs_root": str(runs_root),
        "code": [sha256_file(Path(module)) for module in (__file__, models.__file__, batches.__file__)],
        "frameworks": {name: version(name) for name in ("tensorflow", "keras")},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def weights_sha256(model: Any) -> str:
    """SHA-256 of a Keras model's weight values, in order (the `.keras` file's bytes also hold
    metadata such as the time it was saved, so two identical models rarely have identical files)."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def prepare_training(config: TrainingConfig, data: SplitFiles) -> tuple[Any, Any, Any]:
    """(compiled model, train pipeline, validation pipeline), seeded by the config: the set-up of
    every training run, shared with the benchmark."""
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    # the same seed must give the same weights (a retraining on unchanged inputs is then recognised as
    # unchanged): without this, TensorFlow's multi-threaded reductions may add up in another order when
    # the machine is busy, and the weights differ in their last bits
    tf.config.experimental.enable_op_determinism()
    train_images, train_labels = data.load("train")
    train_ds = batches_of(train_images, train_labels, config.batch_size, shuffle_seed=config.seed)
    validation_ds = batches_of(*data.load("validation"), config.batch_size)
    model = build_model(config, steps_per_epoch=math.ceil(len(train_labels) / config.batch_size))
    return model, train_ds, validation_ds


def early_stopping(config: TrainingConfig) -> Any:
    """Stop when validation loss has not improved for `patience` epochs; keep the best epoch's weights."""
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)


def _epoch_logger(log: Log) -> Any:
    """A Keras callback that logs one line per epoch: loss, accuracy, val_loss, val_accuracy, seconds."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            log.info(
                "epoch %d/%d: loss=%.4f accuracy=%.4f val_loss=%.4f val_accuracy=%.4f seconds=%.1f",
                epoch + 1,
                self.params["epochs"],
                logs.get("loss", float("nan")),
                logs.get("accuracy", float("nan")),
                logs.get("val_loss", float("nan")),
                logs.get("val_accuracy", float("nan")),
                time.perf_counter() - self.started,
            )

    return EpochLogger()


def _within_epoch_logger(log: Log, preset: str) -> Any:
    """A Keras callback that logs, in an epoch of more than ~10 s, how far it got and the time left."""

    def log_within_epoch(progress: Progress) -> None:
        if progress.batches_done:
            log.info("training %s: %s", preset, progress.describe())

    return progress_callback(log_within_epoch)


def _fault_injector(attempt: int) -> Any:
    """A Keras callback for the test aids: fails the first attempt at the epoch `MNIST_TEST_FAIL_ONCE` names,
    kills the process at the epoch `MNIST_TEST_CRASH_AT` names (see core/support/faults.py)."""
    import keras

    class FaultInjector(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            crash_point(f"train@epoch{epoch + 1}")
            inject_fault("train", attempt, epoch=epoch + 1)

    return FaultInjector()


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


def fit(
    config: TrainingConfig,
    data: SplitFiles,
    run_dir: Path,
    log: Log,
    *,
    tensorboard_dir: Path | None = None,
    attempt: int = 1,
    callbacks: tuple[Any, ...] = (),
) -> TrainedModel:
    """Train, keep the best epoch's weights (by validation loss), and save `model.keras` atomically.

    TensorBoard logs go to `tensorboard_dir` when given; `callbacks` are added to Keras' own (the
    train stage adds a progress reporter); `attempt` (from 1) is for fault injection.

    A checkpoint is kept after every epoch in `run_dir/checkpoint`: when a failed attempt is retried
    with the same `run_dir`, training resumes after the last completed epoch instead of from scratch.
    Early stopping then counts its patience, and picks its best weights, from the resumed epochs.
    """
    import keras

    inject_fault("train", attempt)
    fail_training_in(str(run_dir))
    model, train_ds, validation_ds = prepare_training(config, data)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir, history_csv = run_dir / "checkpoint", run_dir / "history.csv"
    if resumed := completed_epochs(checkpoint_dir):
        log.info(
            "resuming training from the checkpoint of epoch %d of %d (an earlier attempt failed)",
            resumed,
            config.epochs,
        )
    stopper = early_stopping(config)
    all_callbacks = [
        keras.callbacks.CSVLogger(str(history_csv), append=True),  # before the checkpoint: see read_history
        keras.callbacks.BackupAndRestore(str(checkpoint_dir), double_checkpoint=True),
        stopper,
        _epoch_logger(log),
        _within_epoch_logger(log, config.preset),
        _fault_injector(attempt),
        *callbacks,
    ]
    if tensorboard_dir is not None:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    started = time.perf_counter()
    model.fit(
        train_ds, validation_data=validation_ds, epochs=config.epochs, callbacks=all_callbacks, shuffle=False, verbose=0
    )  # the pipeline shuffles
    train_seconds = time.perf_counter() - started
    history = read_history(history_csv)
    best_epoch = stopper.best_epoch + 1

    model = for_inference(model)
    model_path = run_dir / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    history_path = run_dir / "history.json"
    write_json_atomic(history_path, history)
    epochs_run = len(history["val_loss"])
    log.info("trained %s: %d epochs in %.1f s, best epoch %d", config.preset, epochs_run, train_seconds, best_epoch)
    return TrainedModel(
        str(model_path), str(history_path), config, epochs_run, best_epoch, train_seconds, weights_sha256(model)
    )
