"""Deployments on a real Prefect server: schedules, a worker, retried stages, the cached split.

Starts `prefect server start` on 127.0.0.1 (free port, temporary PREFECT_HOME), deploys prefect.yaml
and runs a process worker, exactly as README's "Run it on a Prefect server" section does.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from flows.local_server import NIGHTLY, ON_DEMAND, LocalPrefect
from tasks.paths import BUNDLED_MNIST_DIR
from tasks.registry import Registry

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_ARTIFACTS = {"mnist-training-report", "mnist-per-class-accuracy", "mnist-training-progress"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("server-prefect-home")
    local = LocalPrefect(free_port(), prefect_home=home, log_dir=home / "logs",
                         extra_env={"PREFECT_WORKER_QUERY_SECONDS": "2"})
    try:
        local.start_server()
        local.deploy()
        local.start_worker()
        yield local
    finally:
        groups = [process.pid for process in local.processes.values()]
        local.stop()
    for group in groups:  # nothing left behind: neither the processes nor anything they started
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


@pytest.fixture(scope="module")
def client(server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            yield client


def run_and_wait(client, parameters: dict, env: dict | None = None, timeout: float = 600):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(ON_DEMAND, parameters=parameters, timeout=0,
                              job_variables={"env": env} if env else None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flow_run = client.read_flow_run(flow_run.id)
        if flow_run.state and flow_run.state.type.value in FINAL_STATES:
            return flow_run
        time.sleep(2)
    raise TimeoutError(f"flow run {flow_run.id} did not finish within {timeout} s")


def task_runs(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run for run in runs}


def logs(client, flow_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    records = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(record.message for record in records)


def artifact_keys(client, flow_run_id) -> set[str]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key for artifact in found}


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-artifacts")


def test_scheduled_deployment_has_upcoming_runs(client):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState

    deployment = client.read_deployment_by_name(NIGHTLY)
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        scheduled = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type={"any_": ["SCHEDULED"]})),
        )
        if scheduled:
            break
        time.sleep(2)
    assert scheduled, "the scheduler created no upcoming run of the nightly deployment"
    assert all(run.expected_start_time.hour == 2 and run.expected_start_time.minute == 0 for run in scheduled)
    assert client.read_deployment_by_name(ON_DEMAND).schedules == []


def test_every_stage_failing_once_still_completes_with_one_version(client, artifacts_dir):
    flow_run = run_and_wait(
        client, {"preset": "mlp", "epochs": 3, "artifacts_dir": str(artifacts_dir)},
        env={"MNIST_FAIL_ONCE": "download,preprocess,train@epoch2,evaluate,register"},
    )
    assert flow_run.state.type.value == "COMPLETED", flow_run.state
    runs = task_runs(client, flow_run.id)
    assert {name: run.run_count for name, run in runs.items()} == {
        name: 2 for name in ("download-split", "preprocess", "train", "evaluate", "register")
    }
    text = logs(client, flow_run.id)
    assert "injected fault: first attempt of stage train at the end of epoch 2" in text
    assert "resuming training from the checkpoint of epoch 2 of 3" in text
    assert "epoch 3/3" in text and "epoch 1/3" in text
    registry = Registry(artifacts_dir / "registry")
    assert registry.versions() == ["v0001"]
    assert len(registry.decisions()) == 1
    assert artifact_keys(client, flow_run.id) == RUN_ARTIFACTS


def test_bad_checksum_fails_after_one_attempt(client, artifacts_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLED_MNIST_DIR, bundle)
    labels = bundle / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(labels.read_bytes())
    data[-10] ^= 0xFF
    labels.write_bytes(bytes(data))
    before = Registry(artifacts_dir / "registry").versions()

    flow_run = run_and_wait(client, {"preset": "mlp", "epochs": 1, "bundle_dir": str(bundle),
                                     "artifacts_dir": str(artifacts_dir)})
    assert flow_run.state.type.value == "FAILED"
    runs = task_runs(client, flow_run.id)
    assert runs["download-split"].run_count == 1 and runs["download-split"].state.type.value == "FAILED"
    assert "train" not in runs
    assert "has SHA-256" in logs(client, flow_run.id)
    assert Registry(artifacts_dir / "registry").versions() == before


def test_rerun_after_a_failure_reuses_the_cached_split(client, artifacts_dir):
    flow_run = run_and_wait(client, {"preset": "mlp", "epochs": 1, "artifacts_dir": str(artifacts_dir)})
    assert flow_run.state.type.value == "COMPLETED", flow_run.state
    runs = task_runs(client, flow_run.id)
    assert runs["download-split"].state.name == "Cached"
    assert Registry(artifacts_dir / "registry").versions() == ["v0001", "v0002"]
    assert artifact_keys(client, flow_run.id) == RUN_ARTIFACTS
