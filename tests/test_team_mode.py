"""Team mode end to end, on this machine: the pipeline on a real Prefect server on PostgreSQL with an
auth string, a real S3-compatible store (moto's server) and two workers, each in a clone of its own
with a mirror of the store of its own (two "machines"); one training at a time across both.

The tests share one stack, and each starts the runs it asserts on (seeds of its own), so none depends
on what another left: (a) a split built on one machine is `Cached` on the other; (b, e) two runs on the
two machines at once register two versions, one decision each, the registry stays consistent, and
their trainings never overlap; (f) a bad store fails before any training; (g) no secret in what the
server, the store or `registry show` hand out; (d) a worker killed mid-training: its run is marked
`Crashed`, the registry is consistent, and a new run completes. The compare-and-swap retry itself (c)
is forced in tests/test_registry_store.py. Every process is stopped by its id.

Dead workers are found sooner than with `team up` (DEAD_AFTER_SECONDS, 90 s): a run whose heartbeats
(every 30 s, Prefect's minimum) stop for 60 s is marked `Crashed`.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime

import pytest

from devstack.team.processes import ProcessId, descendants
from devstack.team.stack import TEAM_ON_DEMAND, TeamStack
from support.commands import run_cli
from support.polling import wait_until
from support.servers import free_port, postgres_reachable_folder, team_stack

pytestmark = [pytest.mark.slow, pytest.mark.needs_postgres]

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
QUICK = {"preset": "seed-mlp", "epochs": 2}  # a real MNIST training of a few seconds
DEAD_AFTER_SECONDS = 60  # a missed heartbeat (every 30 s) and 30 s to spare for a busy machine


@pytest.fixture(scope="module")
def stack():
    with (
        postgres_reachable_folder() as root,
        team_stack(root / "stack", trainings=1, worker_limit=2, dead_after_seconds=DEAD_AFTER_SECONDS) as running,
    ):
        yield running


@pytest.fixture(scope="module")
def first_run(stack) -> dict:
    """A finished run on machine 1 (seed 11, which no other run here uses: its split is new)."""
    run = finished(stack, start_run(stack, 1, seed=11, **QUICK))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return run


@pytest.fixture
def registry(stack, monkeypatch):
    """The registry in the stack's store, opened as a client machine opens it."""
    from mnist_pipeline.core.registry import open_registry
    from mnist_pipeline.core.storage.paths import ArtifactPaths

    for name, value in client_env(stack).items():
        monkeypatch.setenv(name, value)
    paths = ArtifactPaths.resolve(None)
    return open_registry(paths.ref(paths.registry))


def client_env(stack: TeamStack, **changes: str) -> dict[str, str]:
    """A user's environment on a third machine: the stack's client settings, nothing of ours."""
    ours = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "AWS_", "MNIST_"))}
    return {**ours, **stack.client_env(), **changes}


def start_run(stack: TeamStack, machine: int, **parameters) -> str:
    """A run of the team deployment on machine `machine` (its worker's own queue); its id."""
    flow, name = TEAM_ON_DEMAND.split("/")
    deployment = stack.api("GET", f"/deployments/name/{flow}/{name}").json()["id"]
    response = stack.api(
        "POST",
        f"/deployments/{deployment}/create_flow_run",
        json={"parameters": parameters, "work_queue_name": stack.machines[machine - 1].work_queue},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def flow_run(stack: TeamStack, run_id: str) -> dict:
    return stack.api("GET", f"/flow_runs/{run_id}").json()


def finished(stack: TeamStack, run_id: str, timeout: float = 300) -> dict:
    return wait_until(lambda: flow_run(stack, run_id), lambda run: run["state"]["type"] in FINAL, timeout, 1)


def stage_runs(stack: TeamStack, run_id: str) -> dict[str, dict]:
    """{stage name: its task run} of one flow run (one each: no mapped stages in this flow)."""
    response = stack.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}})
    return {run["name"].rsplit("-", 1)[0]: run for run in response.json()}


def settled_stages(stack: TeamStack, run_id: str) -> dict[str, dict]:
    stages = ("download-split", "preprocess", "train", "evaluate", "register")
    return wait_until(
        lambda: stage_runs(stack, run_id),
        lambda runs: all(runs.get(stage, {}).get("state", {}).get("type") in FINAL for stage in stages),
        timeout=60,
    )


