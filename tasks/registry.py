"""The model registry on disk: numbered versions, a production pointer and a decision log.

    registry/
      versions/v0001/   model.keras, metrics.json, params.json, plots, model_card.md, version.json
      production.json   which version serves (moved atomically)
      decisions.jsonl   one line per gate decision, manual promotion or rollback, append-only
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
from typing import Callable

from filelock import FileLock

from tasks.errors import PermanentError
from tasks.faults import crash_point
from tasks.files import append_line_durably, fsync_dir, sha256_file, write_json_atomic, write_text_atomic

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
REPAIR_COMMAND = "mnist-pipeline registry repair"
USER_VERSION_PATTERN = re.compile(r"^[vV]?(\d{1,9})$")


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


def version_name(text: str) -> str:
    """The version a user means by `3`, `v3` or `v0003`: `v0003`."""
    match = USER_VERSION_PATTERN.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise RegistryError(f"{text!r} is not a version; give its number: 3, v3 or v0003")
    return f"v{int(match.group(1)):04d}"


def action_of(logged: dict) -> str:
    """What a decision-log line records: register (the gate at registration), promote or rollback."""
    return logged.get("action", "register")  # lines written before manual actions existed


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

    def require(self, version: str) -> None:
        """Fail, listing the registered versions, unless `version` is one of them."""
        if version not in self.versions():
            known = ", ".join(self.versions()) or "none yet"
            raise RegistryError(f"No version {version} in the registry {self.root} (registered: {known}).")

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
                f"Production pointer {self.production_file} is unreadable ({error}). Run "
                f"`{REPAIR_COMMAND}` to rebuild it from the decision log."
            ) from error
        if not (self.version_dir(version) / "version.json").is_file():
            raise RegistryError(
                f"Production pointer {self.production_file} names {version}, which is not in "
                f"{self.versions_dir}. Restore that version, or run `{REPAIR_COMMAND}` to point "
                "production at the last promoted version that exists."
            )
        return version

    def find_candidate(self, model_sha256: str, source_run: str) -> str | None:
        """The version already registered from this run's model (a retried registration), if any."""
        for version in self.versions():
            record = self.read_version(version)
            if record.get("model_sha256") == model_sha256 and record.get("source_run") == source_run:
                return version
        return None

    def model_path(self, version: str) -> Path:
        """The version's `model.keras`, after checking it is the file that was registered."""
        path = self.version_dir(version) / "model.keras"
        expected = self.read_version(version).get("model_sha256")
        if not path.is_file() or sha256_file(path) != expected:
            raise RegistryError(
                f"Model file {path} is missing or is not the one registered as {version} (SHA-256 "
                f"{expected}); it will not be served. Restore the version folder from a backup, or "
                "promote another version with `mnist-pipeline registry promote N`."
            )
        return path

    def decisions(self) -> list[dict]:
        if not self.decision_log.exists():
            return []
        decisions = []
        for number, line in enumerate(self.decision_log.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                decisions.append(json.loads(line))
            except ValueError as error:
                raise RegistryError(
                    f"Decision log {self.decision_log} line {number} is not valid JSON ({error}): cut short "
                    f"or edited by hand. Run `{REPAIR_COMMAND}` (it drops that line and keeps a backup)."
                ) from error
        return decisions

    def production_history(self) -> list[str]:
        """The versions production has moved to, oldest first, with rolled-back ones taken off:
        the last is production, the one before it is where a rollback goes."""
        history: list[str] = []
        for logged in self.decisions():
            action = action_of(logged)
            if action == "rollback" and history:
                history.pop()
            elif logged["promoted"]:
                history.append(logged["candidate"])
        return history

    def statuses(self) -> dict[str, str]:
        """Each version's status: promoted or rejected by its last decision, or rolled back."""
        status = {version: self.read_version(version)["status"] for version in self.versions()}
        for logged in self.decisions():
            action = action_of(logged)
            if action == "rollback":
                status[logged["previous"]] = "rolled back"
            elif action == "register" or logged["promoted"]:  # a refused manual promotion changes nothing
                status[logged["candidate"]] = logged["verdict"]
        return status

    # Writing (callers hold self.lock) ------------------------------------------------------------

    def add_version(self, files: dict[str, Path], texts: dict[str, str], record: dict,
                    build: Callable[[Path], None] | None = None) -> str:
        """Copy `files` and write `texts` into the next version folder; returns its name.

        `build(folder)` adds what is made rather than copied (the SavedModel export) before the
        folder is renamed into place.
        """
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
            if build is not None:
                build(staging)
            write_json_atomic(staging / "version.json", {**record, "version": version})
            for path in staging.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
            crash_point("register:staged")
            staging.rename(self.versions_dir / version)
            fsync_dir(self.versions_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def set_production(self, version: str, reason: str) -> None:
        write_json_atomic(self.production_file, {"version": version, "since": now_iso(), "reason": reason})

    def apply_decision(self, decision: Decision) -> None:
        """Move production (if promoted) and log the decision, unless this was done already."""
        if any(action_of(logged) == "register" and logged["candidate"] == decision.candidate
               for logged in self.decisions()):
            return
        if decision.promoted:
            self.set_production(decision.candidate, decision.reason)
        self.log_decision(decision)

    def pending_decisions(self) -> list[Decision]:
        """Registrations whose process died after adding the version, before logging its decision."""
        logged = {entry["candidate"] for entry in self.decisions() if action_of(entry) == "register"}
        return [Decision(candidate=version, **self.read_version(version)["decision"])
                for version in self.versions() if version not in logged]

    def complete_pending(self) -> list[Decision]:
        """Apply pending decisions, oldest first. Each was made under the lock against the production
        model of its time, which nothing has moved since (every mutation completes them first)."""
        pending = self.pending_decisions()
        for decision in pending:
            self.apply_decision(decision)
        return pending

    def log_decision(self, decision: Decision) -> None:
        append_line_durably(self.decision_log, json.dumps(
            {"action": "register", **asdict(decision), "verdict": decision.verdict}))

    # Manual changes (each holds self.lock) --------------------------------------------------------

    def promote(self, version: str, who: str, why: str, decide: Callable[[str, str | None], dict]) -> dict:
        """Make `version` production if `decide(version, production)` says so; log the decision either way.

        `decide` returns the decision's fields: at least `promoted` and `reason` (see
        `tasks.promotion`, which applies the registration gate). Returns the logged line.
        """
        with self.lock:
            self.complete_pending()
            self.require(version)
            self.model_path(version)  # a damaged model is never made production, not even forced
            current = self.production()
            if version == current:
                raise RegistryError(f"{version} is already the production model; nothing to promote")
            decision = decide(version, current)
            entry = {"action": "promote", "candidate": version, "previous": current, **decision,
                     "verdict": "promoted" if decision["promoted"] else "rejected",
                     "who": who, "why": why, "time": now_iso()}
            if entry["promoted"]:
                self.set_production(version, f"promoted by {who}: {why}")
            append_line_durably(self.decision_log, json.dumps(entry))
        return entry

    def rollback(self, who: str, why: str) -> dict:
        """Move production back to the version that was production before it; returns the logged line."""
        with self.lock:
            self.complete_pending()
            current, history = self.production(), self.production_history()
            if current is None:
                raise RegistryError("There is no production model to roll back.")
            if not history or history[-1] != current:
                raise RegistryError(
                    f"Production pointer {self.production_file} names {current}, but the decision log "
                    f"{self.decision_log} says {history[-1] if history else 'none'}; was one edited by hand? "
                    "Fix the pointer, or set production explicitly with `registry promote N --force`."
                )
            if len(history) < 2:
                raise RegistryError(f"{current} is the first production model; there is no earlier one to roll back to.")
            previous = history[-2]
            self.model_path(previous)
            entry = {"action": "rollback", "candidate": previous, "previous": current, "promoted": True,
                     "verdict": "rolled back", "reason": f"production rolled back from {current} to {previous}",
                     "who": who, "why": why, "time": now_iso()}
            self.set_production(previous, f"rolled back from {current} by {who}: {why}")
            append_line_durably(self.decision_log, json.dumps(entry))
        return entry

    # Checking and repairing --------------------------------------------------------------------

    def check(self) -> list[str]:
        """Every inconsistency found, each naming the file and what to do; empty when all is well."""
        problems = [f"{path}: left by an interrupted registration; `{REPAIR_COMMAND}` removes it"
                    for path in self._leftovers()]
        for version in self.versions():
            try:
                self.model_path(version)
            except RegistryError as error:
                problems.append(str(error))
        try:
            pending = self.pending_decisions()
            history = self.production_history()
        except RegistryError as error:
            return problems + [str(error)]
        problems += [f"{self.version_dir(d.candidate)}: registered but its decision ({d.verdict}) was never "
                     f"applied (the process died); `{REPAIR_COMMAND}` applies it" for d in pending]
        try:
            production = self.production()
        except RegistryError as error:
            return problems + [str(error)]
        if history and production != history[-1]:
            problems.append(f"Production pointer {self.production_file} names {production}, but the decision "
                            f"log says {history[-1]}; `{REPAIR_COMMAND}` follows the log")
        return problems

    def repair(self) -> list[str]:
        """Bring the registry back to a consistent state from its version folders and decision log;
        returns what was done. Version folders themselves are never changed or removed."""
        done = []
        with self.lock:
            for path in self._leftovers():
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path}")
            done += self._drop_damaged_log_lines()
            done += [f"applied the decision on {d.candidate} ({d.verdict})" for d in self.complete_pending()]
            done += self._rebuild_production_pointer()
        return done

    def _leftovers(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(self.versions_dir.glob(".staging-*"))

    def _drop_damaged_log_lines(self) -> list[str]:
        if not self.decision_log.exists():
            return []
        lines = self.decision_log.read_text().splitlines()
        kept = []
        for line in filter(str.strip, lines):
            try:
                json.loads(line)
                kept.append(line)
            except ValueError:
                pass
        dropped = len([line for line in lines if line.strip()]) - len(kept)
        if not dropped:
            return []
        backup = self.decision_log.with_name(f"{self.decision_log.name}.damaged-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(self.decision_log, backup)
        write_text_atomic(self.decision_log, "".join(line + "\n" for line in kept))
        return [f"dropped {dropped} unreadable line(s) from {self.decision_log} (the old file is {backup})"]

    def _rebuild_production_pointer(self) -> list[str]:
        """Point production at the newest version the log made production that is still whole."""
        try:
            current = self.production()
        except RegistryError:
            current = None
        history = self.production_history()
        if not history and current is not None:  # no log to follow: keep a pointer whose model is whole
            try:
                self.model_path(current)
                return []
            except RegistryError:
                pass
        for version in reversed(history):
            try:
                self.model_path(version)
            except RegistryError:
                continue
            if version == current:
                return []
            self.set_production(version, "rebuilt from the decision log by registry repair")
            self._log_repair(version, f"production pointer rebuilt from the decision log: {version}")
            return [f"production pointer set to {version}, as the decision log says"]
        if self.production_file.exists():
            self.production_file.unlink()
            self._log_repair(None, "production pointer removed: no promoted version is whole")
            return [f"removed {self.production_file}: no promoted version is whole"]
        return []

    def _log_repair(self, version: str | None, reason: str) -> None:
        # "promoted": False keeps repairs out of production_history and statuses.
        append_line_durably(self.decision_log, json.dumps(
            {"action": "repair", "candidate": version, "promoted": False, "verdict": "repaired",
             "reason": reason, "time": now_iso()}))
