"""What the registry's policy (registry.py) asks of a storage backend: storage primitives only.

A backend decides nothing about models: it lists, publishes and reads versions, reads the production
pointer with a token and writes it only while that token still holds, appends and reads decisions,
and finds and removes what an interrupted registration left. Everything that decides (the gate,
identical models, completing a half-done registration, retrying a refused swap) is the policy's,
written once for every backend. Two exist: a local folder (local.py) and an S3-compatible store
(object_store.py).

This module holds what both sides share: the protocol, the pointer as read, and the error type, so
that neither backend imports the policy and the policy imports neither backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.support.errors import PermanentError

REPAIR_COMMAND = "mnist-pipeline registry repair"
VERSION_PATTERN = re.compile(r"^v(\d{4,})$")


class RegistryError(PermanentError):
    pass


@dataclass(frozen=True)
class Pointer:
    """The production pointer as read: the version it names (None: no production model), the token a
    conditional write of it needs, and, in the store, its sequence number and the decision that moved
    it. `problem` says why the stored pointer could not be read (then `version` is None)."""

    version: str | None
    token: object = None
    sequence: int = 0
    decision: dict[str, Any] | None = None
    problem: str | None = None

    @classmethod
    def parse(cls, data: bytes | None, token: object = None) -> Pointer:
        """The pointer stored as `data` (None: there is none)."""
        if data is None:
            return cls(None, token)
        try:
            content = json.loads(data)
            version = content["version"]
            if version is not None and not isinstance(version, str):
                raise TypeError(f"version {version!r} is not a name")
            return cls(version, token, int(content.get("sequence", 0)), content.get("decision"))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            return cls(None, token, problem=str(error) or type(error).__name__)


@dataclass(frozen=True)
class LogEntry:
    """One stored decision: how messages name it, its text, and what the backend finds it by."""

    where: str
    text: str
    key: str


Assemble = Callable[[Path, str], None]
"""Writes a version's files into a new local folder, given the version's name."""


class Backend(Protocol):
    location: str  # how messages name the registry
    pointer_location: str  # how messages name the production pointer
    log_location: str  # how messages name the decision log
    exclusive: bool  # True: a transaction keeps every other writer out (no registration can be running)

    def transaction(self) -> AbstractContextManager[object]:
        """Held around every change: a file lock, or nothing where conditional writes keep order."""
        ...

    def versions(self) -> list[str]:
        """The published versions' names, oldest first."""
        ...

    def publish(self, assemble: Assemble, flow_run_id: str | None) -> str:
        """Take the next version number, have `assemble` write the files, publish them whole; returns
        the name. A publish that fails leaves no version and gives its number back where it can."""
        ...

    def version_folder(self, version: str) -> Path:
        """A local folder holding the version's files (mirrored whole first, where they are remote)."""
        ...

    def version_file(self, version: str, name: str) -> Path:
        """A local path of one of the version's files; raises FileNotFoundError if it has none."""
        ...

    def add_files(self, version: str, files: dict[str, Path]) -> None:
        """Add new files to a published version, in the order given, each create-only: the version's
        existing files never change (a version converted after it was registered gains its light model)."""
        ...

    def read_pointer(self) -> Pointer: ...

    def write_pointer(self, version: str | None, reason: str, record: DecisionRecord, token: object) -> Pointer:
        """Point production at `version` (None: at nothing) as `record` decided, if the pointer is still
        the one read with `token`; else raise `store.Conflict`. Returns the pointer written."""
        ...

    def append_decision(self, record: DecisionRecord, pointer: Pointer) -> None:
        """Log `record`; `pointer` is production's pointer now (written by `record`, or read before)."""
        ...

    def decision_entries(self) -> list[LogEntry]:
        """The stored decisions, in the log's order."""
        ...

    def set_aside(self, damaged: list[LogEntry]) -> list[str]:
        """Take damaged decisions out of the log, keeping a copy; returns what was done."""
        ...

    def leftovers(self) -> list[str]:
        """What interrupted registrations left (never a published version)."""
        ...

    def remove_leftover(self, leftover: str) -> None: ...
