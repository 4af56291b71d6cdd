"""devstack/ports.py: the ports the stacks' and the tests' servers are started on, each handed out once
in turn, machine-wide (two workers' servers were once given the same port by the OS, and one failed)."""

from __future__ import annotations

import socket
import subprocess
import sys

from devstack import ports
from support.commands import PROJECT_ROOT


def test_processes_asking_at_once_get_ports_of_their_own_outside_the_ephemeral_range():
    ask = "from devstack.ports import free_port; print(*(free_port() for _ in range(30)))"
    askers = [
        subprocess.Popen([sys.executable, "-c", ask], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    given = [int(port) for asker in askers for port in asker.communicate(timeout=60)[0].split()]
    assert all(asker.returncode == 0 for asker in askers)
    assert len(given) == len(set(given)) == 90
    assert all(port in ports.PORTS for port in given)


def test_a_port_in_use_is_skipped_and_the_turn_comes_round(tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "TURN_FILE", tmp_path / "turn")
    taken = next(
        port for port in ports.PORTS if ports._bindable("127.0.0.1", port) and ports._bindable("127.0.0.1", port + 1)
    )
    ports.TURN_FILE.write_text(str(taken - 1))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        assert ports.free_port() == taken + 1
    assert ports.TURN_FILE.read_text() == str(taken + 1)

    ports.TURN_FILE.write_text(str(ports.PORTS[-1]))
    first = next(port for port in ports.PORTS if ports._bindable("127.0.0.1", port))
    assert ports.free_port() == first  # after the range's last port, its first (or the first free)
