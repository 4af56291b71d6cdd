"""Several service processes on one port: `mnist-pipeline serve --workers N`.

One interpreter serves about one core's worth of requests (its event loop lays out each picture and
writes each answer under the GIL), so on a machine with more cores, more processes serve more. The
parent binds the address, forks N workers that each build their own app (model, batcher, production
watcher) and listen on it, and waits. On Linux each worker listens on a socket of its own, bound with
SO_REUSEPORT, and the kernel spreads new connections over them: with one socket shared by every
worker, the worker woken first accepted whole bursts, and under `hey`'s 32 connections one worker was
seen holding nearly all of them while the other idled (bench/serve_results.md). Elsewhere the workers
share the parent's socket. SIGINT or SIGTERM is passed on to every worker,
which finishes its requests and stops; a worker that dies stops the others (the service exits,
rather than run on with less capacity than asked for).

Each worker follows production on its own, reading the pointer every `poll_seconds`: after a promote
or rollback, two workers may answer with different versions for at most one poll interval plus the
new model's load time, and every answer names the version that computed it. Metrics are one view
through prometheus_client's multiprocess mode (metrics.py): the CLI sets PROMETHEUS_MULTIPROC_DIR
before anything imports the client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from mnist_pipeline.serve.metrics import MULTIPROCESS_DIR

BALANCED = sys.platform == "linux"  # where SO_REUSEPORT spreads connections over the sockets bound with it


def run_workers(config: uvicorn.Config, build_app: Callable[[], Any], workers: int) -> int:
    """Serve `config`'s address from `workers` forked processes; returns the exit code."""
    # bound, not listening, the parent's socket holds the address until the workers have bound theirs
    sock = _bind_balanced(config) if BALANCED else config.bind_socket()  # SystemExit if not, having logged why
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own app, listening on its own socket (or the shared one)
            code = 0
            try:
                config.app = build_app()
                listener = _reuse_port_socket(config.host, sock.getsockname()[1]) if BALANCED else sock
                uvicorn.Server(config).run(sockets=[listener])
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code, running = 0, set(children)
    while running:
        pid, status = os.wait()
        running.discard(pid)
        _mark_dead(pid)
        if os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM, -signal.SIGINT):
            code = 1
            print(
                f"service worker {pid} died ({os.waitstatus_to_exitcode(status)}); stopping the others", file=sys.stderr
            )
            stop(0, None)
    sock.close()
    return code


def _bind_balanced(config: uvicorn.Config) -> socket.socket:
    """`config.bind_socket()` with SO_REUSEPORT set, which uvicorn does not set: exits as uvicorn does
    (the error logged) when the address cannot be bound, and logs where it serves."""
    logger = logging.getLogger("uvicorn.error")
    try:
        sock = _reuse_port_socket(config.host, config.port)
    except OSError as error:
        logger.error(error)
        sys.exit(STARTUP_FAILURE)
    host = f"[{config.host}]" if ":" in config.host else config.host
    logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", host, sock.getsockname()[1])
    return sock


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get(MULTIPROCESS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
