"""PNG plots of a run: training curves and the confusion matrix (matplotlib, no display needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.support.files import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save_figure(figure: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight")
    _pyplot().close(figure)


def plot_training_curves(history_path: Path, path: Path) -> None:
    history = json.loads(history_path.read_text())
    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
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
        axis.text(
            predicted,
            true,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if true == predicted else "black",
        )
    axis.set_xticks(range(NUM_CLASSES))
    axis.set_yticks(range(NUM_CLASSES))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix (test split)")
    _save_figure(figure, path)


def png_data_uri(path: Path) -> str:
    """A PNG as a `data:` URI: the one way a web page (the Prefect UI's markdown artifacts) can show an
    image from the worker's disk, which browsers never load through `file://` links."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def plot_sweep(records: list[dict[str, Any]], selected: str, path: Path) -> None:
    """Validation accuracy per sweep candidate, the selected one highlighted, failed ones labelled."""
    names = [r["candidate"] for r in records]
    accuracies = [r["validation_accuracy"] or 0.0 for r in records]
    figure, axis = _pyplot().subplots(figsize=(max(4, 0.8 * len(names) + 2), 3.5))
    bars = axis.bar(names, accuracies, color=["tab:orange" if n == selected else "tab:blue" for n in names])
    axis.bar_label(
        bars,
        labels=[
            f"{r['validation_accuracy']:.4f}" if r["validation_accuracy"] is not None else "failed" for r in records
        ],
        fontsize=8,
    )
    low = min((a for a in accuracies if a), default=0.0)
    axis.set_ylim(max(0.0, low - 0.05), 1.0)
    axis.set_ylabel("validation accuracy")
    axis.set_title(f"Sweep candidates (selected: {selected})")
    _save_figure(figure, path)