def interval(run: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"])


def kill_machine(worker) -> None:
    """What a machine that dies does to its processes: the worker and the flow runs it started (in
    sessions of their own) all end at once, by SIGKILL, with no chance to tell the server."""
    processes = [ProcessId.of(worker.pid), *descendants(worker.pid)]
    for process in processes:
        if process is not None and process.alive():
            os.kill(process.pid, signal.SIGKILL)
    worker.wait(10)
    wait_until(
        lambda: [process for process in processes if process is not None and process.alive()],
        lambda alive: not alive,
        timeout=10,
    )


def registry_check(stack: TeamStack) -> str:
    result = run_cli("registry", "check", env=client_env(stack))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def mirrored_splits(stack: TeamStack, machine: int) -> set[str]:
    """The splits in machine `machine`'s mirror of the store (their manifests' paths in it)."""
    mirror = stack.machines[machine - 1].folder / "cache"
    return {str(path.relative_to(mirror)) for path in mirror.glob("s3/*/*/splits/*/manifest.json")}


def test_a_split_built_on_one_machine_is_cached_on_the_other(stack, first_run):
    assert settled_stages(stack, first_run["id"])["download-split"]["state"]["name"] == "Completed"  # built there
    seen_on_machine_2 = mirrored_splits(stack, 2)

    second = finished(stack, start_run(stack, 2, seed=11, **QUICK))
    assert second["state"]["type"] == "COMPLETED" and second["state"]["name"] == "Unchanged", second["state"]
    stages = settled_stages(stack, second["id"])
    assert {stage: stages[stage]["state"]["name"] for stage in ("download-split", "train", "evaluate")} == {
        "download-split": "Cached",
        "train": "Cached",
        "evaluate": "Cached",
    }
    fetched = mirrored_splits(stack, 2) - seen_on_machine_2
    assert len(fetched) == 1, fetched  # machine 2 had not seen the split: it downloaded it from the store to check it


def test_two_machines_register_at_once_one_decision_each_and_trainings_never_overlap(stack, registry):
    before = registry.versions()
    runs = [start_run(stack, machine, seed=20 + machine, **QUICK) for machine in (1, 2)]
    ended = [finished(stack, run_id) for run_id in runs]
    assert all(run["state"]["type"] == "COMPLETED" for run in ended), [run["state"] for run in ended]
    starts, ends = zip(*(interval(run) for run in ended), strict=True)
    assert max(starts) < min(ends), "the two runs did not run at once: nothing was tested"

    trainings = sorted(interval(settled_stages(stack, run_id)["train"]) for run_id in runs)
    assert trainings[0][1] <= trainings[1][0], f"two trainings at once with a limit of 1: {trainings}"

    after = registry.versions()
    new = after[len(before) :]
    assert after[: len(before)] == before and len(new) == 2, (before, after)
    registered = [record.candidate for record in registry.decisions() if record.action == "register"]
    assert sorted(registered) == after  # one decision for each version, none lost, none twice
    assert registry.check() == []
    versions = run_cli("registry", "list", env=client_env(stack))
    assert versions.returncode == 0 and all(version in versions.stdout for version in new), versions.stdout
    assert "registry is consistent" in registry_check(stack)


@pytest.mark.parametrize(
    "store_env, expected",
    [
        (
            {"MNIST_ARTIFACTS_DIR": "s3://no-such-bucket/artifacts"},
            "s3://no-such-bucket/artifacts.*the bucket must exist",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}, "cannot be reached.*AWS_ENDPOINT_URL"),
    ],
)
def test_a_bad_store_fails_before_any_training(stack, store_env, expected):
    import re

    env = client_env(stack, **{name: value.format(port=free_port()) for name, value in store_env.items()})
    result = run_cli("run", "--preset", "seed-mlp", "--epochs", "1", env=env)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stdout[-2000:] + result.stderr[-2000:]
    assert "Task run 'train" not in result.stdout + result.stderr


def test_no_secret_in_logs_artifacts_parameters_blocks_or_registry_show(stack, first_run, registry):
    shown = run_cli("registry", "show", registry.versions()[0], env=client_env(stack))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    texts = {"registry show": shown.stdout}
    for what, path, body in [
        ("logs", "/logs/filter", {}),
        ("artifacts", "/artifacts/filter", {}),
        ("flow runs", "/flow_runs/filter", {}),
        ("task runs", "/task_runs/filter", {}),
        ("blocks", "/block_documents/filter", {"include_secrets": False}),
        ("deployments", "/deployments/filter", {}),
        ("variables", "/variables/filter", {}),
    ]:
        response = stack.api("POST", path, json={**body, "limit": 200} if what != "blocks" else body)
        assert response.status_code == 200, (what, response.text)
        texts[what] = response.text
    assert "trained seed-mlp" in texts["logs"] and "mnist-training-report" in texts["artifacts"]  # real content read
    assert f"{stack.store_url}/registry/versions/{registry.versions()[0]}/model.keras" in texts["artifacts"]  # files
    for name, secret in stack.secrets.items():
        assert not [what for what, text in texts.items() if secret in text], f"{name} appears"


def test_a_sweep_from_a_client_machine_uses_the_store(stack):
    sweep = ["sweep", "--preset", "seed-mlp", "--epochs", "1", "--max-parallel", "2"]
    sweep += ["--learning-rate", "0.001", "0.002"]
    result = run_cli(*sweep, env=client_env(stack))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"sweep files   : {stack.store_url}/runs/" in result.stdout
    assert "registry is consistent" in registry_check(stack)


def test_a_worker_killed_mid_training_leaves_a_crashed_run_and_a_consistent_registry(stack):
    run_id = start_run(stack, 1, preset="mlp", epochs=30, seed=31)
    wait_until(
        lambda: stage_runs(stack, run_id).get("train", {}).get("state", {}).get("type"),
        lambda state: state == "RUNNING",
        timeout=180,
        interval=0.5,
    )
    kill_machine(stack.machines[0].process)

    crashed = wait_until(lambda: flow_run(stack, run_id), lambda run: run["state"]["type"] in FINAL, 240, 2)
    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    # the automation noticed, nothing told the server
    assert f"No heartbeat for {DEAD_AFTER_SECONDS} s" in crashed["state"]["message"], crashed["state"]
    assert "registry is consistent" in registry_check(stack)

    after = finished(stack, start_run(stack, 2, seed=32, **QUICK), timeout=300)  # its training slot comes back
    assert after["state"]["type"] == "COMPLETED", after["state"]
    assert "registry is consistent" in registry_check(stack)
