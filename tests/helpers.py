"""What the tests share: data and models to test with, ways to run the pipeline as a user does, and
reads of Prefect's state that wait until it has settled."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from mnist_pipeline.core.data.mnist import IMAGE_SHAPE, NUM_CLASSES
from mnist_pipeline.core.storage.paths import bundled_mnist_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FLOW_SCRIPT = PROJECT_ROOT / "flows" / "mnist_flow.py"
ENTRY_POINT = Path(sys.executable).parent / "mnist-pipeline"
QUIET_LOG = logging.getLogger("tests")
STAGES = ("download-split", "preprocess", "train", "evaluate", "register")
FINAL_TASK_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# The registry's backends, for `pytest.mark.parametrize("registry_kind", BACKENDS, indirect=True)`:
# a folder, and a real S3-compatible server (slow tier: a server process, and uploads).
BACKENDS = ["folder", pytest.param("store", marks=pytest.mark.slow)]

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
    from mnist_pipeline.core.data.splits import SplitRecipe, check_split, write_split

    recipe = SplitRecipe(dataset="synthetic", source="synthetic", source_sha256=(), validation_fraction=0.1,
                         seed=0, code_sha256="")
    arrays = {name: synthetic_digits(size, seed) for seed, (name, size) in
              enumerate(zip(("train", "validation", "test"), sizes, strict=True), start=1)}
    split_dir = recipe.split_dir(splits_root)
    split_dir.parent.mkdir(parents=True, exist_ok=True)
    write_split(recipe, arrays, split_dir)
    return check_split(split_dir / "manifest.json")


def train_and_evaluate(split, run_dir: Path, preset: str, seed: int, **overrides):
    """(TrainedModel, Evaluation) of `preset` trained and scored on `split`, files in `run_dir`."""
    from mnist_pipeline.core.evaluation.scoring import evaluate_model
    from mnist_pipeline.core.modelling.models import training_config
    from mnist_pipeline.core.modelling.training import fit

    trained = fit(training_config(preset, seed, **overrides), split, run_dir, QUIET_LOG)
    return trained, evaluate_model(trained, split, run_dir)


def register(registry, run, split, *, threshold: float = 0.3, per_class_floor: float = 0.0,
             per_class_margin: float = 1.0, require_significant: bool = False, flow_run_id: str | None = None,
             attempt: int = 1):
    """Offer a (TrainedModel, Evaluation) to `registry` as a flow run would; returns the decision. The
    per-class criteria are off unless given: the tiny synthetic models reach only 50-90%."""
    from mnist_pipeline.core.evaluation.gate import GateSettings
    from mnist_pipeline.core.registry import Candidate

    trained, evaluation = run
    gate = GateSettings(threshold, per_class_floor, per_class_margin, require_significant, significance_alpha=0.05)
    candidate = Candidate(trained, evaluation, split, gate, {"data_source": "bundle"}, flow_run_id)
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
            run.state is not None and run.state.type.value in FINAL_TASK_STATES
            for group in runs.values() for run in group)

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

    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    found = client.read_artifacts(artifact_filter=by_run)
    return {artifact.key: artifact.type for artifact in found}


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


# The HTTP service (`mnist-pipeline serve`) ---------------------------------------------------------

def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (the OS picks it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def png_bytes(image: np.ndarray) -> bytes:
    """`image` (uint8 [h, w]) as the bytes of a grayscale PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of `width` x `height` black pixels that compresses to little (~100 KB for
    10,000 x 10,000: 100 MB once decoded, ~1 GB as float grey levels). Written row by row, so making
    it never holds the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\x00" * (width + 1)  # filter byte 0, then the row's pixels
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def bad_service_requests() -> list[tuple[str, str, dict, int, str]]:
    """Requests the service must refuse: (what, path, httpx request arguments, status, part of the message)."""
    digit = png_bytes(hand_made_zero())
    png = {"content-type": "image/png"}
    return [
        ("not an image", "/v1/predict", {"content": b"this is not a picture", "headers": png}, 422,
         "not a picture that can be read"),
        ("truncated PNG", "/v1/predict", {"content": digit[:len(digit) // 2], "headers": png}, 422, "truncated"),
        ("10000x10000 pixels", "/v1/predict", {"content": huge_png(10_000, 10_000), "headers": png}, 422,
         "10000 x 10000 pixels"),
        ("empty body", "/v1/predict", {"content": b"", "headers": png}, 400, "the request has no body"),
        ("not JSON", "/v1/predict", {"content": b"{images", "headers": {"content-type": "application/json"}}, 400,
         "not JSON"),
        ("no images key", "/v1/predict", {"json": {"pictures": []}}, 422, 'expected a JSON object {"images"'),
        ("wrong JSON shape", "/v1/predict", {"json": {"images": [[0] * 27] * 28}}, 422, "shape [28, 27]"),
        ("ragged JSON", "/v1/predict", {"json": {"images": [[0] * 28] * 27 + [[0] * 5]}}, 422,
         "not all the same shape"),
        ("values above 255", "/v1/predict", {"json": {"images": [[256] * 28] * 28}}, 422,
         "expected whole pixel values 0-255"),
        ("negative values", "/v1/predict", {"json": {"images": [[-1] * 28] * 28}}, 422,
         "expected whole pixel values 0-255"),
        ("text values", "/v1/predict", {"json": {"images": [["a"] * 28] * 28}}, 422, "expected pixel values 0-255"),
        ("wrong content type", "/v1/predict", {"content": b"7", "headers": {"content-type": "text/plain"}}, 415,
         "cannot classify a text/plain"),
        ("upload without a file field", "/v1/predict", {"files": {"picture": ("a.png", digit)}}, 422,
         "field named `file`"),
        ("label not 0-9", "/v1/corrections", {"files": {"file": ("a.png", digit)}, "data": {"label": "12"}}, 422,
         "label '12' is not a digit 0-9"),
        ("no label", "/v1/corrections", {"files": {"file": ("a.png", digit)}}, 422, "label '' is not a digit 0-9"),
        ("correction not an image", "/v1/corrections", {"files": {"file": ("a.png", b"GIF89")}, "data": {"label": "3"}},
         422, "not a picture that can be read"),
    ]


def service_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serving(artifacts: Path, *options: str, log: Path) -> Iterator[str]:
    """`mnist-pipeline serve` on `artifacts` in a process of its own, on a free port of 127.0.0.1,
    reading the production pointer every 0.2 s: its base URL, once /readyz answers 200. The process
    is stopped by its pid when the block ends; its output is in `log`."""
    port = free_port()
    command = [str(ENTRY_POINT), "serve", "--artifacts-dir", str(artifacts), "--port", str(port),
               "--poll-seconds", "0.2", *options]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        exited, _ = wait_until(lambda: (process.poll(), service_ready(url)),
                               lambda state: state[0] is not None or state[1], timeout=240)
        assert exited is None, f"the service exited with {exited}:\n{log.read_text()[-3000:]}"
        yield url
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process a test started (with `start_new_session=True`) by its id, its children too."""
    from devstack.local_server import stop_process_group

    stop_process_group(process, timeout)


def assert_same_answers(answer: dict, predicted: dict) -> None:
    """The service's answer carries the version, classes and probabilities of `predict --json --top-k 10`."""
    assert answer["version"] == predicted["model"]["version"]
    for mine, theirs in zip(answer["predictions"], predicted["predictions"], strict=True):
        probabilities = {top["class"]: top["probability"] for top in theirs["top"]}
        assert mine["class"] == theirs["top"][0]["class"]
        assert [top["class"] for top in mine["top"]] == [top["class"] for top in theirs["top"][:3]]
        np.testing.assert_allclose(mine["probabilities"], [probabilities[c] for c in range(10)], atol=2e-6)


# A Prefect server with the project's deployments and a worker ----------------------------------------

@contextmanager
def local_prefect(home: Path, prefect_file: Path | None = None) -> Iterator:
    """`LocalPrefect` on a free port with PREFECT_HOME `home`: server, work pool, the deployments of
    prefect.yaml (or `prefect_file`), a worker polling every 2 s. Stopped by process group when the
    block ends, and checked: nothing they started is left running."""
    from devstack.local_server import LocalPrefect

    local = LocalPrefect(free_port(), prefect_home=home, log_dir=home / "logs",
                         extra_env={"PREFECT_WORKER_QUERY_SECONDS": "2"})
    try:
        local.start_server()
        local.deploy(prefect_file)
        local.start_worker()
        yield local
    finally:
        groups = [process.pid for process in local.processes.values()]
        local.stop()
    for group in groups:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process group {group} of the Prefect server or worker is still running")


@contextmanager
def client_of(local) -> Iterator:
    """A synchronous Prefect client of `local`'s server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: local.api_url}), get_client(sync_client=True) as client:
        yield client


# A training set sabotaged for one class ---------------------------------------------------------------

def split_with_shuffled_labels(split, digit: int, splits_root: Path, seed: int = 0):
    """A copy of the checked `split` in which the train images of class `digit` carry random labels
    0-9 (validation and test unchanged), written as the pipeline writes a split under `splits_root`:
    a training set that a careless labeller spoiled for one class."""
    from mnist_pipeline.core.data.splits import SPLIT_NAMES, SplitRecipe, check_split, write_split

    arrays = {name: split.load(name) for name in SPLIT_NAMES}
    images, labels = arrays["train"]
    spoiled = labels == digit
    labels = labels.copy()
    labels[spoiled] = np.random.default_rng(seed).integers(0, NUM_CLASSES, int(spoiled.sum()), dtype=labels.dtype)
    arrays["train"] = (images, labels)
    recipe = SplitRecipe(dataset=f"class-{digit}-shuffled", source="test", source_sha256=(), validation_fraction=0.1,
                         seed=seed, code_sha256=split.data_sha256)
    split_dir = recipe.split_dir(splits_root)
    split_dir.parent.mkdir(parents=True, exist_ok=True)
    write_split(recipe, arrays, split_dir)
    return check_split(split_dir / "manifest.json")


# The team stack: PostgreSQL, moto, a Prefect server on PostgreSQL with auth, two workers -------------

@contextmanager
def postgres_reachable_folder(prefix: str = "mnist-team-") -> Iterator[Path]:
    """A new folder under /tmp that the `postgres` user can reach (pytest's own temporary folders are
    private to root, and PostgreSQL runs as `postgres`); removed when the block ends."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def team_stack(folder: Path, **options) -> Iterator:
    """`TeamStack` in `folder` (see `postgres_reachable_folder`), its workers polling the server every
    2 s; every process stopped by its id when the block ends, and checked: nothing left running."""
    from devstack.team.stack import TeamStack

    options.setdefault("echo", QUIET_LOG.info)
    options["extra_worker_env"] = {"PREFECT_WORKER_QUERY_SECONDS": "2", **options.get("extra_worker_env", {})}
    stack = TeamStack(folder, **options)
    stack.start()
    try:
        yield stack
    finally:
        survivors = stack.stop()
    assert not survivors, f"still running after the team stack stopped: {'; '.join(map(str, survivors))}"
