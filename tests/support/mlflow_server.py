"""A real MLflow tracking server for the tests (SQLite backend, a local artifacts folder, started as a
process of its own and stopped by its id), a TCP relay in front of it that a test can cut (MLflow
going away mid-run, as the client sees it, without restarting the server), and one machine of a team
registering into a shared registry and mirroring it to MLflow, as a tracked run does."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from pathlib import Path

from mnist_pipeline.core.support import settings
from support.servers import free_port, http_process
from support.training import register

MLFLOW = Path(sys.executable).parent / "mlflow"


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """`mlflow server` on a free port of 127.0.0.1, its store and artifacts in `folder`: its URL once
    /health answers (it takes several seconds to start). Its job runner is off: ~0.5 GB instead of 2.3."""
    port = free_port()
    log = folder / "mlflow-server.log"
    command = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with http_process(command, port, "/health", log, timeout=180, env=env) as url:
        yield url


class Relay:
    """A TCP relay on a free port of 127.0.0.1 to `target_port`; `cut()` closes it and every connection
    through it, so that the server behind it no longer answers (connection refused)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.cut_done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_done:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_done = True
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: close alone would not
        self.listener.close()
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            except OSError:
                pass


_machine = threading.local()


def machine_mirror() -> Path:
    """The mirror of the store that the machine this thread plays keeps (`register_then_sync`); patched over
    `store.cache_root`, it gives each thread a mirror of its own, as each machine of a team has."""
    mirror = getattr(_machine, "mirror", None)
    return mirror if mirror is not None else settings.cache_root()


def register_then_sync(registry_url: str, mirror: Path, runs: list, split, target, start) -> list[str]:
    """One machine of a team (a thread with the mirror `mirror`, see `machine_mirror`): for each run, wait at
    the barrier `start` for the other machines, register it, then sync MLflow as a tracked run does after
    registering. Returns the decisions, e.g. ["v0002 promoted", ...]."""
    from mnist_pipeline.core.registry import open_registry
    from mnist_pipeline.core.tracking.model_sync import sync_registry

    _machine.mirror = mirror
    registry, client = open_registry(registry_url), target.client()
    said = []
    try:
        for number, run in enumerate(runs, start=1):
            start.wait()
            decision = register(registry, run, split, flow_run_id=f"{mirror.name}-{number}")
            sync_registry(registry, target, client)
            said.append(f"{decision.candidate} {decision.verdict}")
    except BaseException:
        start.abort()  # the other machines stop waiting for this one (`results_of` reports this error)
        raise
    return said


def results_of(futures: list[Future], timeout: float) -> list:
    """The futures' results; if one failed, its error, before the BrokenBarrierError of those that were
    left waiting for it at a barrier."""
    errors = [error for future in futures if (error := future.exception(timeout=timeout)) is not None]
    for error in sorted(errors, key=lambda error: isinstance(error, threading.BrokenBarrierError)):
        raise error
    return [future.result() for future in futures]
