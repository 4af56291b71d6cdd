"""Waiting for what settles in its own time: read again and again, up to a deadline (never a retry of a test)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 60, interval: float = 0.5) -> T:
    """`read()` again and again until `done` holds for what it returns; that value (or, at the
    deadline, an AssertionError with the last one). Task-run states, logs and artifacts reach the
    Prefect server as events and in batches, after the flow run already shows its final state."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not settled after {timeout:.0f} s: {value!r}")
        time.sleep(interval)
