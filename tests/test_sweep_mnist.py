"""Real sweeps: four 1-epoch mlp candidates on real MNIST, one of them made to fail, on a local cluster
of two worker processes and on a separately started `dask scheduler` + `dask worker` pair.

Each sweep runs once (module fixtures) as a user runs it (`mnist-pipeline sweep`), against the
session's Prefect server, and serves several tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.support.faults import FAIL_TRAINING_ENV
from support.commands import run_cli
from support.polling import wait_until
from support.servers import free_port, stop_process

pytestmark = pytest.mark.slow

SWEEP = ("sweep", "--preset", "mlp", "--learning-rate", "0.002", "0.004", "--batch-size", "256", "512", "--epochs", "1")
FAILING = "c02"  # MNIST_TEST_FAIL_TRAINING_IN makes every attempt of this candidate's training fail
CANDIDATES = ["c01", "c02", "c03", "c04"]


def run_sweep(artifacts: Path, prefect_api_url: str, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`mnist-pipeline sweep` with the fault on `FAILING`; (the finished process, its summary JSON)."""
    summary_json = artifacts.parent / "summary.json"
    result = run_cli(
        *SWEEP,
        "--artifacts-dir",
        str(artifacts),
        "--summary-json",
        str(summary_json),
        *options,
        env={"PREFECT_API_URL": prefect_api_url, FAIL_TRAINING_ENV: f"-{FAILING}"},
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return result, json.loads(summary_json.read_text())


@pytest.fixture(scope="module")
def local_sweep(prefect_api_url, tmp_path_factory):
    """(artifacts folder, CLI result, summary) of the sweep on a local cluster of 2 worker processes."""
    artifacts = tmp_path_factory.mktemp("local-sweep") / "artifacts"
    return artifacts, *run_sweep(artifacts, prefect_api_url, "--max-parallel", "2")


def scheduler_workers(address: str) -> int:
    """How many workers the Dask scheduler at `address` has (0 while it does not answer)."""
    from distributed import Client

    try:
        with Client(address, timeout="5s", set_as_default=False) as client:
            return len(client.scheduler_info()["workers"])
    except (OSError, TimeoutError):
        return 0


@pytest.fixture(scope="module")
def dask_cluster(prefect_api_url, tmp_path_factory):
    """(address, worker log) of a `dask scheduler` and a `dask worker --nworkers 2 --nthreads 1`, started
    as their own processes on free ports, as a user's existing cluster; stopped by their pids."""
    logs = tmp_path_factory.mktemp("dask-cluster")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api_url,
        FAIL_TRAINING_ENV: f"-{FAILING}",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
    }
    dask = str(Path(sys.executable).parent / "dask")
    commands = {
        "scheduler": [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        "worker": [
            dask,
            "worker",
            address,
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--memory-limit",
            "4GiB",
        ],
    }
    processes = []
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=logs, start_new_session=True
                    )
                )
        wait_until(lambda: scheduler_workers(address), lambda workers: workers == 2, timeout=240, interval=1)
        yield address, logs / "worker.log"
    finally:
        for process in reversed(processes):
            stop_process(process)


@pytest.fixture(scope="module")
def cluster_sweep(dask_cluster, prefect_api_url, tmp_path_factory):
    """(artifacts folder, CLI result, summary, worker log) of the same sweep on the existing cluster."""
    address, worker_log = dask_cluster
    artifacts = tmp_path_factory.mktemp("cluster-sweep") / "artifacts"
    return artifacts, *run_sweep(artifacts, prefect_api_url, "--dask-address", address), worker_log


def check_candidates(summary: dict) -> None:
    """Every candidate recorded; the failing one failed, the others trained one epoch and saved a model."""
    records = {record["candidate"]: record for record in summary["candidates"]}
    assert list(records) == CANDIDATES
    assert records[FAILING]["status"] == "failed" and "injected fault" in records[FAILING]["error"]
    assert records[FAILING]["validation_accuracy"] is None
    for name in set(CANDIDATES) - {FAILING}:
        record = records[name]
        assert record["status"] == "completed" and record["epochs_run"] == 1 and record["train_seconds"] > 0
        assert 0.5 < record["validation_accuracy"] <= 1, record
        assert (Path(record["run_dir"]) / "model.keras").is_file()
    grid = [(r["learning_rate"], r["batch_size"], r["epochs"]) for r in summary["candidates"]]
    assert grid == [(0.002, 256, 1), (0.002, 512, 1), (0.004, 256, 1), (0.004, 512, 1)]


