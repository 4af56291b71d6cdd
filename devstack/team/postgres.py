"""A PostgreSQL server of our own, for the Prefect server of the team stack.

PostgreSQL refuses to run as root, so everything here runs as the `postgres` user, whose data folder
it owns (0700); it listens on 127.0.0.1 only, on a port of its own, and on a Unix socket in that
folder (which only `postgres` and root can reach). The superuser `postgres` has no password: it logs
in through that socket only (peer authentication), and creates the one role that logs in over TCP,
with a password (scram-sha-256). The password leaves this process only as its SCRAM verifier (a salted
hash, computed here), so not even a PostgreSQL log line that quotes the statement can reveal it;
`masked_url` is the URL to show. `pg_trgm` is created by the superuser, as Prefect's migrations need
it and the role may not create extensions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from devstack.ports import free_port
from devstack.team import TeamStackError
from devstack.team.processes import ProcessId, descendants, spawn, stop_tree, wait_until_ready

POSTGRES_USER = "postgres"
MIN_VERSION = (14, 9)  # Prefect 3's migrations (pg_trgm indexes)
HOST = "127.0.0.1"
DEBIAN_ROOT = Path("/usr/lib/postgresql")  # Debian's packages: /usr/lib/postgresql/<major>/bin, not on PATH
DEBIAN_BIN_GLOB = f"{DEBIAN_ROOT}/<major>/bin"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a scram-sha-256 password (RFC 5802/7677), as `\\password` computes it
    on the client: `ALTER ROLE ... PASSWORD '<verifier>'` sets the password without sending it."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def find_initdb(path: str | None = None, debian_root: Path = DEBIAN_ROOT) -> str | None:
    """PostgreSQL's `initdb`: the one on PATH (`path`, else $PATH), else the newest of Debian's
    versioned installs (/usr/lib/postgresql/<major>/bin, which Debian's postgresql-NN package does not
    put on PATH); None when there is neither. scripts/system-deps.sh looks in the same places."""
    found = shutil.which("initdb", path=path)
    if found:
        return found
    installed = [
        candidate
        for candidate in debian_root.glob("*/bin/initdb")
        if candidate.parent.parent.name.isdigit() and os.access(candidate, os.X_OK)
    ]
    newest = max(installed, key=lambda candidate: int(candidate.parent.parent.name), default=None)
    return str(newest) if newest else None


# Create the role and its database if missing, (re)set the role's password, and pg_trgm in the database.
SETUP_SQL = r"""
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'verifier';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
\connect :"db"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
"""


class PostgresServer:
    """`postgres` on 127.0.0.1:`port` with its data in `folder`/data (initdb'ed on first start), a
    database and a role of that database's own with a password. `start()`, `stop()`, `url`."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        database: str = "prefect",
        role: str = "prefect",
        password: str | None = None,
        log: Path | None = None,
    ):
        self.folder = Path(folder).absolute()
        self.data_dir = self.folder / "data"
        self.port = port or free_port()
        self.database, self.role = database, role
        self.password = password or secrets.token_urlsafe(24)
        self.log = Path(log) if log else self.folder / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._bin: Path | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect connects with (it holds the password: never print it)."""
        return f"postgresql+asyncpg://{self.role}:{self.password}@{HOST}:{self.port}/{self.database}"

    @property
    def masked_url(self) -> str:
        return f"postgresql+asyncpg://{self.role}:***@{HOST}:{self.port}/{self.database}"

    # Running programs as the postgres user ----------------------------------------------------------

    def _program(self, name: str) -> str:
        if self._bin is None:
            initdb = find_initdb()
            if initdb is None:
                raise TeamStackError(
                    f"PostgreSQL's initdb is neither on PATH nor in {DEBIAN_BIN_GLOB}: install PostgreSQL "
                    f"{'.'.join(map(str, MIN_VERSION))} or later (Debian: apt-get install postgresql) or put its "
                    "bin folder (pg_config --bindir) on PATH."
                )
            self._bin = Path(os.path.realpath(initdb)).parent
        program = self._bin / name
        return str(program) if program.exists() else (shutil.which(name) or name)

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.folder), "LC_ALL": "C", "LANG": "C"}

    def _run(
        self, *command: str, input: str | None = None, check: bool = True, shown: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(command),
            input=input,
            capture_output=True,
            text=True,
            cwd=self.folder,
            env=self._env(),
            user=POSTGRES_USER,
            group=POSTGRES_USER,
            extra_groups=[],
        )
        with open(self.log, "a") as log:
            log.write(f"$ {shown or ' '.join(command)}\n{result.stdout}{result.stderr}")
        if check and result.returncode != 0:
            raise TeamStackError(
                f"`{' '.join(command[:2])} ...` failed (exit {result.returncode}) as user "
                f"{POSTGRES_USER}: {result.stderr.strip()[-1500:]}\n(see {self.log})"
            )
        return result

    def _psql_command(self, database: str, *flags: str) -> list[str]:
        """psql as the superuser through the socket, stopping at the first error, without ~/.psqlrc."""
        connection = ["-h", str(self.folder), "-p", str(self.port), "-U", POSTGRES_USER, "-d", database]
        return [self._program("psql"), "-X", *flags, "-v", "ON_ERROR_STOP=1", *connection]

    def _psql(self, sql: str, database: str = "postgres", **variables: str) -> subprocess.CompletedProcess[str]:
        command = self._psql_command(database, "-q")
        options = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
        shown = " ".join(command + [f"-v {name}=..." for name in variables])  # the log shows no value
        return self._run(*command, *options, input=sql, shown=shown)

    def query(self, sql: str, database: str | None = None) -> list[str]:
        """The rows of a query run as the superuser (through the socket), each as `a|b|...`."""
        result = self._run(*self._psql_command(database or self.database, "-A", "-t"), "-c", sql)
        return result.stdout.splitlines()

    # Start and stop -------------------------------------------------------------------------------

    def _check_installation(self) -> None:
        try:
            account = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            raise TeamStackError(
                f"there is no user {POSTGRES_USER!r} to run PostgreSQL as (it refuses to run as "
                "root): install Debian's postgresql package, which creates it."
            ) from None
        output = subprocess.run([self._program("postgres"), "--version"], capture_output=True, text=True).stdout
        found = re.search(r"(\d+)\.(\d+)", output)
        if not found or (int(found[1]), int(found[2])) < MIN_VERSION:
            raise TeamStackError(
                f"Prefect needs PostgreSQL {'.'.join(map(str, MIN_VERSION))} or later; "
                f"{self._program('postgres')} is {output.strip() or 'unknown'}."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.folder.chmod(0o700)
        if len(str(self.folder / f".s.PGSQL.{self.port}")) > 100:
            raise TeamStackError(
                f"{self.folder} is too long a path for PostgreSQL's Unix socket "
                "(at most about 100 characters): choose a shorter stack folder."
            )
        reachable = subprocess.run(
            ["test", "-w", str(self.folder)],
            user=POSTGRES_USER,
            group=POSTGRES_USER,
            extra_groups=[],
            env=self._env(),
            cwd="/",
        )
        if reachable.returncode != 0:
            raise TeamStackError(
                f"the user {POSTGRES_USER!r} cannot reach {self.folder}: PostgreSQL runs as that user, so every "
                f"folder above it must be searchable by others (chmod o+x), or choose a stack folder elsewhere."
            )

    def start(self, timeout: float = 60) -> None:
        """initdb (the first time), start the server, create the role, the database and pg_trgm."""
        self._check_installation()
        self.log.touch()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                self._program("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                POSTGRES_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
            )
        self.process = spawn(
            [
                self._program("postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"unix_socket_directories={self.folder}",
                "-c",
                "unix_socket_permissions=0700",
                "-c",
                "password_encryption=scram-sha-256",
            ],
            self.log,
            cwd=self.folder,
            env=self._env(),
            user=POSTGRES_USER,
        )

        def accepts_connections() -> bool:
            ready = subprocess.run(
                [self._program("pg_isready"), "-q", "-h", str(self.folder), "-p", str(self.port)],
                user=POSTGRES_USER,
                group=POSTGRES_USER,
                extra_groups=[],
                env=self._env(),
                cwd=self.folder,
            )
            return ready.returncode == 0

        wait_until_ready(
            accepts_connections,
            f"PostgreSQL on {HOST}:{self.port}",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )
        self._psql(SETUP_SQL, role=self.role, db=self.database, verifier=scram_verifier(self.password))

    def stop(self, timeout: float = 30) -> list[ProcessId]:
        """`pg_ctl stop -m fast` (sessions are ended, the data is left consistent), then make sure: a
        signal to whatever is left. Returns the processes still running (none, normally)."""
        if self.process is None:
            return []
        tree = descendants(self.process.pid)
        if self.process.poll() is None:
            self._run(
                self._program("pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                check=False,
            )
        survivors = stop_tree(self.process, signals=((signal.SIGQUIT, 10),))
        self.process = None
        return survivors + [process for process in tree if process.alive() and process not in survivors]
