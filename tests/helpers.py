"""What the tests share: data and models to test with, ways to run the pipeline as a user does, and
reads of Prefect's state that wait until it has settled."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from mnist_pipeline.core.mnist import IMAGE_SHAPE, NUM_CLASSES
from mnist_pipeline.core.paths import bundled_mnist_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FLOW_SCRIPT = PROJECT_ROOT / "flows" / "mnist_flow.py"
ENTRY_POINT = Path(sys.executable).parent / "mnist-pipeline"
QUIET_LOG = logging.getLogger("tests")
STAGES = ("download-split", "preprocess", "train", "evaluate", "register")
FINAL_TASK_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

T = TypeVar("T")


# Data and models ---------------------------------------------------------------------------------

def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of 10 made-up "digits" (one fixed random stroke pattern a class, 15% of its
    pixels flipped), every class present: learnable in a few epochs by the smallest preset."""
    templates = np.random.default_rng(0).random((NUM_CLASSES, *IMAGE_SHAPE)) > 0.75
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % NUM_CLASSES).astype(np.uint8)
    flips = rng.random((count, *IMAGE_SHAPE)) < 0.15
    images = (templates[labels] ^ flips).astype(np.uint8) * 255
    return images, labels


def synthetic_split_files(splits_root: Path, sizes=(600, 100, 300)):
    """A checked split of synthetic digits under `splits_root`, written as the pipeline writes one."""
    from mnist_pipeline.core.splits import SplitRecipe, check_split, write_split

    recipe = SplitRecipe(dataset="synthetic", source="synthetic", source_sha256=(), validation_fraction=0.1,
                         seed=0, code_sha256="")
    arrays = {name: synthetic_digits(size, seed) for seed, (name, size) in
              enumerate(zip(("train", "validation", "test"), sizes), start=1)}
    split_dir = recipe.split_dir(splits_root)
    split_dir.parent.mkdir(parents=True, exist_ok=True)
    write_split(recipe, arrays, split_dir)
    return check_split(split_dir / "manifest.json")


def train_and_evaluate(split, run_dir: Path, preset: str, seed: int, **overrides):
    """(TrainedModel, Evaluation) of `preset` trained and scored on `split`, files in `run_dir`."""
    from mnist_pipeline.core.models import training_config
    from mnist_pipeline.core.scoring import evaluate_model
    from mnist_pipeline.core.training import fit

    trained = fit(training_config(preset, seed, **overrides), split, run_dir, QUIET_LOG)
    return trained, evaluate_model(trained, split, run_dir)


def register(registry, run, split, *, threshold: float = 0.3, flow_run_id: str | None = None, attempt: int = 1):
    """Offer a (TrainedModel, Evaluation) to `registry` as a flow run would; returns the decision."""
    from mnist_pipeline.core.registry import Candidate

    trained, evaluation = run
    candidate = Candidate(trained, evaluation, split, threshold, {"data_source": "bundle"}, flow_run_id)
    return registry.register(candidate, attempt=attempt)


def bundle_copy(destination: Path) -> Path:
    """A copy of the bundled MNIST files to damage."""
    return Path(shutil.copytree(bundled_mnist_dir(), destination, ignore=shutil.ignore_patterns("*.py", "__pycache__")))


def flip_byte(path: Path, offset: int) -> None:
    """Flip the bits of one byte of `path` (negative offsets count from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# Running it as users do ----------------------------------------------------------------------------

def run_flow_script(*args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT,
                    timeout: float = 1200) -> subprocess.CompletedProcess:
    """`python flows/mnist_flow.py ARGS` in its own process."""
    return subprocess.run([sys.executable, str(FLOW_SCRIPT), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, timeout=timeout)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT,
            timeout: float = 1200) -> subprocess.CompletedProcess:
    """`mnist-pipeline ARGS`, the installed entry point, in its own process."""
    return subprocess.run([str(ENTRY_POINT), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def imported_packages(*args: str) -> set[str]:
    """The top-level packages that `python -X importtime ARGS` imports."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}


# Prefect's state, which settles after the flow run ends ---------------------------------------------

def wait_until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 60, interval: float = 0.5) -> T:
    """`read()` again and again until `done` holds for what it returns; that value (or, at the
    deadline, an AssertionError with the last one). Task-run states, logs and artifacts reach the
    Prefect server as events and in batches, after the flow run already shows its final state."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not settled after {timeout:.0f} s: {value!r}")
        time.sleep(interval)


def task_runs(client, flow_run_id) -> dict[str, list]:
    """{stage name: its task runs} of one flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    found: dict[str, list] = {}
    for run in runs:
        found.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return found


