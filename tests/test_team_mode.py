"""Team mode on this machine: the team stack (`mnist-pipeline team up`: PostgreSQL, moto's S3 server,
a Prefect server on PostgreSQL that requires an auth string, two workers, each in a clone of its own
with a mirror of the store of its own: two "machines"), its parts, then the pipeline on it end to end.
One stack serves the module; every process is stopped by its id (tests/support/servers.py checks).

The stack's parts: the server's state in PostgreSQL, the pool, limits and automation as set up, the
deployment run from a fresh clone at the pinned commit, the auth string required, no secret in what it
wrote or printed, the store's conditional writes, the nightly check's own limit, one stack a folder.

End to end (one training at a time across both machines), each test starting the runs it asserts on
(seeds of its own), so none depends on what another left: (a) a split built on one machine is
`Cached` on the other; (b, e) two runs on the two machines at once register two versions, one
decision each, the registry stays consistent, and their trainings never overlap; (f) a bad store
fails before any training; (g) no secret in what the server, the store or `registry show` hand out;
(d) a worker killed mid-training: its run is marked `Crashed`, the registry is consistent, and a new
run completes (last: it leaves one machine). The compare-and-swap retry itself (c) is forced in
tests/test_registry_store.py.

Dead workers are found sooner than with `team up` (DEAD_AFTER_SECONDS, 90 s): a run whose heartbeats
(every 30 s, Prefect's minimum) stop for 60 s is marked `Crashed`.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.team import TeamStackError
from devstack.team.processes import ProcessId, descendants
from devstack.team.stack import BUCKET, TEAM_ON_DEMAND, TRAINING_TAG, TeamStack
from support.commands import run_cli
from support.polling import wait_until
from support.servers import free_port, postgres_reachable_folder, team_stack
from support.team import assert_no_secret_in, git, written_by

pytestmark = [pytest.mark.slow, pytest.mark.needs_postgres]

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
QUICK = {"preset": "seed-mlp", "epochs": 2}  # a real MNIST training of a few seconds
DEAD_AFTER_SECONDS = 60  # a missed heartbeat (every 30 s) and 30 s to spare for a busy machine


@pytest.fixture(scope="module")
def running():
    """(the module's stack: one training at a time, two flow runs a worker; the lines it printed while starting)."""
    printed: list[str] = []
    with (
        postgres_reachable_folder() as root,
        team_stack(
            root / "stack", trainings=1, worker_limit=2, dead_after_seconds=DEAD_AFTER_SECONDS, echo=printed.append
        ) as stack,
    ):
        yield stack, printed


@pytest.fixture(scope="module")
def stack(running) -> TeamStack:
    return running[0]


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


# The stack's parts ---------------------------------------------------------------------------------


def test_prefect_server_keeps_its_state_in_postgresql_with_the_team_setup(stack):
    assert stack.api("GET", "/health").status_code == 200
    deployment = stack.api("GET", f"/deployments/name/{TEAM_ON_DEMAND}").json()
    assert stack.postgres.query(f"SELECT name FROM deployment WHERE id = '{deployment['id']}'") == ["team-on-demand"]
    assert stack.postgres.query("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == ["pg_trgm"]

    assert deployment["work_pool_name"] == "mnist-pool"
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.git_clone": {"repository": str(stack.bare_repo), "commit_sha": stack.commit}}
    ]
    assert git(stack.bare_repo, "rev-parse", "refs/heads/team-pinned") == stack.commit  # this checkout's HEAD then

    assert stack.api("GET", "/work_pools/mnist-pool").json()["concurrency_limit"] == 4  # two workers, --limit 2
    limits = stack.api("POST", "/v2/concurrency_limits/filter", json={}).json()
    assert [(limit["name"], limit["limit"]) for limit in limits if limit["name"].startswith("tag:")] == [
        (f"tag:{TRAINING_TAG}", 1)
    ]
    [automation] = stack.api("POST", "/automations/filter", json={}).json()  # automations.yaml's, as it is
    assert (automation["name"], automation["enabled"], automation["trigger"]["within"]) == (
        "mnist-crash-unresponsive-runs",
        True,
        DEAD_AFTER_SECONDS,
    )
    assert automation["actions"][0]["message"].startswith(f"No heartbeat for {DEAD_AFTER_SECONDS} s:")
    assert stack.online_workers() == {"team-worker-1", "team-worker-2"}
    assert stack.results_block and stack.results_block.startswith("remote-file-system/")

    for machine in stack.machines:  # each worker is a "machine": its own clone, and the package installed from it
        assert git(machine.clone, "rev-parse", "HEAD") == stack.commit
        assert os.readlink(f"/proc/{machine.process.pid}/cwd") == str(machine.clone)
        worker_env = dict(
            line.split("=", 1)
            for line in Path(f"/proc/{machine.process.pid}/environ").read_text().split("\0")
            if "=" in line
        )
        assert worker_env["MNIST_ARTIFACTS_DIR"] == stack.store_url
        assert worker_env["MNIST_CACHE_DIR"] == str(machine.folder / "cache")  # its own mirror of the store
        found = subprocess.run(
            [
                str(machine.python),
                "-c",
                "import mnist_pipeline.flows, mnist_pipeline.tasks as t; "
                "print(mnist_pipeline.flows.__path__[0]); print(t.__file__)",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout.split()
        assert found == [str(machine.clone / "flows"), str(machine.clone / "tasks" / "__init__.py")]


def test_team_deployment_runs_from_a_fresh_clone_at_the_pinned_commit(running):
    stack, printed = running
    work = stack.folder / "runs" / "fresh-clone"
    work.mkdir(parents=True)
    deployment = stack.api("GET", f"/deployments/name/{TEAM_ON_DEMAND}").json()
    # Fails at once, before any training: the bundle is missing. By then the run has made its artifacts
    # folder, given relative to its working directory.
    parameters = {"preset": "seed-mlp", "epochs": 1, "artifacts_dir": "probe-artifacts", "bundle_dir": "no-such-bundle"}
    created = stack.api(
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": parameters, "job_variables": {"working_dir": str(work)}},
    )
    assert created.status_code == 201, created.text
    flow_run = wait_until(
        lambda: stack.api("GET", f"/flow_runs/{created.json()['id']}").json(),
        lambda run: run["state"] and run["state"]["type"] in FINAL,
        timeout=240,
        interval=1,
    )

    clone = work / "repo"
    assert flow_run["state"]["type"] == "FAILED", flow_run["state"]
    assert str(clone / "no-such-bundle") in flow_run["state"]["message"]
    assert (clone / "probe-artifacts").is_dir()  # the run's working directory was the clone
    assert git(clone, "rev-parse", "HEAD") == stack.commit
    assert git(clone, "remote", "get-url", "origin") == str(stack.bare_repo)
    logs = stack.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}}).json()
    assert any("git_clone" in log["message"] for log in logs)
    assert_no_secret_in({**written_by(stack.folder), "printed": "\n".join(printed)}, stack.secrets)


