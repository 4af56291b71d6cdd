"""Scoring a model on the test split: loss, accuracy with its 95% Wilson interval, per-class
accuracy and the confusion matrix, written as `metrics.json` beside the run's plots; and the class
predicted for each test image, with its label, in `predictions.npz`, which the gate compares image by
image with production's (core/evaluation/gate.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.data.splits import SplitFiles
from mnist_pipeline.core.evaluation.plots import plot_confusion_matrix, plot_training_curves
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.files import atomic_path, sha256_file, write_json_atomic
from mnist_pipeline.core.support.stats import wilson_interval

PREDICTIONS = "predictions.npz"


@dataclass(frozen=True)
class Evaluation:
    metrics_path: str
    accuracy: float
    correct: int
    total: int
    interval_95: tuple[float, float]
    plot_paths: tuple[str, ...]
    predictions_path: str

    def fetched(self) -> Evaluation:
        """This evaluation with its files on this machine (downloaded from the artifact store if need be)."""
        return replace(
            self,
            metrics_path=str(store.fetch(self.metrics_path)),
            plot_paths=tuple(str(store.fetch(path)) for path in self.plot_paths),
            predictions_path=str(store.fetch(self.predictions_path)),
        )

    def published(self) -> Evaluation:
        """This evaluation with its files uploaded to the artifact store they mirror, if any, and
        referenced by their URLs there."""
        return replace(
            self,
            metrics_path=store.publish(self.metrics_path),
            plot_paths=tuple(store.publish(path) for path in self.plot_paths),
            predictions_path=store.publish(self.predictions_path),
        )


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Loss, accuracy with its 95% Wilson interval, per-class accuracy and the confusion matrix."""
    labels = labels.astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    correct = int((predicted == labels).sum())
    total = int(len(labels))
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    class_totals = confusion.sum(axis=1)
    true_probability = np.clip(probabilities[np.arange(total), labels], 1e-7, 1.0)
    low, high = wilson_interval(correct, total)
    return {
        "loss": float(-np.log(true_probability).mean()),
        "accuracy": correct / total,
        "correct": correct,
        "total": total,
        "accuracy_interval_95": [low, high],
        "per_class": [
            {
                "class": c,
                "count": int(class_totals[c]),
                "correct": int(confusion[c, c]),
                "accuracy": float(confusion[c, c] / class_totals[c]) if class_totals[c] else 0.0,
            }
            for c in range(NUM_CLASSES)
        ],
        "confusion_matrix": confusion.tolist(),
    }


def probabilities_on_test_split(model_path: str | Path, data: SplitFiles) -> tuple[np.ndarray, np.ndarray]:
    """(labels, class probabilities) of the `.keras` model at `model_path` on `data`'s test split."""
    images, labels = data.load("test")
    return labels, predict_probabilities(load_model(model_path), images)


def write_predictions(path: Path, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Each test image's label and predicted class (uint8), atomically (no pickles: plain arrays)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, label=labels.astype(np.uint8), predicted=probabilities.argmax(axis=1).astype(np.uint8))


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted classes) as `write_predictions` wrote them."""
    with np.load(path, allow_pickle=False) as stored:
        return stored["label"], stored["predicted"]


def evaluation_key(model_path: str | Path, data_sha256: str, runs_root: str) -> str:
    """The hash of everything an evaluation's result depends on: the model file, the data (the
    split's hash), the code that scores and plots, and the folder its files are kept in. The
    evaluate stage is cached on this key: the model of an unchanged run is not scored again."""
    from mnist_pipeline.core.evaluation import plots

    inputs = {
        "model_sha256": sha256_file(store.fetch(model_path)),
        "data_sha256": data_sha256,
        "runs_root": str(runs_root),
        "code": [sha256_file(Path(module)) for module in (__file__, plots.__file__)],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def evaluate_model(trained: TrainedModel, data: SplitFiles, run_dir: Path) -> Evaluation:
    """Score the trained model on the test split; write `metrics.json`, the predictions and the plots
    into `run_dir`."""
    labels, probabilities = probabilities_on_test_split(trained.model_path, data)
    metrics = score(probabilities, labels)
    metrics.update(
        test_split_sha256=sha256_file(data.path("test")),
        data_sha256=data.data_sha256,
        model_sha256=sha256_file(Path(trained.model_path)),
    )
    metrics_path, predictions_path = run_dir / "metrics.json", run_dir / PREDICTIONS
    write_json_atomic(metrics_path, metrics)
    write_predictions(predictions_path, labels, probabilities)
    curves, confusion = run_dir / "training_curves.png", run_dir / "confusion_matrix.png"
    plot_training_curves(Path(trained.history_path), curves)
    plot_confusion_matrix(metrics["confusion_matrix"], confusion)
    return Evaluation(
        str(metrics_path),
        metrics["accuracy"],
        metrics["correct"],
        metrics["total"],
        tuple(metrics["accuracy_interval_95"]),
        (str(curves), str(confusion)),
        str(predictions_path),
    )
