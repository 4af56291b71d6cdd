"""The model the service answers with: the registry's production model, followed as it moves.

A watcher thread reads the production pointer every `poll_seconds`. When it names another version,
the new model is loaded beside the old one: its file checked against the SHA-256 registered for it
(`Registry.light_model_path`/`model_path`, as `mnist-pipeline predict` does), loaded and run once. A
version with a light model runs on LiteRT and TensorFlow is never imported; one without (its conversion
failed or disagreed, or it predates light models and was not converted) runs on Keras, in safe mode.
Only then is it swapped in, by replacing one reference: a batch already running holds the
`LoadedModel` it started with, so requests in flight finish on the old model. A model that fails any
step is refused: the old one keeps serving, the refusal is logged and `GET /v1/model` reports it. A
refused version is tried again after `RETRY_SECONDS` (its folder may have been restored).

Everything goes through `Registry`, so the service reads whatever store the registry reads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_pipeline.core.data.mnist import IMAGE_SHAPE
from mnist_pipeline.core.modelling.litert import RUNTIME, LightModel
from mnist_pipeline.core.modelling.models import load_model
from mnist_pipeline.core.registry import Registry
from mnist_pipeline.core.registry.decisions import now_iso
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.serve import metrics

LOG = logging.getLogger("mnist_pipeline.serve")
RETRY_SECONDS = 30.0
# Batch sizes run once before a model is swapped in: Keras traces its predict function for the first
# batch shapes it sees, and a request should not wait for that.
WARM_UP_BATCHES = (1, 2, 3)


@dataclass(frozen=True)
class LoadedModel:
    """A verified, loaded model and what `GET /v1/model` says about it."""

    version: str
    model: Any  # a LightModel, or a Keras model
    info: dict[str, Any]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities [n, 10] of uint8 images [n, 28, 28]. On Keras, `predict_on_batch` runs
        the whole batch in one compiled call, without `predict`'s per-call dataset set-up (milliseconds)."""
        if isinstance(self.model, LightModel):
            return self.model.predict(images)
        return np.asarray(self.model.predict_on_batch(images))


@dataclass(frozen=True)
class Refusal:
    version: str
    reason: str
    time: str
    monotonic: float


def load_verified(registry: Registry, version: str) -> LoadedModel:
    """`version`'s model, checked against its registered SHA-256, loaded and warmed up."""
    light = registry.light_model_path(version)  # raises RegistryError unless the files are the ones registered
    record = registry.read_version(version)
    model = LoadedModel(
        version,
        LightModel(light) if light else load_model(registry.model_path(version)),
        {
            "version": version,
            "runtime": RUNTIME if light else "keras",
            "preset": record.get("preset"),
            "test_accuracy": record.get("test_accuracy"),
            "accuracy_interval_95": record.get("accuracy_interval_95"),
            "model_sha256": record.get("model_sha256"),
            "production_since": _production_since(registry, version),
        },
    )
    for size in WARM_UP_BATCHES:
        model.predict(np.zeros((size, *IMAGE_SHAPE), np.uint8))
    model.info["loaded"] = now_iso()
    return model


def _production_since(registry: Registry, version: str) -> str | None:
    """When the decision log last made `version` production."""
    moves = [record.time for record in registry.decisions() if record.moves_production and record.candidate == version]
    return moves[-1] if moves else None


class ModelHolder:
    """The production model being served (`current`), and why production is not served, if it is not."""

    def __init__(self, registry: Registry, poll_seconds: float):
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.current: LoadedModel | None = None
        self.refused: Refusal | None = None
        self.problem: str | None = "the production model is not loaded yet"
        self._runtime = ""  # what the model served runs on, for the metrics' labels
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="production-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def refresh(self) -> None:
        """One look at the production pointer: load and swap in the model it names, if it is new."""
        try:
            version = self.registry.production()
        except PipelineError as error:
            self._note_problem(f"the production pointer cannot be read: {error}")
            return
        if version is None:
            self._note_problem(f"no production model yet in {self.registry.location}: train and promote one")
            return
        self.problem = None
        if self.current is not None and version == self.current.version:
            self.refused = None  # e.g. rolled back from a refused version: nothing is missing
            return
        if (
            self.refused
            and self.refused.version == version
            and time.monotonic() - self.refused.monotonic < RETRY_SECONDS
        ):
            return
        self._load(version)

    def _load(self, version: str) -> None:
        before = self.current.version if self.current else None
        try:
            loaded = load_verified(self.registry, version)
        except Exception as error:  # any failure refuses the model; the old one keeps serving
            reason = str(error) if isinstance(error, PipelineError) else f"{type(error).__name__}: {error}"
            self.refused = Refusal(version, reason, now_iso(), time.monotonic())
            metrics.REFUSALS.inc()
            LOG.error("refused %s as production model (%s keeps serving): %s", version, before or "no model", reason)
            return
        self.current = loaded  # the swap: one reference; running batches keep the model they took
        metrics.serving(version, loaded.info["runtime"], (before, self._runtime) if before else None)
        self._runtime = loaded.info["runtime"]
        self.refused = None
        LOG.info("now serving %s (was %s)", version, before or "no model")

    def _note_problem(self, problem: str) -> None:
        if problem != self.problem:
            LOG.warning("%s; %s", problem, f"{self.current.version} keeps serving" if self.current else "not ready")
        self.problem = problem

    def _watch(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any one failed look
                LOG.exception("watching the production pointer failed; trying again")
            if self._stop.wait(self.poll_seconds):
                return
