"""The whole team setup on one machine, for a try: `mnist-pipeline team up [--folder DIR]`.

Starts, in this order, each as a process of its own on 127.0.0.1, its log in `FOLDER/logs`:

1. PostgreSQL (`FOLDER/postgres`), with the Prefect server's database and role;
2. moto's S3-compatible server with the bucket `mnist-team`: the artifact store `s3://mnist-team/artifacts`;
3. the Prefect server on that database, requiring an auth string from every client;
4. on it: the work pool `mnist-pool` with a concurrency limit, the limit on trainings at once
   (the train task's tag `mnist-training`), the results block of the store, the automation that
   marks runs whose worker died `Crashed` (automations.yaml), and the deployment
   `mnist-training-pipeline/team-on-demand`, which runs from a fresh git clone at a pinned commit;
5. two workers, each started from a clone of its own of the repository (two "machines": a clone and a
   Python environment with the package installed from it), `--limit` runs at once each, polling the
   pool's default queue and a queue of their own (`machine-1`, `machine-2`: to send a run to one).

A bare mirror of the repository (`FOLDER/repo.git`, this checkout's HEAD commit) stands in for the
team's git server. The secrets (the auth string, the store's secret key) are generated at each start,
written to `FOLDER/team.env` (mode 0600) and never printed or logged; what is printed shows how to
point a client at the stack. Ctrl-C (or SIGTERM) stops the workers and the runs they started, the
Prefect server, moto and PostgreSQL, each by its process id, and checks that nothing is left.

Each start begins afresh (moto keeps its objects in memory only, so a database that outlived them
would point at results that are gone): what a previous start left in FOLDER is replaced.
"""

from __future__ import annotations

import base64
import concurrent.futures
import fcntl
import functools
import os
import secrets
import shlex
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from devstack.local_server import PROJECT_ROOT, WORK_POOL, LocalPrefect
from devstack.ports import free_port
from devstack.team import TeamStackError
from devstack.team.object_store import MotoS3Server
from devstack.team.postgres import PostgresServer
from devstack.team.processes import ProcessId, plain_env, spawn, stop_tree, wait_until_ready
from mnist_pipeline.core.storage.store import CACHE_ENV_VAR
from mnist_pipeline.orchestration.source import REPO_COMMIT_ENV, REPO_URL_ENV

if TYPE_CHECKING:
    import httpx

DEFAULT_FOLDER = Path("artifacts") / "team"
TEAM_DEPLOYMENT = "team-on-demand"
TEAM_ON_DEMAND = f"mnist-training-pipeline/{TEAM_DEPLOYMENT}"
TRAINING_TAG = "mnist-training"  # the train task's tag (tasks/train.py); its limit is the global limit tag:<tag>
BUCKET = "mnist-team"
STORE_PREFIX = "artifacts"
MACHINES = 2
ENV_FILE = "team.env"
MARKER = ".mnist-team-stack"
LEFTOVERS = ("postgres", "machines", "repo.git", "prefect-home", "cache", "logs", ENV_FILE)  # replaced at each start
AUTOMATIONS = Path(__file__).with_name("automations.yaml")  # marks runs whose worker died Crashed
HEARTBEAT_SECONDS = 30  # flow runs' heartbeats (Prefect's minimum); automations.yaml expects one within 90 s
DEAD_AFTER_SECONDS = 90  # automations.yaml's `within`: a run with no heartbeat for that long is marked Crashed
WORKER_SIGNALS = ((signal.SIGTERM, 3), (signal.SIGTERM, 30))  # a process worker may stop only at the second


