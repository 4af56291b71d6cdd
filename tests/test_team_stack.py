"""The team stack (`mnist-pipeline team up`): PostgreSQL, moto's S3 server, a Prefect server on
PostgreSQL that requires an auth string, and two workers in clones of their own, each a real process
on 127.0.0.1.

One stack serves the module; `team up` itself runs once more as a program, to be stopped with Ctrl-C.
Every process is stopped by its id (the stack's own stop, checked by tests/support/servers.py).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devstack.team import TeamStackError
from devstack.team.processes import descendants, stop_tree
from devstack.team.stack import BUCKET, DEAD_AFTER_SECONDS, TEAM_ON_DEMAND, TRAINING_TAG, TeamStack
from support.commands import ENTRY_POINT, PROJECT_ROOT
from support.polling import wait_until
from support.servers import postgres_reachable_folder, team_stack

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def running():
    """(the module's stack, the lines it printed while starting)."""
    printed: list[str] = []
    with postgres_reachable_folder() as root, team_stack(root / "stack", worker_limit=1, echo=printed.append) as stack:
        yield stack, printed


@pytest.fixture
def stack(running) -> TeamStack:
    return running[0]


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(clone), *args], capture_output=True, text=True, check=True).stdout.strip()


def written_by(folder: Path) -> dict[str, str]:
    """{path: text} of every file the stack wrote for people to read: its logs and Prefect's homes."""
    roots = [folder / "logs", folder / "prefect-home", *(folder / "machines").glob("*/prefect-home")]
    return {str(path): path.read_text(errors="replace") for root in roots for path in root.rglob("*") if path.is_file()}


def assert_no_secret_in(texts: dict[str, str], secrets: dict[str, str]) -> None:
    for name, secret in secrets.items():
        assert len(secret) >= 16
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"{name} appears in {leaks}"


# The stack's parts ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.needs_postgres
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

    assert stack.api("GET", "/work_pools/mnist-pool").json()["concurrency_limit"] == 2  # two workers, --limit 1
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


@pytest.mark.slow
@pytest.mark.needs_postgres
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
        lambda run: run["state"] and run["state"]["type"] in FINAL_STATES,
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


@pytest.mark.slow
@pytest.mark.needs_postgres
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


@pytest.mark.slow
@pytest.mark.needs_postgres
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


@pytest.mark.slow
@pytest.mark.needs_postgres
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


@pytest.mark.slow
@pytest.mark.needs_postgres
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
            lambda state: state["type"] in FINAL_STATES,
            timeout=120,
            interval=1,
        )
        assert (state["type"], state["message"]) == ("CANCELLED", "Deployment concurrency limit reached."), state
    finally:
        stack.api("POST", f"/flow_runs/{going}/set_state", json={"state": {"type": "CANCELLED"}, "force": True})


@pytest.mark.slow
@pytest.mark.needs_postgres
def test_a_second_stack_in_the_same_folder_is_refused(stack):
    with pytest.raises(TeamStackError, match="running in .* already"):
        TeamStack(stack.folder, echo=lambda line: None).start()
    assert stack.exited() is None and stack.postgres.data_dir.is_dir()


