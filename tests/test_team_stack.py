"""`mnist-pipeline team up` as a program (its own stack, stopped with Ctrl-C), and the team stack's
parts that need no server. The stack's parts on a running stack, and team mode end to end on it, are
tests/test_team_mode.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devstack.team import TeamStackError
from devstack.team.processes import descendants, stop_tree
from devstack.team.stack import TEAM_ON_DEMAND, TeamStack
from support.commands import ENTRY_POINT, PROJECT_ROOT
from support.polling import wait_until
from support.servers import postgres_reachable_folder
from support.team import assert_no_secret_in, git, written_by

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
