"""The model registry in an S3-compatible store, shared by every machine of a team, without locks.

    <registry URL>/
      versions/v0001/.claim        create-only: which registration took the number
      versions/v0001/...           the version's files, uploaded before
      versions/v0001/version.json  create-only, last: the version exists once this does
      production.json              the pointer: version, sequence number, and the decision that moved it
      decisions/<seq>-<...>.json   one object per decision (object stores cannot append)

The guarantees of the local registry come from conditional writes instead of a file lock:
- A version number is taken by a create-only write (`If-None-Match: *`) of its `.claim`; a second
  registration racing for it gets the next number. Readers list only versions whose `version.json`
  (written last, create-only) exists, so they never see a half-written version.
- Production moves by compare-and-swap (`If-Match` on the pointer's ETag). A registration that loses
  the race re-reads production and applies the gate again against the new production model, so
  two registrations racing give two versions and production is the better one that passed.
- The pointer carries the decision that moved it and a sequence number; the decision is then
  logged under that number, create-only, so a process that dies between the two leaves a gap the
  next operation fills, and the log's order is production's order.

Versions never change once written: this machine keeps a mirror of the ones it reads
(core/storage/store.py), and only the pointer and the log are read from the store each time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from mnist_pipeline.core.storage import store
from mnist_pipeline.core.registry.decisions import DecisionRecord, now_iso
from mnist_pipeline.core.evaluation.gate import gate
from mnist_pipeline.core.registry.registry import (
    REPAIR_COMMAND, VERSION_PATTERN, Registry, RegistryError, _production_accuracy, _read_json, assemble_version,
)

MAX_SWAPS = 20  # production moved this often while one operation tried: something is wrong
STALE_CLAIM_SECONDS = 15 * 60  # a claim without its version this old was left by a dead registration


class SharedRegistry(Registry):
    def __init__(self, url: str, splits_dir: Path | None = None):
        super().__init__(store.local_path(url), splits_dir)
        self.url = url.rstrip("/")
        self.location = self.url
        self.store = store.ObjectStore.for_url(self.url)
        self.production_file = f"{self.url}/production.json"
        self.decision_log = f"{self.url}/decisions/"
        self.lock = contextlib.nullcontext()
        self._pointer: dict | None = None  # the pointer as last read, and its ETag
        self._pointer_etag: str | None = None

    # Reading -----------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        found = self.store.glob(f"{self.url}/versions/*/version.json")
        names = [url.split("/")[-2] for url in found]
        return sorted((name for name in names if VERSION_PATTERN.match(name)), key=lambda name: int(name[1:]))

    def version_dir(self, version: str) -> Path:
        """The version's folder in this machine's mirror, downloaded whole the first time."""
        folder = super().version_dir(version)
        mirrored = _mirrored_marker(folder)
        if not mirrored.is_file():
            url = f"{self.url}/versions/{version}"
            if not self.store.exists(f"{url}/version.json"):
                return folder
            for object_url in self.store.find(url):
                target = self._mirrored(object_url)
                if not target.exists() and not object_url.endswith("/.claim"):
                    self.store.download(object_url, target)
            mirrored.touch()
        return folder

    def read_json(self, version: str, name: str) -> dict:
        path = self._mirrored(f"{self.url}/versions/{version}/{name}")
        if not path.is_file():
            try:
                self.store.download(f"{self.url}/versions/{version}/{name}", path)
            except FileNotFoundError as error:
                raise RegistryError(f"Registry file {self.url}/versions/{version}/{name} is missing.") from error
        return _read_json(path)

    def _mirrored(self, url: str) -> Path:
        """Where this registry's mirror keeps the object at `url`."""
        return self.root / url[len(self.url) + 1:]

    def _read_pointer(self) -> dict | None:
        tagged = self.store.read_tagged(self.production_file)
        if tagged is None:
            self._pointer, self._pointer_etag = None, None
            return None
        data, self._pointer_etag = tagged
        try:
            self._pointer = json.loads(data)
            self._pointer["sequence"] = int(self._pointer.get("sequence", 0))
        except (ValueError, TypeError, AttributeError) as error:
            self._pointer = None
            raise RegistryError(f"Production pointer {self.production_file} is unreadable ({error}). Run "
                                f"`{REPAIR_COMMAND}` to rebuild it from the decision log.") from error
        return self._pointer

    def production(self) -> str | None:
        pointer = self._read_pointer()
        version = pointer and pointer.get("version")
        if not version:
            return None
        if not VERSION_PATTERN.match(str(version)) or not self.store.exists(f"{self.url}/versions/{version}/version.json"):
            raise RegistryError(
                f"Production pointer {self.production_file} names {version}, which is not in {self.url}/versions. "
                f"Restore that version, or run `{REPAIR_COMMAND}` to point production at the last promoted "
                "version that exists.")
        return version

    def decisions(self) -> list[DecisionRecord]:
        records = []
        for url in sorted(self.store.glob(f"{self.decision_log}*.json")):
            path = self._mirrored(url)  # a decision never changes once written: read it once
            if not path.exists():
                self.store.download(url, path)
            try:
                records.append(DecisionRecord.from_json(path.read_text()))
            except (ValueError, KeyError, TypeError) as error:
                raise RegistryError(
                    f"Decision {url} is not a decision record ({error}). Run `{REPAIR_COMMAND}` (it moves it "
                    "aside and keeps a copy).") from error
        return records

    # Changing: every production move is a compare-and-swap, retried after re-reading ----------

    def promote(self, version: str, who: str, why: str, *, force: bool = False, **settings) -> DecisionRecord:
        return self._retrying(lambda: super(SharedRegistry, self).promote(version, who, why, force=force, **settings))

    def rollback(self, who: str, why: str) -> DecisionRecord:
        return self._retrying(lambda: super(SharedRegistry, self).rollback(who, why))

    def _retrying(self, operation):
        for _ in range(MAX_SWAPS):
            try:
                return operation()
            except store.Conflict:
                continue  # production moved meanwhile: decide again on what it is now
        raise RegistryError(f"Production in {self.url} moved {MAX_SWAPS} times while this operation tried to "
                            "change it; try again.")

    def _apply(self, record: DecisionRecord) -> DecisionRecord:
        """Apply a registration's decision once: if production moved since the gate was applied, apply
        it again against the production model of now, then compare-and-swap; on a conflict, again."""
        for _ in range(MAX_SWAPS):
            for logged in self.decisions():
                if logged.action == "register" and logged.candidate == record.candidate:
                    return logged
            current = self.production()
            moved_by = (self._pointer or {}).get("decision") or {}
            if moved_by.get("action") == "register" and moved_by.get("candidate") == record.candidate:
                self._complete_pending()  # this registration moved production; its log entry is missing
                continue
            if current != record.production_before:
                record = self._gate_again(record)
            try:
                if record.promoted:
                    self._set_production(record.candidate, record.reason, record)
                self._log(record)
                return record
            except store.Conflict:
                continue
        raise RegistryError(f"Production in {self.url} moved {MAX_SWAPS} times while {record.candidate} was being "
                            f"registered; `{REPAIR_COMMAND}` applies its decision.")

    def _gate_again(self, record: DecisionRecord) -> DecisionRecord:
        """`record`'s registration decided again against today's production model."""
        version = record.candidate
        metrics = self.read_json(version, "metrics.json")
        split = lambda: self._split_of(version)  # noqa: E731 (needed only to re-test a model)
        candidate = self._scored(version, metrics["test_split_sha256"], split)
        champion = self._champion(metrics["test_split_sha256"], split)
        verdict = gate(candidate, champion, self._registered_settings(version))
        return replace(record, production_before=champion.version if champion else None, promoted=verdict.promoted,
                       reason=verdict.reason, time=now_iso(), champion_accuracy=_production_accuracy(verdict),
                       **verdict.record_fields())

    def _set_production(self, version: str | None, reason: str, record: DecisionRecord) -> None:
        """Compare-and-swap the pointer from the one last read; raises `store.Conflict` if it changed."""
        logged = [int(url.rsplit("/", 1)[1].split("-", 1)[0]) for url in self.store.glob(f"{self.decision_log}*.json")]
        sequence = max([(self._pointer or {}).get("sequence", 0), *logged]) + 1
        pointer = {"version": version, "since": now_iso(), "reason": reason, "sequence": sequence,
                   "decision": record.to_dict()}
        self.store.swap(self.production_file, json.dumps(pointer, indent=2, sort_keys=True).encode(),
                        self._pointer_etag)
        self._pointer, self._pointer_etag = pointer, None  # the next write must read it again

    def _remove_production(self) -> None:
        pass  # `_log_repair` writes a pointer naming no version

    def _pointer_exists(self) -> bool:
        """True if the pointer names a version, or is unreadable."""
        try:
            return bool((self._read_pointer() or {}).get("version"))
        except RegistryError:
            return True

    def _log_repair(self, version: str | None, before: str | None, reason: str, pointer_reason: str = "") -> None:
        if version is None and pointer_reason == "":  # "production pointer removed"
            pointer_reason = reason
        super()._log_repair(version, before, reason, pointer_reason)

    def _log(self, record: DecisionRecord) -> None:
        """Write the decision as its own object, named so that the log's order is production's order:
        a decision that moved the pointer goes under the pointer's sequence number, create-only (so
        completing it twice writes it once); any other after it."""
        pointer = self._pointer if self._pointer is not None else (self._read_pointer() or {})
        sequence = pointer.get("sequence", 0)
        if json.dumps(pointer.get("decision"), sort_keys=True) == json.dumps(record.to_dict(), sort_keys=True):
            name = f"{sequence:08d}-0-{record.action}-{record.candidate}"
        else:
            name = f"{sequence:08d}-1-{record.time}-{record.action}-{uuid.uuid4().hex[:8]}"
        try:
            self.store.create(f"{self.decision_log}{name}.json", (record.to_json() + "\n").encode())
        except store.AlreadyExists:
            pass

    def _complete_pending(self) -> list[DecisionRecord]:
        """Log the decision that last moved production, if its process died before logging it.
        Registrations of other processes are not completed here: one may be running right now (its
        own retry completes it, or `registry repair`)."""
        pointer = self._read_pointer()
        moved_by = pointer and pointer.get("decision")
        if moved_by:
            record = DecisionRecord.from_dict(moved_by)
            name = f"{pointer['sequence']:08d}-0-{record.action}-{record.candidate}.json"
            if not self.store.exists(f"{self.decision_log}{name}"):
                self._log(record)
                return [record]
        return []

    def repair(self) -> list[str]:
        """The local registry's repair, then the registrations whose process died are completed."""
        done = super().repair()
        for record in self._pending():
            applied = self._apply(record)
            done.append(f"applied the decision on {applied.candidate} ({applied.verdict})")
        return done

    # Versions ----------------------------------------------------------------------------------

    def _write_version(self, files: dict[str, Path], texts: dict[str, str], record: dict,
                       decision: DecisionRecord, model_path: str) -> str:
        """Take the next free number by a create-only claim, upload the files, then `version.json`."""
        claimed = [url.split("/")[-2] for url in self.store.glob(f"{self.url}/versions/*/.claim")]
        number = max((int(name[1:]) for name in claimed if VERSION_PATTERN.match(name)), default=0) + 1
        claim = json.dumps({"flow_run_id": record.get("flow_run_id"), "time": now_iso()}).encode()
        while True:
            version = f"v{number:04d}"
            try:
                self.store.create(f"{self.url}/versions/{version}/.claim", claim)
                break
            except store.AlreadyExists:
                number += 1
        staging = self.root / ".staging" / f"{version}-{uuid.uuid4().hex[:8]}"
        try:
            assemble_version(staging, version, files, texts, record, decision, model_path)
            uploads = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == "version.json")
            try:
                for path in uploads[:-1]:
                    self.store.upload(path, f"{self.url}/versions/{version}/{path.relative_to(staging).as_posix()}")
                self.store.create(f"{self.url}/versions/{version}/version.json", uploads[-1].read_bytes())
            except Exception:  # no version.json: readers never saw it; give the number back if the store lets us
                with contextlib.suppress(Exception):
                    self.store.delete(f"{self.url}/versions/{version}")
                raise
            target = self.versions_dir / version
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
            _mirrored_marker(target).touch()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def _leftovers(self) -> list[str]:
        """Claims older than `STALE_CLAIM_SECONDS` whose version was never written."""
        found = []
        for url in self.store.glob(f"{self.url}/versions/*/.claim"):
            folder = url.rsplit("/", 1)[0]
            if self.store.exists(f"{folder}/version.json"):
                continue
            claimed = json.loads(self.store.read(url)).get("time", "")
            age = time.time() - datetime.fromisoformat(claimed).replace(tzinfo=timezone.utc).timestamp() if claimed else 0
            if age > STALE_CLAIM_SECONDS:
                found.append(folder)
        return found

    def _drop_damaged_log_lines(self) -> list[str]:
        done = []
        for url in sorted(self.store.glob(f"{self.decision_log}*.json")):
            data = self.store.read(url)
            try:
                DecisionRecord.from_json(data.decode())
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                backup = f"{self.url}/damaged/{url.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}"
                self.store.write(backup, data)
                self.store.delete(url)
                self._mirrored(url).unlink(missing_ok=True)
                done.append(f"moved the unreadable decision {url} to {backup}")
        return done

    def _remove_leftover(self, url: str) -> None:
        self.store.delete(url)


def _mirrored_marker(folder: Path) -> Path:
    """Beside a version's mirrored folder: present once all its files are there (single files, such as
    its version.json, are mirrored on their own before)."""
    return folder.with_name(f".{folder.name}.mirrored")
