"""Deployments on a real Prefect server: schedules, a worker, retried stages, the cached split.

Starts `prefect server start` on 127.0.0.1 (free port, temporary PREFECT_HOME), deploys prefect.yaml
and runs a process worker, exactly as docs/prefect.md's "Run it on a Prefect server" section does. Each test
gives its runs an artifacts folder of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.local_server import NIGHTLY_CHECK, ON_DEMAND
from mnist_pipeline.core.registry import open_registry
from support.data import bundle_copy, flip_byte
from support.polling import wait_until
from support.prefect_state import STAGES, artifact_types, logs_containing, settled_task_runs, task_runs
from support.servers import client_of, local_prefect

pytestmark = pytest.mark.slow

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_ARTIFACTS = {
    "mnist-training-report": "markdown",
    "mnist-per-class-accuracy": "table",
    "mnist-training-progress": "progress",
}
RETRY_WAITS = {
    "download-split": (2, 0.5),
    "preprocess": (1, 0),
    "train": (2, 0),
    "evaluate": (2, 0),
    "register": (1, 0),
}  # stage: (seconds before its first retry, jitter share)


@pytest.fixture(scope="module")
def server(tmp_path_factory, prefect_database):
    with local_prefect(tmp_path_factory.mktemp("server-prefect-home"), prefect_database) as local:
        yield local


@pytest.fixture(scope="module")
def client(server):
    with client_of(server) as client:
        yield client


def run_and_wait(client, parameters: dict, env: dict | None = None, timeout: float = 900):
    """Run the on-demand deployment on the worker; the flow run once it is in a final state."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(ON_DEMAND, parameters=parameters, timeout=0, job_variables={"env": env} if env else None)
    return wait_until(
        lambda: client.read_flow_run(flow_run.id),
        lambda run: run.state is not None and run.state.type.value in FINAL_STATES,
        timeout=timeout,
        interval=2,
    )


def split_dir(artifacts: Path) -> Path:
    [split] = [path for path in (artifacts / "splits").iterdir() if not path.name.startswith(".")]
    return split


def retry_waits(client, task_run) -> list[float]:
    """Seconds between each AwaitingRetry state of a task run and the time its retry was scheduled for."""
    states = client.read_task_run_states(task_run.id)
    return [
        (state.state_details.scheduled_time - state.timestamp).total_seconds()
        for state in states
        if state.name == "AwaitingRetry"
    ]


def test_scheduled_deployment_has_upcoming_runs(client):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState

    deployment = client.read_deployment_by_name(NIGHTLY_CHECK)
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
    scheduled = wait_until(
        lambda: client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type={"any_": ["SCHEDULED"]})),
        ),
        bool,
        timeout=120,
        interval=2,
    )
    assert all(run.expected_start_time.hour == 2 and run.expected_start_time.minute == 0 for run in scheduled)
    assert client.read_deployment_by_name(ON_DEMAND).schedules == []


def test_every_stage_failing_once_still_completes_with_one_version(client, tmp_path):
    artifacts = tmp_path / "artifacts"
    flow_run = run_and_wait(
        client,
        {"preset": "mlp", "epochs": 3, "artifacts_dir": str(artifacts)},
        env={"MNIST_TEST_FAIL_ONCE": "download,preprocess,train@epoch2,evaluate,register"},
    )
    assert flow_run.state.type.value == "COMPLETED", flow_run.state
    settled_task_runs(client, flow_run.id)
    runs = wait_until(
        lambda: task_runs(client, flow_run.id),
        lambda found: all(run.run_count >= 2 for group in found.values() for run in group),
    )
    assert {name: [(run.state.name, run.run_count) for run in group] for name, group in runs.items()} == {
        name: [("Completed", 2)] for name in STAGES
    }
    for name, (seconds, jitter) in RETRY_WAITS.items():  # each stage waited as its retry policy says
        [waited] = wait_until(lambda run=runs[name][0]: retry_waits(client, run), bool)
        assert seconds * (1 - jitter) - 0.5 <= waited <= seconds * (1 + jitter) + 0.5, (name, waited)

    text = logs_containing(
        client,
        flow_run.id,
        "injected fault: first attempt of stage train at the end of epoch 2",
        "resuming training from the checkpoint of epoch 2 of 3",
        "trained mlp: 3 epochs",
    )
    for epoch in (1, 2, 3):  # the retry trained only the epoch that was missing
        assert text.count(f"epoch {epoch}/3:") == 1, (epoch, text)
    registry = open_registry(artifacts / "registry")
    assert registry.versions() == ["v0001"]
    assert len(registry.decisions()) == 1
    assert (
        wait_until(lambda: artifact_types(client, flow_run.id), lambda found: set(RUN_ARTIFACTS) <= set(found))
        == RUN_ARTIFACTS
    )


def test_bad_checksum_fails_after_one_attempt(client, tmp_path):
    bundle = bundle_copy(tmp_path / "bundle")
    flip_byte(bundle / "t10k-labels-idx1-ubyte.gz", -10)
    artifacts = tmp_path / "artifacts"

    flow_run = run_and_wait(
        client, {"preset": "seed-mlp", "epochs": 1, "bundle_dir": str(bundle), "artifacts_dir": str(artifacts)}
    )
    assert flow_run.state.type.value == "FAILED", flow_run.state
    runs = settled_task_runs(client, flow_run.id, ("download-split",))
    assert [(run.state.type.value, run.run_count) for run in runs["download-split"]] == [("FAILED", 1)]
    assert set(runs) == {"download-split"}, "no stage after the split may run"
    logs_containing(client, flow_run.id, "has SHA-256")
    assert not (artifacts / "registry").exists()


def test_rerun_after_a_crash_reuses_the_cached_split(client, tmp_path):
    artifacts = tmp_path / "artifacts"
    parameters = {"preset": "seed-mlp", "epochs": 1, "artifacts_dir": str(artifacts)}
    crashed = run_and_wait(client, parameters, env={"MNIST_TEST_CRASH_AT": "train@epoch1"})  # killed after the split
    assert crashed.state.type.value == "CRASHED", crashed.state
    split_inode = split_dir(artifacts).stat().st_ino

    flow_run = run_and_wait(client, parameters)
    assert flow_run.state.type.value == "COMPLETED", flow_run.state
    runs = settled_task_runs(client, flow_run.id)
    assert [run.state.name for run in runs["download-split"]] == ["Cached"]
    assert split_dir(artifacts).stat().st_ino == split_inode
    assert open_registry(artifacts / "registry").versions() == ["v0001"]  # the crashed run registered nothing
    assert (
        wait_until(lambda: artifact_types(client, flow_run.id), lambda found: set(RUN_ARTIFACTS) <= set(found))
        == RUN_ARTIFACTS
    )
