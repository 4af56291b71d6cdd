"""The model registry on disk: numbered versions, a production pointer and a decision log.

    registry/
      versions/v0001/   model.keras, metrics.json, params.json, plots, model_card.md, version.json
      production.json   which version serves (moved atomically)
      decisions.jsonl   one line per gate decision, append-only
      .lock             held while a version is allocated or production moves

A version folder is assembled under a temporary name and renamed into place, so a version either
exists whole or not at all. All mutations hold the lock, so concurrent runs cannot interleave.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from tasks.errors import PermanentError
from tasks.files import append_line_durably, fsync_dir, write_json_atomic

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")


class RegistryError(PermanentError):
    pass


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one candidate, as appended to the decision log."""

    candidate: str
    candidate_accuracy: float
    champion: str | None
    champion_accuracy: float | None
    threshold: float
    promoted: bool
    reason: str
    time: str
    flow_run_id: str | None

    @property
    def verdict(self) -> str:
        return "promoted" if self.promoted else "rejected"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.production_file = self.root / "production.json"
        self.decision_log = self.root / "decisions.jsonl"
        self.lock = FileLock(self.root / ".lock")

    # Reading -----------------------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version):
            raise RegistryError(f"{version!r} is not a version name; versions look like v0001")
        return self.versions_dir / version

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if VERSION_PATTERN.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def read_version(self, version: str) -> dict:
        path = self.version_dir(version) / "version.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise RegistryError(f"Registry file {path} is unreadable ({error}).") from error

    def production(self) -> str | None:
        """The production version's name, or None before the first promotion."""
        if not self.production_file.exists():
            return None
        try:
            version = json.loads(self.production_file.read_text())["version"]
            self.version_dir(version)
        except (OSError, ValueError, KeyError, TypeError, RegistryError) as error:
            raise RegistryError(
                f"Production pointer {self.production_file} is unreadable ({error}). Restore it or "
                "delete it (the next promoted model becomes production)."
            ) from error
        if not (self.version_dir(version) / "version.json").is_file():
            raise RegistryError(
                f"Production pointer {self.production_file} names {version}, which is not in "
                f"{self.versions_dir}. Restore that version or delete the pointer."
            )
        return version

    def find_by_model(self, model_sha256: str) -> str | None:
        for version in self.versions():
            if self.read_version(version).get("model_sha256") == model_sha256:
                return version
        return None

    def decisions(self) -> list[dict]:
        if not self.decision_log.exists():
            return []
        return [json.loads(line) for line in self.decision_log.read_text().splitlines() if line.strip()]

    # Writing (callers hold self.lock) ------------------------------------------------------------

    def add_version(self, files: dict[str, Path], texts: dict[str, str], record: dict) -> str:
        """Copy `files` and write `texts` into the next version folder; returns its name."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
        staging = self.versions_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            for name, source in files.items():
                shutil.copyfile(source, staging / name)
            for name, text in texts.items():
                (staging / name).write_text(text)
            write_json_atomic(staging / "version.json", {**record, "version": version})
            for path in staging.iterdir():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            staging.rename(self.versions_dir / version)
            fsync_dir(self.versions_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def set_production(self, version: str, reason: str) -> None:
        write_json_atomic(self.production_file, {"version": version, "since": now_iso(), "reason": reason})

    def apply_decision(self, decision: Decision) -> None:
        """Move production (if promoted) and log the decision, unless this was done already."""
        if any(logged["candidate"] == decision.candidate for logged in self.decisions()):
            return
        if decision.promoted:
            self.set_production(decision.candidate, decision.reason)
        self.log_decision(decision)

    def log_decision(self, decision: Decision) -> None:
        append_line_durably(self.decision_log, json.dumps({**asdict(decision), "verdict": decision.verdict}))