def settled_task_runs(client, flow_run_id, stages: tuple[str, ...] = STAGES, timeout: float = 60) -> dict[str, list]:
    """`task_runs` once every one of `stages` has a task run and every task run is in a final state."""
    def settled(runs: dict[str, list]) -> bool:
        return set(stages) <= set(runs) and all(
            run.state is not None and run.state.type.value in FINAL_TASK_STATES for group in runs.values() for run in group)

    return wait_until(lambda: task_runs(client, flow_run_id), settled, timeout)


def logs(client, flow_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    records = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(record.message for record in records)


def logs_containing(client, flow_run_id, *needles: str, timeout: float = 60) -> str:
    """The flow run's logs, once all of `needles` are in them."""
    return wait_until(lambda: logs(client, flow_run_id), lambda text: all(n in text for n in needles), timeout)


def artifact_types(client, flow_run_id) -> dict[str, str]:
    """{artifact key: type} of one flow run."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key: artifact.type for artifact in found}


def copy_run(run, destination: Path):
    """`run` (a TrainedModel, Evaluation pair) copied to the run folder `destination`: the same model
    from another run, which the registry takes as a new version."""
    from dataclasses import replace

    trained, evaluation = run
    source = Path(trained.model_path).parent
    shutil.copytree(source, destination)

    def moved(path: str) -> str:
        return str(destination / Path(path).relative_to(source))

    return (replace(trained, model_path=moved(trained.model_path), history_path=moved(trained.history_path)),
            replace(evaluation, metrics_path=moved(evaluation.metrics_path),
                    plot_paths=tuple(moved(path) for path in evaluation.plot_paths)))


# Facts of the genuine MNIST (data/mnist/README.md) ------------------------------------------------

TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def imported_modules(*args: str) -> set[str]:
    """The full names of the modules that `python -X importtime ARGS` imports (e.g. "mnist_pipeline.tasks")."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def assert_serves_as_keras(version_dir: Path, images: np.ndarray) -> None:
    """A registered version's SavedModel takes raw uint8 images [n, 28, 28] and predicts as its `.keras` model."""
    import tensorflow as tf

    from mnist_pipeline.core.models import load_model, predict_probabilities
    from mnist_pipeline.core.registry import SAVED_MODEL_DIR

    serving = tf.saved_model.load(str(version_dir / SAVED_MODEL_DIR)).signatures["serving_default"]
    [spec] = serving.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]

    served = serving(image=tf.constant(images))["output_0"].numpy()
    expected = predict_probabilities(load_model(version_dir / "model.keras"), images)
    assert served.shape == (len(images), 10)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert np.array_equal(served.argmax(1), expected.argmax(1))


# Pictures to classify --------------------------------------------------------------------------------

def hand_made_zero(centre: float = 14.0) -> np.ndarray:
    """A "0" as MNIST lays out its digits: white (255 at its brightest) on black, 28x28, 20 pixels
    tall, its centre of mass at (`centre`, `centre`)."""
    y, x = np.mgrid[0:28, 0:28] - centre
    ring = np.clip(1.0 - np.abs(np.hypot(x / 6.5, y / 10.0) - 0.8) / 0.22, 0, 1)
    return (255 * ring / ring.max()).round().astype(np.uint8)


def write_png(path: Path, image: np.ndarray, mode: str = "L") -> Path:
    """`image` (uint8 [28, 28]) saved as a PNG picture in colour mode `mode`."""
    from PIL import Image

    Image.fromarray(image).convert(mode).save(path)
    return path


def photographed(image: np.ndarray, path: Path, paper=(250, 248, 240)) -> Path:
    """`image` as if photographed: five times larger, RGB, off centre on a bigger page, as a JPEG."""
    from PIL import Image

    big = Image.fromarray(image).resize((140, 140), Image.BICUBIC).convert("RGB")
    page = Image.new("RGB", (260, 220), paper)
    page.paste(big, (70, 30))
    page.save(path, quality=90)
    return path


def checked_metrics(run, split) -> dict:
    """The run's metrics.json, after checking it agrees with itself, with the test labels, and with
    Keras' own evaluation of the model (accuracy to 1e-6, loss to 0.1%)."""
    import json

    import pytest

    from mnist_pipeline.core.models import load_model

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