def check_selection(summary: dict) -> None:
    """The selected candidate has the best validation accuracy, as its training history recorded it;
    only it was evaluated on the test split."""
    completed = [r for r in summary["candidates"] if r["status"] == "completed"]
    for record in completed:
        history = json.loads((Path(record["run_dir"]) / "history.json").read_text())
        assert record["validation_accuracy"] == history["val_accuracy"][0]
    best = max(completed, key=lambda r: (r["validation_accuracy"], -r["train_seconds"]))
    assert summary["selected"] == best["candidate"]
    evaluated = [r["candidate"] for r in summary["candidates"] if (Path(r["run_dir"]) / "metrics.json").exists()]
    assert evaluated == [summary["selected"]]


def check_registered_through_the_gate(artifacts: Path, summary: dict) -> None:
    """Only the selected candidate became a registry version, on the gate's decision about its test evaluation."""
    registry = open_registry(artifacts / "registry")
    assert registry.versions() == ["v0001"] == [summary["run"]["version"]]
    params = registry.read_json("v0001", "params.json")
    selected = next(r for r in summary["candidates"] if r["candidate"] == summary["selected"])
    assert params["candidate"] == summary["selected"] and params["sweep"] == Path(summary["sweep_dir"]).name
    assert params["data_source"] == "bundle" and params["split_recipe_key"]  # as a single run records them
    assert (params["training"]["learning_rate"], params["training"]["batch_size"]) == (
        selected["learning_rate"],
        selected["batch_size"],
    )
    [decision] = registry.decisions()
    metrics = json.loads((Path(selected["run_dir"]) / "metrics.json").read_text())
    assert decision.candidate == "v0001" and decision.threshold == 0.97
    assert decision.candidate_accuracy == metrics["accuracy"] == summary["run"]["accuracy"]
    assert decision.promoted == summary["run"]["promoted"] and decision.reason == summary["run"]["reason"]
    if decision.candidate_accuracy < decision.threshold:  # whatever else the gate checks, this it refuses
        assert not decision.promoted
    assert registry.production() == ("v0001" if decision.promoted else None)


def test_every_candidate_is_recorded_and_a_failing_one_does_not_fail_the_sweep(local_sweep):
    artifacts, result, summary = local_sweep
    check_candidates(summary)
    assert json.loads((Path(summary["sweep_dir"]) / "sweep.json").read_text()) == {
        "selected": summary["selected"],
        "candidates": summary["candidates"],
    }
    assert f"| {summary['selected']} (selected) |" in result.stdout
    assert "| failed |" in result.stdout


def test_selection_is_the_best_recorded_validation_accuracy(local_sweep):
    check_selection(local_sweep[2])


def test_only_the_selected_candidate_is_registered_through_the_gate(local_sweep):
    artifacts, _, summary = local_sweep
    check_registered_through_the_gate(artifacts, summary)


def test_sweep_report_artifact_shows_every_candidate_and_the_plot_inline(local_sweep, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from mnist_pipeline.flows.sweep_flow import SWEEP_REPORT_KEY

    _, _, summary = local_sweep

    def reports() -> list[str]:
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SWEEP_REPORT_KEY]))
            )
        return [artifact.data for artifact in found if summary["sweep_dir"] in artifact.data]

    [report] = wait_until(reports, lambda found: len(found) == 1)
    for name in CANDIDATES:
        assert f"| {name}" in report
    assert f"| {summary['selected']} (selected) |" in report
    assert "![validation accuracy per candidate](data:image/png;base64," in report


def test_the_same_sweep_runs_on_an_existing_dask_cluster(cluster_sweep):
    artifacts, _, summary, worker_log = cluster_sweep
    check_candidates(summary)
    check_selection(summary)
    check_registered_through_the_gate(artifacts, summary)
    # the trainings ran in the cluster's worker processes (their Prefect task-run logs are in its log)
    assert worker_log.read_text().count("trained mlp: 1 epochs") == len(CANDIDATES) - 1
