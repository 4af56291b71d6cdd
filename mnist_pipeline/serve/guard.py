"""Who may write corrections, and how fast: a bearer token and a per-client rate limit.

Corrections are the one thing the service writes, and they become training data once reviewed: a
stranger who can post them freely can flood the review queue. So the service requires a token for
`POST /v1/corrections` whenever it listens on anything but loopback (`mnist-pipeline serve` refuses
to start there without one unless told `--allow-anonymous-corrections`), and limits how many
corrections each client address may send a minute (a token bucket: a burst of `per_minute`, then one
every 60/per_minute seconds), answering 429 with `Retry-After`. On loopback with no token configured,
nothing is asked: the page works as before.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import threading
import time
from pathlib import Path

from fastapi import HTTPException, Request

from mnist_pipeline.core.support import settings
from mnist_pipeline.core.support.errors import PipelineError

MAX_CLIENTS = 10_000  # buckets kept at once; full ones are dropped first


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_token(token_file: str | None) -> str | None:
    """The corrections token: the first line of `token_file`, else $MNIST_CORRECTIONS_TOKEN, else None.
    Never from the command line, where every user of the machine can read it in the process list."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            lines = path.read_text().strip().splitlines()
        except OSError as error:
            raise PipelineError(f"cannot read the corrections token file {path}: {error}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise PipelineError(f"the corrections token file {path} is empty: put the token on its first line")
        return token
    return settings.read(settings.CORRECTIONS_TOKEN)


class TokenGuard:
    """Checks `Authorization: Bearer <token>` when a token is set; lets everything through otherwise."""

    def __init__(self, token: str | None):
        self.token = token

    def check(self, request: Request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPException(
                401,
                "this service needs a token to store corrections: send it as `Authorization: Bearer <token>` "
                "(ask whoever runs the service)",
                headers={"WWW-Authenticate": "Bearer"},
            )


class RateLimiter:
    """A token bucket per client address: `per_minute` at once, refilled at `per_minute` a minute."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for `client`, or raise 429 saying when to try again."""
        now = self.clock()
        with self._lock:
            tokens, when = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.rate)
            if tokens < 1:
                wait = math.ceil((1 - tokens) / self.rate)
                self._buckets[client] = (tokens, now)
                raise HTTPException(
                    429,
                    f"too many corrections from {client}: at most {self.capacity:g} a minute; try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        for client, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * self.rate >= self.capacity:
                del self._buckets[client]
