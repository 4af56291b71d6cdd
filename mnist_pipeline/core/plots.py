"""PNG plots of a run: training curves and the confusion matrix (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_pipeline.core.files import atomic_path
from mnist_pipeline.core.mnist import NUM_CLASSES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save_figure(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight")
    _pyplot().close(figure)


def plot_training_curves(history_path: Path, path: Path) -> None:
    history = json.loads(history_path.read_text())
    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(epochs, history[metric], marker="o", label=f"train {metric}")
        axis.plot(epochs, history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    _save_figure(figure, path)


def plot_confusion_matrix(confusion: list[list[int]], path: Path) -> None:
    matrix = np.asarray(confusion)
    figure, axis = _pyplot().subplots(figsize=(6, 6))
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
