"""Run one benchmark case in a fresh process: its wall time, peak memory, exit code and output."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import psutil

SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class Measurement:
    wall_seconds: float
    started_at: float  # epoch seconds, to line the run up with the times the Prefect server records
    peak_rss_bytes: int  # the process itself (getrusage of the child: exact, not sampled)
    peak_tree_rss_bytes: (
        int  # the process and everything it started (sampled every 0.1 s), e.g. Prefect's temporary server
    )
    load_before: float  # 1-minute load average when the case started
    other_cores: float  # CPU cores that other processes kept busy on average while the case ran
    stdout: str
    stderr: str


class CaseFailed(RuntimeError):
    pass


def _busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _sample_tree_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        total = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += process.memory_info().rss
        except psutil.NoSuchProcess:
            return
        peak[0] = max(peak[0], total)
        stop.wait(SAMPLE_SECONDS)


def run_case(command: list[str], env: dict[str, str], cwd: str) -> Measurement:
    """Run `command` to completion; raise CaseFailed, with the end of its output, if it fails."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started, started_at, busy_before = time.perf_counter(), time.time(), _busy_seconds()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_sample_tree_rss, args=(process.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        case_cpu = usage.ru_utime + usage.ru_stime  # includes the children it waited for
        other_cores = max(0.0, (_busy_seconds() - busy_before - case_cpu) / wall)
        process.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        tail = "\n".join((stdout + stderr).splitlines()[-30:])
        raise CaseFailed(f"`{' '.join(command)}` exited with code {process.returncode}:\n{tail}")
    return Measurement(
        wall,
        started_at,
        usage.ru_maxrss * 1024,
        max(peak[0], usage.ru_maxrss * 1024),
        load_before,
        other_cores,
        stdout,
        stderr,
    )
