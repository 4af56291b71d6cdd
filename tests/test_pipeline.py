"""The whole flow on the full MNIST, as a user runs it: promotion, cache, gate, exit codes, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from tasks.errors import ChecksumMismatchError
from tasks.paths import BUNDLED_MNIST_DIR
from tasks.registry import Registry

FLOW_SCRIPT = PROJECT_ROOT / "flows" / "mnist_flow.py"

# Reads the production model and the canonical test IDX file with nothing of the pipeline's code.
RECOMPUTE_ACCURACY = """
import gzip, json, sys
from pathlib import Path
import numpy as np, keras
registry, bundle = Path(sys.argv[1]), Path(sys.argv[2])
version = json.loads((registry / "production.json").read_text())["version"]
model = keras.models.load_model(registry / "versions" / version / "model.keras", safe_mode=True)
images = np.frombuffer(gzip.open(bundle / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
labels = np.frombuffer(gzip.open(bundle / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
predicted = model.predict(images, batch_size=1000, verbose=0).argmax(axis=1)
print(json.dumps({"version": version, "correct": int((predicted == labels).sum()), "total": len(labels)}))
"""


def run_flow(**parameters):
    from flows.mnist_flow import mnist_pipeline

    state = mnist_pipeline(**parameters, return_state=True)
    return state, state.result(raise_on_failure=False)


def task_states(flow_run_id) -> dict[str, list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    states: dict[str, list[str]] = {}
    for run in runs:
        states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name)
    return states


def artifacts_of(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact.type for artifact in found}


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline-artifacts")


@pytest.fixture(scope="module")
def first_run(prefect_server, artifacts_dir):
    state, summary = run_flow(preset="mlp", artifacts_dir=str(artifacts_dir))
    assert state.is_completed(), state
    return state, summary


def test_first_run_promotes_an_mlp_above_97_percent(first_run, artifacts_dir):
    state, summary = first_run
    assert summary["promoted"] is True and summary["version"] == "v0001"
    assert summary["accuracy"] >= 0.97
    low, high = summary["accuracy_interval_95"]
    assert low < summary["accuracy"] < high
    registry = Registry(artifacts_dir / "registry")
    assert registry.production() == "v0001"
    [decision] = registry.decisions()
    assert decision["verdict"] == "promoted" and decision["flow_run_id"] == str(state.state_details.flow_run_id)
    run_dir = Path(summary["run_dir"])
    for name in ("model.keras", "metrics.json", "history.json", "training_curves.png", "confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    assert task_states(state.state_details.flow_run_id) == {
        name: ["Completed"] for name in ("download-split", "preprocess", "train", "evaluate", "register")
    }


def test_report_and_table_artifacts_are_published(first_run):
    state, summary = first_run
    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert artifacts == {"mnist-training-report": "markdown", "mnist-per-class-accuracy": "table",
                         "mnist-training-progress": "progress"}


def test_recorded_accuracy_holds_in_a_fresh_process_on_raw_test_images(first_run, artifacts_dir):
    _, summary = first_run
    output = subprocess.run(
        [sys.executable, "-c", RECOMPUTE_ACCURACY, str(artifacts_dir / "registry"), str(BUNDLED_MNIST_DIR)],
        capture_output=True, text=True, check=True,
    ).stdout
    recomputed = json.loads(output.strip().splitlines()[-1])
    assert recomputed["version"] == summary["version"]
    assert recomputed["correct"] / recomputed["total"] == summary["accuracy"]


def test_second_run_reuses_the_split_and_a_high_threshold_rejects(first_run, artifacts_dir):
    state, summary = run_flow(preset="mlp", epochs=1, threshold=0.999, artifacts_dir=str(artifacts_dir))
    assert state.is_completed()  # a rejection is an outcome, not a failure
    assert task_states(state.state_details.flow_run_id)["download-split"] == ["Cached"]
    assert summary["promoted"] is False and summary["production"] == "v0001"
    registry = Registry(artifacts_dir / "registry")
    assert registry.production() == "v0001"
    last = registry.decisions()[-1]
    assert last["verdict"] == "rejected" and "below the threshold 0.9990" in last["reason"]
    assert registry.read_version(summary["version"])["status"] == "rejected"


def test_weaker_challenger_above_threshold_is_rejected(first_run, artifacts_dir):
    _, champion = first_run
    state, summary = run_flow(preset="seed-mlp", epochs=1, threshold=0.9, artifacts_dir=str(artifacts_dir))
    assert state.is_completed()
    assert 0.9 <= summary["accuracy"] < champion["accuracy"]
    assert summary["promoted"] is False and "worse than production v0001" in summary["reason"]
    assert Registry(artifacts_dir / "registry").production() == "v0001"


def test_damaged_split_on_disk_is_rebuilt_not_served(first_run, artifacts_dir):
    [split_dir] = (path for path in (artifacts_dir / "splits").iterdir() if not path.name.startswith("."))
    (split_dir / "validation.npz").write_bytes(b"truncated")
    state, _ = run_flow(preset="mlp", epochs=1, threshold=0.999, artifacts_dir=str(artifacts_dir))
    assert state.is_completed()
    assert task_states(state.state_details.flow_run_id)["download-split"] == ["Completed"]
    from tasks.split import is_intact

    assert is_intact(split_dir)


def test_flipped_byte_in_bundle_fails_before_training_and_registers_nothing(first_run, artifacts_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLED_MNIST_DIR, bundle)
    images = bundle / "train-images-idx3-ubyte.gz"
    data = bytearray(images.read_bytes())
    data[len(data) // 2] ^= 0x10
    images.write_bytes(bytes(data))
    registry = Registry(artifacts_dir / "registry")
    before = (registry.versions(), registry.production(), registry.decision_log.read_text())

    state, error = run_flow(preset="mlp", bundle_dir=str(bundle), artifacts_dir=str(artifacts_dir))
    assert state.is_failed()
    assert isinstance(error, ChecksumMismatchError)
    assert str(images) in str(error) and "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in str(error)
    assert "train" not in task_states(state.state_details.flow_run_id)
    assert (registry.versions(), registry.production(), registry.decision_log.read_text()) == before


def _cli(*args, cwd=PROJECT_ROOT):
    return subprocess.run([sys.executable, str(FLOW_SCRIPT), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_exit_code_3_when_rejected_with_fail_if_not_promoted(first_run, artifacts_dir):
    result = _cli("--preset", "mlp", "--epochs", "1", "--threshold", "0.999", "--fail-if-not-promoted",
                  "--artifacts-dir", str(artifacts_dir))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "promoted      : no: test accuracy" in result.stdout
    assert "production    : v0001" in result.stdout
    assert "95% CI" in result.stdout