# `mnist-pipeline team up`, the program ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.needs_postgres
def test_team_up_stops_everything_it_started_and_its_flow_runs_on_ctrl_c():
    with postgres_reachable_folder() as root:
        folder, output = root / "stack", root / "team-up.txt"
        with open(output, "wb") as sink:
            process = subprocess.Popen(
                [str(ENTRY_POINT), "team", "up", "--folder", str(folder), "--worker-limit", "1"],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        try:
            text = wait_until(
                output.read_text,
                lambda text: "team stack ready" in text or process.poll() is not None,
                timeout=300,
                interval=1,
            )
            assert process.poll() is None, text
            # A flow run in flight, which its worker started in a session of its own (stopped within
            # seconds: before its training starts).
            api_url = re.search(r"^  export PREFECT_API_URL=(\S+)$", text, re.MULTILINE)[1]
            auth = re.search(r"^PREFECT_API_AUTH_STRING=(\S+)$", (folder / "team.env").read_text(), re.MULTILINE)[1]
            client = httpx.Client(base_url=api_url, auth=tuple(auth.split(":", 1)), timeout=30)
            deployment = client.get(f"/deployments/name/{TEAM_ON_DEMAND}").json()
            client.post(
                f"/deployments/{deployment['id']}/create_flow_run",
                json={"parameters": {"preset": "seed-mlp", "epochs": 1}},
            ).raise_for_status()
            in_flight = wait_until(
                lambda: [found for found in descendants(process.pid) if found.command.endswith("-m prefect.engine")],
                bool,
                timeout=60,
                interval=0.2,
            )
            assert os.getsid(in_flight[0].pid) == in_flight[0].pid  # out of reach of a signal to its worker's group
            started = descendants(process.pid)
            assert set(in_flight) <= set(started)
            printed_pids = {int(pid) for pid in re.findall(r"\bpid (\d+)$", text, re.MULTILINE)}
            assert len(printed_pids) == 5 and printed_pids <= {found.pid for found in started}, (printed_pids, started)
            commands = [found.command for found in started if found.pid in printed_pids]
            for part in (
                "postgres -D",
                "moto.server",
                "prefect server start",
                "--name team-worker-1",
                "--name team-worker-2",
            ):
                assert any(part in command for command in commands), (part, commands)

            os.kill(process.pid, signal.SIGINT)
            assert process.wait(timeout=120) == 0, output.read_text()
        finally:
            if process.poll() is None:
                stop_tree(process)
        text = output.read_text()
        assert "team stack stopped: nothing it started is running" in text, text
        assert [found for found in started if found.alive()] == []  # the flow run's process too

        secrets = dict(
            re.findall(
                r"^(PREFECT_API_AUTH_STRING|AWS_SECRET_ACCESS_KEY)=(\S+)$",
                (folder / "team.env").read_text(),
                re.MULTILINE,
            )
        )
        assert set(secrets) == {"PREFECT_API_AUTH_STRING", "AWS_SECRET_ACCESS_KEY"}
        assert_no_secret_in({**written_by(folder), "printed by team up": text}, secrets)


# Without servers -----------------------------------------------------------------------------------

PARENT = """
import signal, subprocess, sys, time
subprocess.Popen(["sleep", "600"], start_new_session=True)  # as a worker starts a flow run
subprocess.Popen(["sleep", "601"])                           # in the parent's own group
signals = []
signal.signal(signal.SIGTERM, lambda *_: signals.append(1) if len(signals) < int(sys.argv[1]) - 1 else sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.mark.parametrize("signals_needed", [1, 2])
def test_stop_tree_stops_what_a_process_started_in_sessions_of_its_own(signals_needed):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(signals_needed)], stdout=subprocess.PIPE, start_new_session=True, text=True
    )
    try:
        assert parent.stdout.readline() == "ready\n"
        children = wait_until(lambda: descendants(parent.pid), lambda found: len(found) == 2)
        assert sorted(child.command for child in children) == ["sleep 600", "sleep 601"]
        survivors = stop_tree(parent, signals=((signal.SIGTERM, 2),) * 2, followers_timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert survivors == []
    assert parent.returncode == 0  # it stopped at the signal it needed, not at SIGKILL
    assert not any(child.alive() for child in children)


def test_team_up_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TeamStackError, match="not made by `mnist-pipeline team up`"):
        TeamStack(tmp_path, echo=lambda line: None).start()
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_a_prefect_server_that_refuses_the_set_up_is_one_error_naming_it(tmp_path):
    """The pool, queues, limit and automation go through Prefect's client: its failure reads as a failed
    CLI command did, a TeamStackError naming the server, not an HTTP traceback."""
    from devstack.team.stack import _TeamPrefect

    stack = TeamStack(tmp_path / "stack", echo=lambda line: None)
    stack.logs.mkdir(parents=True)
    nobody = _TeamPrefect(stack.port, stack.logs, server_env={}, client_env={"PREFECT_API_AUTH_STRING": "x"})
    with pytest.raises(TeamStackError, match=rf"setting up the Prefect server at {stack.api_url} failed: .*refused"):
        stack._set_up_server(nobody)  # nothing listens on the stack's port: it was never started


def test_the_team_deployment_is_pinned_to_a_full_commit(monkeypatch, tmp_path):
    from mnist_pipeline.orchestration.source import pin_source

    monkeypatch.setenv("MNIST_REPO_URL", "/srv/git/mnist.git")
    monkeypatch.setenv("MNIST_REPO_COMMIT", "a" * 40)
    assert pin_source() == {"repository": "/srv/git/mnist.git", "commit": "a" * 40}
    monkeypatch.setenv("MNIST_REPO_COMMIT", "main")
    with pytest.raises(ValueError, match="not a full commit id"):
        pin_source()
    monkeypatch.delenv("MNIST_REPO_COMMIT")
    monkeypatch.delenv("MNIST_REPO_URL")
    assert pin_source(str(PROJECT_ROOT))["commit"] == git(PROJECT_ROOT, "rev-parse", "HEAD")
    assert pin_source(str(tmp_path))["repository"] == "MNIST_REPO_URL-was-not-set-at-deploy-time"


def test_initdb_is_found_on_path_else_in_debians_newest_versioned_folder(tmp_path):
    from devstack.team.postgres import find_initdb

    def fake_initdb(folder: Path) -> Path:
        folder.mkdir(parents=True)
        program = folder / "initdb"
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        return program

    debian, on_path, empty = tmp_path / "debian", tmp_path / "on-path", tmp_path / "empty"
    empty.mkdir()
    assert find_initdb(str(empty), debian_root=debian) is None
    fake_initdb(debian / "14" / "bin")
    newest = fake_initdb(debian / "15" / "bin")
    (debian / "15" / "bin" / "initdb.sample").touch()
    assert find_initdb(str(empty), debian_root=debian) == str(newest)  # Debian's postgresql-NN: not on PATH
    assert find_initdb(str(on_path), debian_root=debian) == str(newest)
    first = fake_initdb(on_path)
    assert find_initdb(str(on_path), debian_root=debian) == str(first)  # PATH first
