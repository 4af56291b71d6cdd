"""Training progress within an epoch, for trainings whose epochs take a minute or more.

Keras reports to its callbacks after every call into TensorFlow (`STEPS_PER_EXECUTION` steps);
`progress_callback` turns that into a `Progress` at most every `every_seconds`, besides one at the
start and one at each epoch's end, and hands it to a report function: the train stage's log lines
and its Prefect progress artifact are two such functions. An epoch shorter than `every_seconds`
gives no report within it, so a short training logs exactly what it logged before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow

EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Progress:
    epochs_done: int  # epochs completed
    epochs: int  # epochs planned (early stopping may end sooner)
    batches_done: int  # in the epoch running; 0 at an epoch's end
    batches: int | None  # batches an epoch (None while Keras does not know)
    seconds_left: float | None  # estimated, to the planned end (None before anything was timed)
    finished: bool = False  # training ended (after the planned epochs, or stopped early)

    @property
    def fraction(self) -> float:
        if self.finished:
            return 1.0
        within = self.batches_done / self.batches if self.batches else 0.0
        return min(1.0, (self.epochs_done + within) / self.epochs)

    def describe(self) -> str:
        """e.g. "epoch 3 of 15, 210 of 430 batches, about 4 min 10 s left"."""
        if self.finished:
            stopped = " (early stopping)" if self.epochs_done < self.epochs else ""
            return f"done after epoch {self.epochs_done} of {self.epochs}{stopped}"
        if self.batches_done and self.batches:
            where = f"epoch {self.epochs_done + 1} of {self.epochs}, {self.batches_done} of {self.batches} batches"
        else:
            where = f"epoch {self.epochs_done} of {self.epochs}"
        return where if self.seconds_left is None else f"{where}, about {_duration(self.seconds_left)} left"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def progress_callback(report: Callable[[Progress], None], every_seconds: float = EVERY_SECONDS) -> Any:
    """A Keras callback calling `report` at the start, within an epoch when `every_seconds` passed
    since the last report, at each epoch's end, and when training ends."""
    import_tensorflow()
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
            self.epochs_done, self.epoch_seconds = 0, list[float]()
            self.last_report = time.monotonic()
            report(Progress(0, self.params["epochs"], 0, self.params.get("steps"), None))

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.epochs_done, self.epoch_started = epoch, time.monotonic()  # resumed trainings start later

        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            now, batches = time.monotonic(), self.params.get("steps")
            if now - self.last_report < every_seconds or not batches:
                return
            done = batch + 1
            per_batch = (now - self.epoch_started) / done
            epoch_left = per_batch * (batches - done)
            later_epochs = (self.params["epochs"] - self.epochs_done - 1) * per_batch * batches
            self.last_report = now
            report(Progress(self.epochs_done, self.params["epochs"], done, batches, epoch_left + later_epochs))

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            now = time.monotonic()
            self.epoch_seconds.append(now - self.epoch_started)
            self.epochs_done, self.last_report = epoch + 1, now
            mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
            left = (self.params["epochs"] - self.epochs_done) * mean
            report(Progress(self.epochs_done, self.params["epochs"], 0, self.params.get("steps"), left))

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            report(Progress(self.epochs_done, self.params["epochs"], 0, self.params.get("steps"), 0.0, finished=True))

    return ProgressCallback()
