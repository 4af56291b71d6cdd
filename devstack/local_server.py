"""The pipeline on a local Prefect server, in one command, for a quick try:

    python -m devstack.local_server [--port 4200] [--param preset=mlp ...]

Starts `prefect server start` on 127.0.0.1 (SQLite under PREFECT_HOME), creates the `process` work
pool, deploys everything in prefect.yaml, starts a worker and triggers the on-demand deployment once.
Everything keeps running so the UI shows the scheduled and the finished runs; Ctrl-C stops the worker,
the flow runs it started and the server cleanly. The tests drive a real server through the same class.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.team.processes import ProcessId, stop_tree

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # a checkout: prefect.yaml is there

WORK_POOL = "mnist-pool"
ON_DEMAND = "mnist-training-pipeline/on-demand"
NIGHTLY_CHECK = "mnist-data-check/nightly-data-check"
RETRAIN_ON_CHANGE = "mnist-training-pipeline/retrain-on-change"


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop a process started with `start_new_session=True`, by its id: SIGTERM to its process group
    (its own children go too), SIGKILL if it has not ended by `timeout`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class LocalPrefect:
    """A Prefect server and a worker as child processes, each in its own process group."""

    def __init__(
        self,
        port: int,
        prefect_home: Path | None = None,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.log_dir = Path(log_dir or PROJECT_ROOT / "artifacts" / "local-prefect")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **(extra_env or {}),
        }
        if prefect_home is not None:
            self.env["PREFECT_HOME"] = str(prefect_home)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def prefect(self, *args: str) -> str:
        """Run a Prefect CLI command against this server; its output, or an error with the output."""
        result = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"`prefect {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start_server(self, timeout: float = 300) -> None:
        """Start `prefect server start` and wait until it answers, failing at once if it exits. A new
        Prefect home's first start creates the database, a minute or more on a busy 2-core machine."""
        server = self._spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited; see {self.log_dir / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the Prefect server did not answer on {self.api_url} within {timeout:.0f} s")

    @contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A synchronous Prefect client of this server, with the CLI's API settings (its auth string too)."""
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(self.api_url, auth_string=self.env.get("PREFECT_API_AUTH_STRING")) as client:
            yield client

    def ensure_work_pool(self, concurrency_limit: int | None = None) -> None:
        """The `process` work pool as `prefect work-pool create --type process` makes it, unless it
        exists: through the client, where the CLI would be a Python process of its own (two, to check
        first), each importing Prefect for a request."""
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists
        from prefect.workers.process import ProcessWorker

        pool = WorkPoolCreate(
            name=WORK_POOL,
            type=ProcessWorker.type,
            base_job_template=ProcessWorker.get_default_base_job_template(),
            concurrency_limit=concurrency_limit,
        )
        with self.client() as client, suppress(ObjectAlreadyExists):
            client.create_work_pool(pool)

    def deploy(self, prefect_file: Path | None = None) -> None:
        """Create the work pool (if missing) and every deployment in prefect.yaml (or `prefect_file`,
        whose entrypoints are relative to the project root too)."""
        self.ensure_work_pool()
        self.prefect("deploy", "--all", *(("--prefect-file", str(prefect_file)) if prefect_file else ()))

    def start_worker(self) -> None:
        self._spawn("worker", "worker", "start", "--pool", WORK_POOL)

    def trigger(self, deployment: str = ON_DEMAND, parameters: dict[str, str] | None = None) -> str:
        """Start a run of a deployment; returns the flow run id."""
        params = [arg for key, value in (parameters or {}).items() for arg in ("--param", f"{key}={value}")]
        output = self.prefect("deployment", "run", deployment, *params)
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        if not match:
            raise RuntimeError(f"no flow run id in the output of `prefect deployment run`:\n{output}")
        return match.group(1)

    def stop(self, timeout: float = 30) -> list[ProcessId]:
        """Stop the worker with the flow runs it started (each in a session of its own, out of reach of a
        signal to the worker's group), then the server: SIGTERM, SIGKILL to what lingers after `timeout`.
        What is still running afterwards: nothing, unless a process ignored SIGKILL."""
        left = []
        for name in ("worker", "server"):
            process = self.processes.pop(name, None)
            if process is not None:
                left += stop_tree(process, signals=((signal.SIGTERM, timeout),), followers_timeout=timeout)
        return left

    def __enter__(self) -> LocalPrefect:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.local_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default: 4200)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the triggered run, e.g. --param preset=mlp (repeatable)",
    )
    args = parser.parse_args(argv)
    parameters = dict(item.split("=", 1) for item in args.param)

    with LocalPrefect(args.port) as local:
        print(f"starting the Prefect server on {local.api_url} (logs in {local.log_dir}) ...", flush=True)
        local.start_server()
        print(f"creating work pool {WORK_POOL!r} and deploying prefect.yaml ...", flush=True)
        local.deploy()
        local.start_worker()
        flow_run_id = local.trigger(ON_DEMAND, parameters)
        print(
            f"triggered {ON_DEMAND} (flow run {flow_run_id})\n"
            f"UI: http://127.0.0.1:{args.port}/runs/flow-run/{flow_run_id}\n"
            "worker and server keep running; press Ctrl-C to stop them",
            flush=True,
        )
        try:
            while all(process.poll() is None for process in local.processes.values()):
                time.sleep(1)
            print("a process stopped unexpectedly; see the logs in", local.log_dir, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping worker and server ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