def _run(command: list[str], what: str, log: Path, **options: Any) -> str:
    """Run a set-up command, its output appended to `log`; its stdout, or an error naming the log."""
    result: subprocess.CompletedProcess[str] = subprocess.run(command, capture_output=True, text=True, **options)
    with open(log, "a") as output:
        output.write(f"$ {shlex.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise TeamStackError(f"{what} failed (exit {result.returncode}); see {log}")
    return result.stdout


@dataclass
class Machine:
    """A stand-in for one of the team's machines: a clone of the repository, a Python environment with
    the package installed from that clone (the libraries are shared with ours, read-only), a Prefect
    home, and a worker started in the clone."""

    folder: Path
    worker_name: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def clone(self) -> Path:
        return self.folder / "repo"

    @property
    def venv(self) -> Path:
        return self.folder / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def prefect_home(self) -> Path:
        return self.folder / "prefect-home"

    @property
    def work_queue(self) -> str:
        """A queue only this machine's worker polls (besides the pool's default one, which all poll)."""
        return self.folder.name


class _TeamPrefect(LocalPrefect):
    """LocalPrefect's server start and CLI with the team's two environments: the server's holds the
    database URL and the auth string it checks; the CLI's only what a client needs."""

    def __init__(self, port: int, log_dir: Path, server_env: dict[str, str], client_env: dict[str, str]):
        super().__init__(port, log_dir=log_dir)
        self.server_env, self.env = server_env, client_env

    def start_server(self, timeout: float = 300) -> None:
        client_env, self.env = self.env, self.server_env
        try:
            super().start_server(timeout)
        except (RuntimeError, TimeoutError) as error:
            raise TeamStackError(str(error)) from None
        finally:
            self.env = client_env

    def prefect(self, *args: str) -> str:
        try:
            return super().prefect(*args)
        except RuntimeError as error:
            raise TeamStackError(str(error)) from None


class TeamStack:
    """The team stack in `folder`: `start()`, `stop()`, or `with TeamStack(...) as stack:`.

    `trainings`: trainings at once across all workers; `worker_limit`: flow runs at once per worker
    (the pool's limit is their sum). `extra_worker_env` is added to the workers' environment (tests
    make them poll the server more often). `dead_after_seconds`: how long a flow run may send no heartbeat
    before the automation marks it Crashed (automations.yaml's 90 s; tests wait less: more than the
    heartbeat interval, 30 s, plus what a busy machine may delay one by). `echo` receives the progress lines."""

    def __init__(
        self,
        folder: Path = DEFAULT_FOLDER,
        *,
        trainings: int = 1,
        worker_limit: int = 2,
        machines: int = MACHINES,
        extra_worker_env: dict[str, str] | None = None,
        dead_after_seconds: int = DEAD_AFTER_SECONDS,
        echo: Callable[[str], None] = print,
    ):
        if trainings < 1 or worker_limit < 1 or machines < 1:
            raise TeamStackError("--trainings, --worker-limit and the number of machines must be at least 1")
        if dead_after_seconds <= HEARTBEAT_SECONDS:
            raise TeamStackError(
                f"a run is dead after more than one heartbeat interval ({HEARTBEAT_SECONDS} s), "
                f"not {dead_after_seconds} s"
            )
        self.dead_after_seconds = dead_after_seconds
        self.folder = Path(folder).absolute()
        self.trainings, self.worker_limit = trainings, worker_limit
        self.extra_worker_env = dict(extra_worker_env or {})
        self.echo = echo
        self.logs = self.folder / "logs"
        self.env_file = self.folder / ENV_FILE
        self.bare_repo = self.folder / "repo.git"
        self.auth_string = f"team:{secrets.token_urlsafe(24)}"
        self.postgres = PostgresServer(self.folder / "postgres", log=self.logs / "postgres.log")
        self.store = MotoS3Server(self.logs / "moto.log", bucket=BUCKET, cwd=self.folder)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.machines = [
            Machine(self.folder / "machines" / f"machine-{n}", f"team-worker-{n}") for n in range(1, machines + 1)
        ]
        self.commit: str | None = None
        self.results_block: str | None = None
        self.prefect: _TeamPrefect | None = None
        self.survivors: list[ProcessId] = []
        self._stopping = threading.Event()
        self._lock: TextIO | None = None

    # What clients need ----------------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        return self.store.store_url(STORE_PREFIX)

    @property
    def pool_limit(self) -> int:
        """Flow runs at once in the work pool: what all the workers together may run."""
        return self.worker_limit * len(self.machines)

    @property
    def secrets(self) -> dict[str, str]:
        """The values that must never be printed or logged (tests look for them)."""
        return {
            "PREFECT_API_AUTH_STRING": self.auth_string,
            "AWS_SECRET_ACCESS_KEY": self.store.secret_access_key,
            "database password": self.postgres.password,
        }

    def client_env(self) -> dict[str, str]:
        """What a client of the stack sets: the Prefect API, its auth string, the store and its credentials,
        and a mirror of the store of this stack's own (the store starts empty at each start: a mirror
        from an earlier one would hold objects the store no longer has)."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_AUTH_STRING": self.auth_string,
            "MNIST_ARTIFACTS_DIR": self.store_url,
            **self.store.env(),
            CACHE_ENV_VAR: str(self.folder / "cache" / "client"),
        }

    def _prefect_env(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return {
            **plain_env(),
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_AUTH_STRING": self.auth_string,
        }

    def api(self, method: str, path: str, *, auth: str | None = "", **request: Any) -> httpx.Response:
        """An HTTP request to the Prefect API (`path` after /api), with the stack's auth string, another
        one (`auth=`), or none (`auth=None`). Returns the httpx response."""
        import httpx

        token = self.auth_string if auth == "" else auth
        headers = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()} if token is not None else {}
        return httpx.request(method, f"{self.api_url}{path}", headers=headers, timeout=30, **request)

    # Start ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything in order; if any part fails (or Ctrl-C comes), stop what was started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._prepare_folder()
        self.echo(f"starting PostgreSQL on 127.0.0.1:{self.postgres.port} (data in {self.postgres.data_dir}) ...")
        self.postgres.start()
        self.echo(f"starting moto's S3 server on {self.store.endpoint_url} (bucket {BUCKET}) ...")
        self.store.start()
        self._write_env_file()
        commit = self._mirror_repository()
        server_env = {
            **self._prefect_env(self.folder / "prefect-home" / "server"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgres.url,
            "PREFECT_SERVER_API_AUTH_STRING": self.auth_string,
        }
        client_env = {
            **self._prefect_env(self.folder / "prefect-home" / "client"),
            REPO_URL_ENV: str(self.bare_repo),
            REPO_COMMIT_ENV: commit,
        }  # what `prefect deploy` pins
        self.prefect = prefect = _TeamPrefect(self.port, self.logs, server_env, client_env)
        self.echo(
            f"starting the Prefect server on {self.api_url} (database {self.postgres.masked_url}; "
            f"set up {len(self.machines)} machines meanwhile) ..."
        )
        with concurrent.futures.ThreadPoolExecutor(len(self.machines)) as pool:
            machines = [pool.submit(self._set_up_machine, machine) for machine in self.machines]
            prefect.start_server()
            for done in machines:
                done.result()
        self.echo(f"setting up the work pool, the limits, the results block and {TEAM_ON_DEMAND} ...")
        self._set_up_server(prefect)
        self.echo(f"starting {len(self.machines)} workers ...")
        for machine in self.machines:
            machine.process = spawn(
                [
                    str(machine.python),
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    WORK_POOL,
                    "--work-queue",
                    "default",
                    "--work-queue",
                    machine.work_queue,
                    "--limit",
                    str(self.worker_limit),
                    "--name",
                    machine.worker_name,
                ],
                self._worker_log(machine),
                cwd=machine.clone,
                env=self._worker_env(machine),
            )
        for machine in self.machines:
            wait_until_ready(
                functools.partial(self._worker_online, machine.worker_name),
                f"worker {machine.worker_name}",
                timeout=120,
                process=machine.process,
                log=self._worker_log(machine),
                interval=1,
            )

    def _worker_log(self, machine: Machine) -> Path:
        return self.logs / f"{machine.worker_name}.log"

    def _prepare_folder(self) -> None:
        folder = self.folder
        if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
            raise TeamStackError(
                f"{folder} is not empty and was not made by `mnist-pipeline team up`: choose a new "
                "or empty folder with --folder (everything in it is replaced at each start)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        # Held open (and locked) while the stack runs, closed by stop(): a second start must not wipe it.
        lock = open(folder / MARKER, "a")  # noqa: SIM115 - outlives this method, so no `with`
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise TeamStackError(
                f"a team stack is running in {folder} already: stop it first, or choose another folder with --folder"
            ) from None
        self._lock = lock
        lock.truncate(0)
        lock.write("made by `mnist-pipeline team up`: replaced at each start\n")
        lock.flush()
        for name in LEFTOVERS:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.logs.mkdir()

    def _write_env_file(self) -> None:
        """FOLDER/team.env, readable by its owner only: what a client sets, secrets included."""
        lines = [
            "# The team stack's client settings, secrets included: keep this file to yourself.",
            f"# Load them with: set -a; . {self.env_file}; set +a",
            *(f"{name}={shlex.quote(value)}" for name, value in self.client_env().items()),
        ]
        descriptor = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as output:
            os.fchmod(output.fileno(), 0o600)
            output.write("\n".join(lines) + "\n")

    def _mirror_repository(self) -> str:
        """A bare mirror of this checkout (the team's git server) holding its HEAD commit; that commit."""
        log = self.logs / "git.log"
        if not (PROJECT_ROOT / ".git").exists():
            raise TeamStackError(
                f"{PROJECT_ROOT} is not a git checkout: the team stack's workers run the code "
                "from git clones; run it from a clone of the repository"
            )
        self.commit = commit = _run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], "git rev-parse HEAD", log
        ).strip()
        _run(["git", "clone", "--quiet", "--bare", str(PROJECT_ROOT), str(self.bare_repo)], "git clone --bare", log)
        _run(
            ["git", "-C", str(self.bare_repo), "fetch", "--quiet", str(PROJECT_ROOT), "+HEAD:refs/heads/team-pinned"],
            "git fetch HEAD",
            log,
        )  # HEAD may be detached, on no branch the clone copied
        if _run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"], "git status", log):
            self.echo(
                f"note: the workers run commit {commit[:12]}; the uncommitted changes in {PROJECT_ROOT} are not in it"
            )
        return commit

    def _set_up_machine(self, machine: Machine) -> None:
        """Clone, check out the pinned commit, and install the package from the clone into an
        environment of the machine's own (shared libraries: a .pth file adds ours after its own)."""
        log = self.logs / f"{machine.folder.name}-setup.log"
        steps = [
            (["git", "clone", "--quiet", str(self.bare_repo), str(machine.clone)], "git clone"),
            (["git", "-C", str(machine.clone), "checkout", "--quiet", "--detach", str(self.commit)], "git checkout"),
            (
                [getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(machine.venv)],
                "python -m venv",
            ),
        ]
        for command, what in steps:
            if self._stopping.is_set():
                return
            _run(command, f"{what} for {machine.folder.name}", log)
        own_site = Path(sysconfig.get_path("purelib", vars={"base": str(machine.venv), "platbase": str(machine.venv)}))
        # Plain folder lines: they put our libraries behind the machine's own, and run none of the .pth files
        # in them, so our editable install of this checkout cannot stand in for the machine's clone.
        shared = [path for path in site.getsitepackages() if Path(path).is_dir()]
        (own_site / "shared_libraries.pth").write_text("".join(f"{path}\n" for path in shared))
        if self._stopping.is_set():
            return
        _run(
            [
                str(machine.python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--ignore-installed",
                "--editable",
                str(machine.clone),
            ],
            f"pip install -e for {machine.folder.name}",
            log,
            env={**plain_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            cwd=machine.folder,
        )

    def _set_up_server(self, prefect: _TeamPrefect) -> None:
        """The pool, its queues, the trainings' limit and the automation through the client (a request
        each, where the CLI would start a Python process each); then the deployment and the results
        block, each from a process of its own, at once."""
        import httpx
        from prefect.events.schemas.automations import AutomationCore

        log = self.logs / "setup.log"
        try:
            prefect.ensure_work_pool(concurrency_limit=self.pool_limit)
            with prefect.client() as client:
                for machine in self.machines:  # a worker polling a queue that does not exist takes no runs at all
                    client.create_work_queue(machine.work_queue, work_pool_name=WORK_POOL)
                client.create_concurrency_limit(TRAINING_TAG, self.trainings)
                for automation in self._automations():
                    client.create_automation(AutomationCore.model_validate(automation))
        except httpx.HTTPError as error:  # as a failed CLI command would, one line and no traceback
            raise TeamStackError(f"setting up the Prefect server at {self.api_url} failed: {error}") from None

        def deployment() -> None:
            with open(log, "a") as output:  # pinned to the mirror and commit by the CLI's environment
                output.write(prefect.prefect("deploy", "--name", TEAM_DEPLOYMENT))

        def results_block() -> None:
            self.results_block = self._ensure_results_block(prefect, log)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(deployment), pool.submit(results_block)]:
                done.result()

    def _automations(self) -> list[dict[str, Any]]:
        """automations.yaml's automations (as `prefect automation create --from-file` reads them), with
        `dead_after_seconds` as their `within` and in their messages."""
        import yaml

        automations: list[dict[str, Any]] = yaml.safe_load(AUTOMATIONS.read_text())["automations"]
        for automation in automations:
            automation["trigger"]["within"] = self.dead_after_seconds
            for action in automation["actions"]:
                action["message"] = action["message"].replace(f"{DEAD_AFTER_SECONDS} s", f"{self.dead_after_seconds} s")
        return automations

    def _ensure_results_block(self, prefect: _TeamPrefect, log: Path) -> str:
        """The store's results block (mnist_pipeline.orchestration.results_storage), saved on the server by a
        client: in a process of its own, with the CLI's Prefect settings and the store's credentials."""
        output = _run(
            [sys.executable, "-m", "mnist_pipeline.orchestration.results_storage", self.store_url],
            f"saving the results block of {self.store_url}",
            log,
            cwd=PROJECT_ROOT,
            env={**prefect.env, **self.store.env()},
        )
        return output.strip().splitlines()[-1]

    def _worker_env(self, machine: Machine) -> dict[str, str]:
        env = self._prefect_env(machine.prefect_home)
        (machine.folder / "tmp").mkdir(exist_ok=True)
        return {
            **env,
            "PATH": f"{machine.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "TMPDIR": str(machine.folder / "tmp"),  # the runs' working folders: what a killed run leaves stays here
            "MNIST_ARTIFACTS_DIR": self.store_url,
            **self.store.env(),
            CACHE_ENV_VAR: str(machine.folder / "cache"),  # each machine its own mirror of the store
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),  # see automations.yaml
            **self.extra_worker_env,
        }

    def _worker_online(self, name: str) -> bool:
        return name in self.online_workers()

    def online_workers(self) -> set[str]:
        """Names of the workers the server has heard from lately."""
        response = self.api("POST", f"/work_pools/{WORK_POOL}/workers/filter", json={})
        if response.status_code != 200:
            return set()
        return {worker["name"] for worker in response.json() if worker.get("status") == "ONLINE"}

    # Running ----------------------------------------------------------------------------------------

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """{part: its process}, for what is running."""
        parts = {
            "PostgreSQL": self.postgres.process,
            "moto": self.store.process,
            "Prefect server": self.prefect.processes.get("server") if self.prefect else None,
            **{machine.worker_name: machine.process for machine in self.machines},
        }
        return {name: process for name, process in parts.items() if process is not None}

    def exited(self) -> str | None:
        """The name of a part that has stopped by itself, if any."""
        return next((name for name, process in self.processes().items() if process.poll() is not None), None)

    def summary(self) -> str:
        """What runs where, and how to point a client at it (secrets shown as where to find them)."""
        secret = f"<see {self.env_file}>"
        pids = {name: process.pid for name, process in self.processes().items()}
        ui = self.api_url.removesuffix("/api")
        lines = [
            f"team stack in {self.folder} (logs in {self.logs}):",
            f"  PostgreSQL      127.0.0.1:{self.postgres.port}, database {self.postgres.database}"
            f"    pid {pids['PostgreSQL']}",
            f"  S3 store (moto) {self.store.endpoint_url}, {self.store_url}    pid {pids['moto']}",
            "                  (objects in memory only: gone when the stack stops; use S3 or MinIO in production)",
            f"  Prefect server  {self.api_url} on {self.postgres.masked_url}    pid {pids['Prefect server']}",
            f"                  UI {ui} (it asks for the auth string: PREFECT_API_AUTH_STRING in {self.env_file})",
            *(
                f"  worker          {machine.worker_name}: pool {WORK_POOL}, --limit {self.worker_limit}, "
                f"in {machine.clone}    pid {pids[machine.worker_name]}"
                for machine in self.machines
            ),
            f"  limits          pool {WORK_POOL}: {self.pool_limit} runs at once; "
            f"trainings (tag {TRAINING_TAG}): {self.trainings} at once",
            f"  results block   {self.results_block or '(none)'}",
            f"  deployment      {TEAM_ON_DEMAND}: git clone of {self.bare_repo} at {self.commit}",
            "",
            f"Point a client at it (the secrets are in {self.env_file}, readable by you only):",
            *(
                f"  export {name}={secret if name in self.secrets else value}"
                for name, value in self.client_env().items()
            ),
            f"or all at once: set -a; . {self.env_file}; set +a",
            f"then, e.g.: prefect deployment run {TEAM_ON_DEMAND} --param preset=mlp",
        ]
        return "\n".join(lines)

    # Stop -------------------------------------------------------------------------------------------

    def stop(self) -> list[ProcessId]:
        """Stop the workers (and the flow runs they started), the Prefect server, moto, PostgreSQL, each
        by its id; what is still running afterwards (nothing, normally) is returned and kept in `survivors`."""
        self._stopping.set()
        survivors: list[ProcessId] = []
        workers = [machine.process for machine in self.machines if machine.process is not None]
        with concurrent.futures.ThreadPoolExecutor(max(1, len(workers))) as pool:
            for left in pool.map(functools.partial(stop_tree, signals=WORKER_SIGNALS), workers):
                survivors += left
        for machine in self.machines:
            machine.process = None
        server = self.prefect.processes.pop("server", None) if self.prefect else None
        if server is not None:
            survivors += stop_tree(server)
        survivors += self.store.stop()
        survivors += self.postgres.stop()
        self.survivors = survivors
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return survivors

    def __enter__(self) -> TeamStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        survivors = self.stop()
        if survivors and kind is None:
            raise TeamStackError("still running after the team stack stopped: " + "; ".join(map(str, survivors)))


def up(folder: Path = DEFAULT_FOLDER, trainings: int = 1, worker_limit: int = 2) -> int:
    """`mnist-pipeline team up`: start the stack, print what runs where, wait; stop it all on Ctrl-C or
    SIGTERM (or when a part stops by itself: exit 1). Exit 1 also if anything is left running."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    stack = TeamStack(folder, trainings=trainings, worker_limit=worker_limit, echo=lambda line: print(line, flush=True))
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # also when started in the background, where SIGINT comes ignored
    code = 0
    try:
        stack.start()
        print(f"{stack.summary()}\n\nteam stack ready: press Ctrl-C to stop it", flush=True)
        while (stopped := stack.exited()) is None:
            time.sleep(1)
        print(
            f"{stopped} stopped by itself (see its log in {stack.logs}): stopping the rest", file=sys.stderr, flush=True
        )
        code = 1
    except KeyboardInterrupt:
        print("\nstopping the team stack (workers and their runs, Prefect server, moto, PostgreSQL) ...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        survivors = stack.stop()
    if survivors:
        print("still running, stop them by hand: " + "; ".join(map(str, survivors)), file=sys.stderr)
        return 1
    print("team stack stopped: nothing it started is running", flush=True)
    return code