def test_a_client_without_the_auth_string_is_refused(stack):
    assert stack.api("GET", "/health", auth=None).status_code == 200  # health checks need no credentials
    for auth in (None, "team:not-the-auth-string"):
        refused = stack.api("POST", "/flow_runs/filter", json={}, auth=auth)
        assert refused.status_code == 401, (auth, refused.text)
    assert stack.api("POST", "/flow_runs/filter", json={}).status_code == 200

    env = {**os.environ, "PREFECT_API_URL": stack.api_url}
    for auth in ("team:not-the-auth-string", None):
        client_env = {**env, "PREFECT_API_AUTH_STRING": auth} if auth else env
        cli = subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "ls"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode != 0, cli.stdout
        assert "401" in cli.stdout + cli.stderr or "Unauthorized" in cli.stdout + cli.stderr, cli.stdout + cli.stderr


def test_no_secret_in_the_logs_or_the_printed_lines(running):
    stack, printed = running
    texts = {**written_by(stack.folder), "printed while starting": "\n".join(printed), "summary": stack.summary()}
    assert {"server.log", "postgres.log", "moto.log", "setup.log", "team-worker-1.log"} <= {Path(p).name for p in texts}
    assert_no_secret_in(texts, stack.secrets)
    assert f"PREFECT_API_AUTH_STRING=<see {stack.env_file}>" in stack.summary()

    shown_in_the_ui = {
        what: stack.api("POST", f"/{what}/filter", json={}).text
        for what in ("block_documents", "deployments", "work_pools", "variables")
    }
    assert_no_secret_in(shown_in_the_ui, stack.secrets)

    assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
    env_file = stack.env_file.read_text()
    assert stack.auth_string in env_file and stack.store.secret_access_key in env_file
    assert stack.postgres.password not in env_file  # the server's, not a client's


def test_the_store_refuses_a_second_create_and_a_stale_etag(stack):
    import s3fs

    fs = s3fs.S3FileSystem(
        key=stack.store.access_key_id,
        secret=stack.store.secret_access_key,
        endpoint_url=stack.store.endpoint_url,
        skip_instance_cache=True,
    )
    path = f"{BUCKET}/tests/conditional-write"
    fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"second", mode="create")  # If-None-Match: *
    assert fs.cat_file(path) == b"first"

    fs.invalidate_cache()
    etag = fs.info(path)["ETag"]
    fs.pipe_file(path, b"third", IfMatch=etag)  # compare-and-swap on the ETag just read
    with pytest.raises(OSError, match="pre-conditions"):
        fs.pipe_file(path, b"fourth", IfMatch=etag)  # that ETag is stale now
    assert fs.cat_file(path) == b"third"


def test_the_nightly_check_never_overlaps_itself(stack):
    stack.prefect.prefect("deploy", "--name", "nightly-data-check")
    deployment = stack.api("GET", "/deployments/name/mnist-data-check/nightly-data-check").json()
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

    def create_run(**state) -> str:
        created = stack.api("POST", f"/deployments/{deployment['id']}/create_flow_run", json=state)
        assert created.status_code == 201, created.text
        return created.json()["id"]

    # A check still going: a run that this test moves to Pending itself, as a worker would (no worker
    # picks a run due in an hour), so it holds the deployment's one slot until the test lets it go.
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    going = create_run(state={"type": "SCHEDULED", "state_details": {"scheduled_time": later}})
    taken = stack.api("POST", f"/flow_runs/{going}/set_state", json={"state": {"type": "PENDING"}}).json()
    assert taken["status"] == "ACCEPT", taken
    try:
        due = create_run()  # the next check, due now: a worker picks it, and the server cancels it
        state = wait_until(
            lambda: stack.api("GET", f"/flow_runs/{due}").json()["state"],
            lambda state: state["type"] in FINAL,
            timeout=120,
            interval=1,
        )
        assert (state["type"], state["message"]) == ("CANCELLED", "Deployment concurrency limit reached."), state
    finally:
        stack.api("POST", f"/flow_runs/{going}/set_state", json={"state": {"type": "CANCELLED"}, "force": True})


def test_a_second_stack_in_the_same_folder_is_refused(stack):
    with pytest.raises(TeamStackError, match="running in .* already"):
        TeamStack(stack.folder, echo=lambda line: None).start()
    assert stack.exited() is None and stack.postgres.data_dir.is_dir()


# End to end ---------------------------------------------------------------------------------------


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
