"""Processes and servers a test starts: free ports, the HTTP service, a local Prefect server with a
worker, the team stack on PostgreSQL. Each is stopped by its id when its block ends, and checked:
nothing it started is left running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack.ports import free_port
from support.commands import ENTRY_POINT, PROJECT_ROOT
from support.polling import wait_until
from support.training import QUIET_LOG


def answers_ok(url: str) -> bool:
    """Whether a GET of `url` answers 200 now (False while the server is not up)."""
    import httpx

    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serving(artifacts: Path, *options: str, log: Path) -> Iterator[str]:
    """`mnist-pipeline serve` on `artifacts` in a process of its own, on a free port of 127.0.0.1,
    reading the production pointer every 0.2 s: its base URL, once /readyz answers 200. The process
    is stopped by its pid when the block ends; its output is in `log`."""
    port = free_port()
    command = [
        str(ENTRY_POINT),
        "serve",
        "--artifacts-dir",
        str(artifacts),
        "--port",
        str(port),
        "--poll-seconds",
        "0.2",
        *options,
    ]
    with http_process(command, port, "/readyz", log, cwd=PROJECT_ROOT) as url:
        yield url


@contextmanager
def http_process(
    command: list[str], port: int, ready_path: str, log: Path, timeout: float = 240, **popen: Any
) -> Iterator[str]:
    """`command`, an HTTP server on `port` of 127.0.0.1, in a process of its own: its base URL, once
    `ready_path` answers 200 (an assertion error with the end of its output, `log`, if it exits
    first). Stopped by its id when the block ends, and checked: it is gone."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    url = f"http://127.0.0.1:{port}"
    try:
        exited, _ = wait_until(
            lambda: (process.poll(), answers_ok(url + ready_path)),
            lambda state: state[0] is not None or state[1],
            timeout=timeout,
        )
        assert exited is None, f"{command[0]} {command[1]} exited with {exited}:\n{log.read_text()[-3000:]}"
        yield url
    finally:
        stop_process(process)
    assert process.poll() is not None, f"{command[0]} {command[1]} outlived its stop"


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process a test started (with `start_new_session=True`) by its id, its children too."""
    from devstack.local_server import stop_process_group

    stop_process_group(process, timeout)


def migrated_prefect_database(home: Path) -> Path:
    """A Prefect SQLite database with every migration applied (`prefect server database upgrade`), in
    the Prefect home `home`: its file. A server started on a copy answers in about half the time and
    CPU of one that creates its database (bench/ci_results.md)."""
    env = {**os.environ, "PREFECT_HOME": str(home)}
    command = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home / "prefect.db"


@contextmanager
def prefect_server_in(home: Path, database: Path, **options: Any) -> Iterator:
    """`LocalPrefect`'s server on a free port, with PREFECT_HOME `home` holding a copy of the migrated
    `database` (`migrated_prefect_database`); `options` go to `LocalPrefect`. Stopped by its id when the
    block ends, with whatever the block started through it (a worker, its flow runs), and checked:
    nothing it started is left running."""
    from devstack.local_server import LocalPrefect

    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, home / "prefect.db")
    local = LocalPrefect(free_port(), prefect_home=home, log_dir=home / "logs", **options)
    try:
        local.start_server()
        yield local
    finally:
        # A worker stops at SIGTERM only once its flow runs end: a run a test left paused (or a crashed
        # one it still follows) kept each teardown waiting the whole 30 s before the SIGKILL.
        survivors = local.stop(timeout=5)
    assert not survivors, f"still running after the Prefect server and worker stopped: {'; '.join(map(str, survivors))}"


@contextmanager
def settings_of_this_process(**settings: str) -> Iterator[None]:
    """Prefect `settings` (by name, e.g. api_url) for this process while the block runs: in the current
    context, and in the process-wide one that threads started without a copy of it read (a task's
    thread, for one, which would otherwise start a temporary server of its own), as Prefect's own
    `prefect_test_harness` does; but not for the processes started meanwhile, as its environment would.
    The logs and events the process still holds at the end are sent before the block ends."""
    from prefect.context import refresh_global_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import temporary_settings

    variables = {f"PREFECT_{name.upper()}": value for name, value in settings.items()}
    os.environ.update(variables)
    try:
        refresh_global_settings_context()  # reads the environment
    finally:
        for name in variables:
            del os.environ[name]
    try:
        with temporary_settings(variables):
            yield
            # what the process's log and event workers still hold goes to the server while it answers
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)
    finally:
        refresh_global_settings_context()


@contextmanager
def local_prefect(home: Path, database: Path, prefect_file: Path | None = None) -> Iterator:
    """`prefect_server_in`, with the deployments of prefect.yaml (or `prefect_file`) and a worker polling
    every 2 s."""
    with prefect_server_in(home, database, extra_env={"PREFECT_WORKER_QUERY_SECONDS": "2"}) as local:
        local.deploy(prefect_file)
        local.start_worker()
        yield local


@contextmanager
def client_of(local) -> Iterator:
    """A synchronous Prefect client of `local`'s server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: local.api_url}), get_client(sync_client=True) as client:
        yield client


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
