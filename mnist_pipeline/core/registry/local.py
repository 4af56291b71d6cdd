"""The registry's storage in a local folder, guarded by a file lock.

    registry/
      versions/v0001/   model.keras, metrics.json, predictions.npz, params.json, plots, model_card.md,
                        version.json, saved_model/
      production.json   {"version", "since", "reason"}: which version serves (replaced atomically)
      decisions.jsonl   one `DecisionRecord` per line: gate verdicts, promotions, rollbacks, repairs
      .lock             held by every operation that changes anything

A version folder is assembled under a temporary name (`versions/.staging-*`) and renamed into place,
so a version either exists whole or not at all. Under the lock nothing else writes, so the pointer's
token is not needed (`exclusive`): a registration found without its decision logged is one whose
process died, and the policy completes it.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

from mnist_pipeline.core.registry.backend import VERSION_PATTERN, Assemble, LogEntry, Pointer
from mnist_pipeline.core.registry.decisions import DecisionRecord, now_iso
from mnist_pipeline.core.support.files import append_line_durably, fsync_dir, write_json_atomic, write_text_atomic

STAGING_PREFIX = ".staging-"


class LocalBackend:
    exclusive = True

    def __init__(self, root: Path):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.production_file = self.root / "production.json"
        self.decision_log = self.root / "decisions.jsonl"
        self.location = str(self.root)
        self.pointer_location = str(self.production_file)
        self.log_location = str(self.decision_log)

    @functools.cached_property
    def lock(self) -> AbstractContextManager[object]:
        """The registry's file lock, made on first use: filelock imports asyncio (70 ms), which reading
        the registry (`predict`) never needs."""
        from filelock import FileLock

        return FileLock(self.root / ".lock")

    def transaction(self) -> AbstractContextManager[object]:
        return self.lock

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if VERSION_PATTERN.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def publish(self, assemble: Assemble, flow_run_id: str | None) -> str:
        """Assemble the next version folder under a temporary name, then rename it into place."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
        staging = self.versions_dir / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            assemble(staging, version)
            staging.rename(self.versions_dir / version)
            fsync_dir(self.versions_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def version_folder(self, version: str) -> Path:
        return self.versions_dir / version

    def version_file(self, version: str, name: str) -> Path:
        return self.versions_dir / version / name

    def add_files(self, version: str, files: dict[str, Path]) -> None:
        """Copy each file in under a temporary name, fsync it and link it into place (a link fails,
        rather than replaces, where the name is taken)."""
        folder = self.versions_dir / version
        for name, source in files.items():
            partial = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                shutil.copyfile(source, partial)
                with open(partial, "rb") as f:
                    os.fsync(f.fileno())
                os.link(partial, folder / name)
            finally:
                partial.unlink(missing_ok=True)
            fsync_dir(folder)

    def read_pointer(self) -> Pointer:
        try:
            data = self.production_file.read_bytes()
        except FileNotFoundError:
            return Pointer(None)
        return Pointer.parse(data)

    def write_pointer(self, version: str | None, reason: str, record: DecisionRecord, token: object) -> Pointer:
        """Replace production.json atomically (no production model: no file); the lock makes the token moot."""
        if version is None:
            self.production_file.unlink(missing_ok=True)
        else:
            write_json_atomic(self.production_file, {"version": version, "since": now_iso(), "reason": reason})
        return Pointer(version)

    def append_decision(self, record: DecisionRecord, pointer: Pointer) -> None:
        append_line_durably(self.decision_log, record.to_json())

    def decision_entries(self) -> list[LogEntry]:
        if not self.decision_log.exists():
            return []
        lines = self.decision_log.read_text().splitlines()
        return [
            LogEntry(f"Decision log {self.decision_log} line {number}", line, str(number))
            for number, line in enumerate(lines, start=1)
            if line.strip()
        ]

    def set_aside(self, damaged: list[LogEntry]) -> list[str]:
        """Rewrite the log without the damaged lines, the old file kept beside it."""
        dropped = {entry.key for entry in damaged}
        kept = [entry.text for entry in self.decision_entries() if entry.key not in dropped]
        backup = self.decision_log.with_name(f"{self.decision_log.name}.damaged-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(self.decision_log, backup)
        write_text_atomic(self.decision_log, "".join(line + "\n" for line in kept))
        return [f"dropped {len(damaged)} unreadable line(s) from {self.decision_log} (the old file is {backup})"]

    def leftovers(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return [str(path) for path in sorted(self.versions_dir.glob(f"{STAGING_PREFIX}*"))]

    def remove_leftover(self, leftover: str) -> None:
        shutil.rmtree(leftover, ignore_errors=True)
