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
    labels = np.arange(count, dtype=np.uint8) % NUM_CLASSES
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
