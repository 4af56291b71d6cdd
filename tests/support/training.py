"""Models to test with: train and score a preset on a split, offer the result to a registry as a flow
run would, copy a run, and check what a run wrote against Keras itself."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.data.mnist import NUM_CLASSES

# The registry's backends, for `pytest.mark.parametrize("registry_kind", BACKENDS, indirect=True)`:
# a folder, and a real S3-compatible server (slow tier: a server process, and uploads).
BACKENDS = ["folder", pytest.param("store", marks=pytest.mark.slow)]

QUIET_LOG = logging.getLogger("tests")


def train_and_evaluate(split, run_dir: Path, preset: str, seed: int, **overrides):
    """(TrainedModel, Evaluation) of `preset` trained and scored on `split`, files in `run_dir`."""
    from mnist_pipeline.core.evaluation.scoring import evaluate_model
    from mnist_pipeline.core.modelling.models import training_config
    from mnist_pipeline.core.modelling.training import fit

    trained = fit(training_config(preset, seed, **overrides), split, run_dir, QUIET_LOG)
    return trained, evaluate_model(trained, split, run_dir)


def register(
    registry,
    run,
    split,
    *,
    threshold: float = 0.3,
    per_class_floor: float = 0.0,
    per_class_margin: float = 1.0,
    require_significant: bool = False,
    flow_run_id: str | None = None,
    attempt: int = 1,
):
    """Offer a (TrainedModel, Evaluation) to `registry` as a flow run would; returns the decision. The
    per-class criteria are off unless given: the tiny synthetic models reach only 50-90%."""
    from mnist_pipeline.core.evaluation.gate import GateSettings
    from mnist_pipeline.core.registry import Candidate

    trained, evaluation = run
    gate = GateSettings(threshold, per_class_floor, per_class_margin, require_significant, significance_alpha=0.05)
    candidate = Candidate(trained, evaluation, split, gate, {"data_source": "bundle"}, flow_run_id)
    return registry.register(candidate, attempt=attempt)


def copy_run(run, destination: Path, *, same_weights: bool = False):
    """`run` (a TrainedModel, Evaluation pair) copied to the run folder `destination`: the same model
    file from another run. Without `same_weights`, its weights' hash is left out (as a TrainedModel
    from before weights were hashed): the registry cannot tell it from another model and takes it as
    a new version. With it, the registry recognises the copy as unchanged."""
    from dataclasses import replace

    trained, evaluation = run
    trained = trained if same_weights else replace(trained, weights_sha256="")
    source = Path(trained.model_path).parent
    shutil.copytree(source, destination)

    def moved(path: str) -> str:
        return str(destination / Path(path).relative_to(source))

    return (
        replace(trained, model_path=moved(trained.model_path), history_path=moved(trained.history_path)),
        replace(
            evaluation,
            metrics_path=moved(evaluation.metrics_path),
            plot_paths=tuple(moved(path) for path in evaluation.plot_paths),
        ),
    )


def checked_metrics(run, split) -> dict:
    """The run's metrics.json, after checking it agrees with itself, with the test labels, and with
    Keras' own evaluation of the model (accuracy to 1e-6, loss to 0.1%)."""
    import json

    import pytest

    from mnist_pipeline.core.modelling.models import load_model

    trained, evaluation = run
    images, labels = split.load("test")
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == metrics["total"] == evaluation.total == len(labels)
    assert confusion.sum(axis=1).tolist() == np.bincount(labels, minlength=NUM_CLASSES).tolist()
    assert np.trace(confusion) == metrics["correct"] == evaluation.correct
    assert metrics["accuracy"] == evaluation.accuracy == metrics["correct"] / len(labels)
    assert [row["correct"] for row in metrics["per_class"]] == np.diag(confusion).tolist()
    low, high = metrics["accuracy_interval_95"]
    assert low < metrics["accuracy"] <= high and (low, high) == evaluation.interval_95
    assert metrics["model_sha256"] and metrics["test_split_sha256"] and metrics["data_sha256"]

    model = load_model(trained.model_path)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_loss, keras_accuracy = model.evaluate(images, labels, batch_size=1000, verbose=0)
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-3)
    return metrics


def assert_serves_as_keras(version_dir: Path, images: np.ndarray) -> None:
    """A registered version's SavedModel takes raw uint8 images [n, 28, 28] and predicts as its `.keras` model."""
    import tensorflow as tf

    from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
    from mnist_pipeline.core.registry import SAVED_MODEL_DIR

    serving = tf.saved_model.load(str(version_dir / SAVED_MODEL_DIR)).signatures["serving_default"]
    [spec] = serving.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]

    served = serving(image=tf.constant(images))["output_0"].numpy()
    expected = predict_probabilities(load_model(version_dir / "model.keras"), images)
    assert served.shape == (len(images), 10)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert np.array_equal(served.argmax(1), expected.argmax(1))


def convert_once_per_model(cache: Path, convert):
    """`light._convert`, remembering its result in `cache` by the model's architecture and weights: the
    tests register the same few tiny models hundreds of times, and a LiteRT conversion costs seconds.
    A model seen before gets the very bytes the converter wrote for it; the verification against Keras
    still runs at every registration."""

    def converted(keras_model, target: Path) -> None:
        digest = hashlib.sha256(keras_model.to_json().encode())
        for weights in keras_model.get_weights():
            digest.update(np.ascontiguousarray(weights).tobytes())
        cached = cache / f"{digest.hexdigest()}.tflite"
        if cached.exists():
            shutil.copyfile(cached, target)
            return
        convert(keras_model, target)
        partial = cache / f"{cached.name}.{os.getpid()}.partial"
        shutil.copyfile(target, partial)
        os.replace(partial, cached)  # other workers see the whole file or none

    return converted
