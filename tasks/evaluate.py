"""Stage 4, evaluate: score the trained model on the test split, write metrics and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.errors import retry_unless_permanent
from tasks.faults import inject_fault
from tasks.files import atomic_path, sha256_file, write_json_atomic
from tasks.preprocess import SplitFiles
from tasks.split import NUM_CLASSES
from tasks.stats import wilson_interval
from tasks.train import TrainedModel

PER_CLASS_TABLE_KEY = "mnist-per-class-accuracy"


@dataclass(frozen=True)
class Evaluation:
    metrics_path: str
    accuracy: float
    correct: int
    total: int
    interval_95: tuple[float, float]
    plot_paths: tuple[str, ...]


def load_model(model_path: str | Path):
    """Load a `.keras` model with Keras' safe mode on (no arbitrary code from the file)."""
    import keras

    path = Path(model_path)
    if path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras model file; only the .keras format is loaded")
    return keras.models.load_model(path, safe_mode=True, compile=False)


def predict_probabilities(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images, batch_size=1000, verbose=0))


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict:
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
            {"class": c, "count": int(class_totals[c]), "correct": int(confusion[c, c]),
             "accuracy": float(confusion[c, c] / class_totals[c]) if class_totals[c] else 0.0}
            for c in range(NUM_CLASSES)
        ],
        "confusion_matrix": confusion.tolist(),
    }


def _save_figure(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight")


def plot_training_curves(history_path: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    history = json.loads(history_path.read_text())
    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(epochs, history[metric], marker="o", label=f"train {metric}")
        axis.plot(epochs, history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    _save_figure(figure, path)
    plt.close(figure)


def plot_confusion_matrix(confusion: list[list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    matrix = np.asarray(confusion)
    figure, axis = plt.subplots(figsize=(6, 6))
    axis.imshow(np.log1p(matrix), cmap="Blues")
    for (true, predicted), count in np.ndenumerate(matrix):
        axis.text(predicted, true, str(count), ha="center", va="center", fontsize=7,
                  color="white" if true == predicted else "black")
    axis.set_xticks(range(NUM_CLASSES))
    axis.set_yticks(range(NUM_CLASSES))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix (test split)")
    _save_figure(figure, path)
    plt.close(figure)


def evaluate_model(trained: TrainedModel, data: SplitFiles, run_dir: Path) -> Evaluation:
    images, labels = data.load("test")
    metrics = score(predict_probabilities(load_model(trained.model_path), images), labels)
    metrics.update(
        test_split_sha256=sha256_file(data.path("test")),
        data_sha256=data.data_sha256,
        model_sha256=sha256_file(Path(trained.model_path)),
    )
    metrics_path = run_dir / "metrics.json"
    write_json_atomic(metrics_path, metrics)
    curves, confusion = run_dir / "training_curves.png", run_dir / "confusion_matrix.png"
    plot_training_curves(Path(trained.history_path), curves)
    plot_confusion_matrix(metrics["confusion_matrix"], confusion)
    return Evaluation(
        str(metrics_path), metrics["accuracy"], metrics["correct"], metrics["total"],
        tuple(metrics["accuracy_interval_95"]), (str(curves), str(confusion)),
    )


@task(name="evaluate", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_permanent)
def evaluate(trained: TrainedModel, data: SplitFiles, run_dir: str) -> Evaluation:
    """Idempotent: a retry rewrites the same files (atomically) and republishes the table."""
    evaluation = evaluate_model(trained, data, Path(run_dir))
    inject_fault("evaluate")
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    create_table_artifact(
        key=PER_CLASS_TABLE_KEY,
        table=metrics["per_class"],
        description=f"Per-class test accuracy of {trained.config.preset} ({evaluation.accuracy:.4f} overall)",
    )
    return evaluation
