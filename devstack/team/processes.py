"""The team stack's processes: started in sessions of their own, followed with everything they start,
stopped by their ids.

A process id alone can name a later, unrelated process once the first has ended, so a process is
known by its id and its start time (`ProcessId`). What a process starts in a session of its own (a
Prefect worker's flow runs) is missed by a signal to its process group: `stop_tree` reads the
process's descendants before signalling it and stops those left afterwards, each by its own id.
Linux only (it reads /proc), as the rest of the team stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.team import TeamStackError


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent id, state letter, start time in clock ticks) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name, in parentheses, may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from any later one that gets the same id by its start time."""

    pid: int
    start_ticks: int
    command: str = ""

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        stat = _stat(pid)
        return cls(pid, stat[2], _command(pid)) if stat else None

    def alive(self) -> bool:
        """Still running (an exited process that its parent has not yet reaped does not count)."""
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.start_ticks and stat[1] not in "ZX"

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command[:120] or '?'})"


def descendants(pid: int) -> list[ProcessId]:
    """Every process started by `pid`, by its children and so on, still running now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop()
        if (process := ProcessId.of(child)) is not None:
            found.append(process)
        queue.extend(children.get(child, []))
    return found


def plain_env() -> dict[str, str]:
    """Our environment without settings and credentials meant for other programs (Prefect's, AWS',
    PostgreSQL's, the pipeline's): each part of the stack gets exactly the ones it needs on top."""
    return {
        name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "PREFECT_", "MNIST_", "PG"))
    }


def spawn(
    command: Sequence[str], log: Path, *, cwd: Path, env: dict[str, str], user: str | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` in a session of its own (Ctrl-C in the terminal does not reach it: the stack
    stops its parts in order), its output appended to `log`; as `user` if given (we are root)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )


def wait_until_ready(
    ready: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.3,
) -> None:
    """Poll `ready` until it says yes; fail at once if `process` exits, or after `timeout` seconds."""
    see = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise TeamStackError(f"{what} exited with code {process.returncode} while starting{see}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise TeamStackError(f"{what} was not ready within {timeout:.0f} s{see}")
        time.sleep(interval)


def _signal_group(process: ProcessId, sig: int) -> None:
    """Send `sig` to the process group that `process` leads or belongs to (never to our own group)."""
    if not process.alive():
        return
    try:
        group = os.getpgid(process.pid)
        if group == os.getpgrp():
            os.kill(process.pid, sig)
        else:
            os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(processes: Sequence[ProcessId], timeout: float, reap: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            reap.poll()  # our own child: reap it, or it stays a zombie
        if not any(process.alive() for process in processes):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stop_tree(
    process: subprocess.Popen[bytes],
    signals: Sequence[tuple[int, float]] = ((signal.SIGTERM, 20),),
    followers_timeout: float = 10,
) -> list[ProcessId]:
    """Stop `process` (started by `spawn`) and everything it started, by their ids.

    `signals` go in turn to its process group, each followed by a wait of up to so many seconds while
    it has not ended (a Prefect process worker may need two); then SIGKILL. Descendants that lived in
    sessions of their own (a worker's flow runs) get SIGTERM, then SIGKILL after `followers_timeout`.
    Returns what is still running afterwards: nothing, unless a process ignored SIGKILL.
    """
    leader = ProcessId.of(process.pid)
    tree: list[ProcessId] = []

    def follow() -> None:  # read before each signal: once the leader has gone, its orphans are untraceable
        tree.extend(found for found in descendants(process.pid) if found not in tree)

    if leader is not None:
        for sig, wait in signals:
            follow()
            _signal_group(leader, sig)
            if _wait_gone([leader], wait, reap=process):
                break
        else:
            follow()
            _signal_group(leader, signal.SIGKILL)
            _wait_gone([leader], 10, reap=process)
    process.poll()
    followers = [found for found in tree if found.alive()]
    for follower in followers:
        _signal_group(follower, signal.SIGTERM)
    if not _wait_gone(followers, followers_timeout):
        for follower in followers:
            _signal_group(follower, signal.SIGKILL)
        _wait_gone(followers, 10)
    return [found for found in [leader, *tree] if found is not None and found.alive()]
