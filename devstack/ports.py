"""TCP ports for the servers the stacks and the tests start, each handed out once in turn.

A port found free with `bind(port 0)` and given to a server that binds it a few seconds later can be
given to another process in between: the OS hands out its free ports again. Two test workers starting
servers at once were both given the same one (a Prefect server and moto's), and the second server
failed to start. Ports here come from below Linux's ephemeral range (32768-60999), which the OS never
hands out by itself (not for `bind(port 0)`, nor for outgoing connections), one after the other, the
last one handed out kept in a file under a lock: two callers on this machine never get the same port
until the range comes round again, and a port something already listens on is skipped.
"""

from __future__ import annotations

import fcntl
import socket
import tempfile
from pathlib import Path

PORTS = range(20_000, 32_768)
TURN_FILE = Path(tempfile.gettempdir()) / "mnist-pipeline-ports"


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of `host` that nothing listens on now and that no other caller got lately."""
    with open(TURN_FILE, "a+") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)  # released when the file closes
        turn.seek(0)
        last = turn.read().strip()
        start = int(last) + 1 - PORTS.start if last.isdigit() else 0
        for step in range(len(PORTS)):
            port = PORTS[(start + step) % len(PORTS)]
            if _bindable(host, port):
                turn.seek(0)
                turn.truncate()
                turn.write(str(port))
                return port
    raise OSError(f"no TCP port of {host} in {PORTS.start}-{PORTS.stop - 1} is free")
