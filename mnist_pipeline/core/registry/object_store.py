"""The registry's storage in an S3-compatible store, shared by every machine of a team, without locks.

    <registry URL>/
      versions/v0001/.claim        create-only: which registration took the number
      versions/v0001/...           the version's files, uploaded before
      versions/v0001/version.json  create-only, last: the version exists once this does
      production.json              the pointer: version, since, reason, sequence number, and the decision
                                   that moved it
      decisions/<seq>-<...>.json   one object per decision (object stores cannot append)
      damaged/                     decisions set aside by `registry repair`

The guarantees of the local folder's lock come from conditional writes instead:
- A version number is taken by a create-only write (`If-None-Match: *`) of its `.claim`; a second
  registration racing for it gets the next number. Readers list only versions whose `version.json`
  (written last, create-only) exists, so they never see a half-written version.
- Production moves by compare-and-swap (`If-Match` on the pointer's ETag, create-only while there is
  none). The policy (registry.py) re-reads production when a swap is refused and applies the gate again.
- The pointer carries the decision that moved it and a sequence number; the decision is then logged
  under that number, create-only, so a process that dies between the two leaves a gap the next
  operation fills, and the log's order is production's order. Any other decision is named after it.

Nothing keeps other writers out (`exclusive` is False): a version without its decision logged may be
one another machine is registering right now, so only `registry repair` completes those.

Versions never change once written: this machine keeps a mirror of the ones it reads
(core/storage/store.py), and only the pointer and the list of decisions are read from the store each time.
URLs stay strings here; what the policy reads is a local path in the mirror.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from mnist_pipeline.core.registry.backend import VERSION_PATTERN, Assemble, LogEntry, Pointer
from mnist_pipeline.core.registry.decisions import DecisionRecord, now_iso
from mnist_pipeline.core.storage import store

STALE_CLAIM_SECONDS = 15 * 60  # a claim without its version this old was left by a dead registration


@dataclass(frozen=True)
class _Tag:
    """The token of a pointer read from the store: its ETag (None: there was no pointer)."""

    etag: str | None
    sequence: int = 0


class ObjectStoreBackend:
    exclusive = False

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.store = store.ObjectStore.for_url(self.url)
        self.mirror = store.local_path(self.url)
        self.location = self.url
        self.pointer_location = f"{self.url}/production.json"
        self.log_location = f"{self.url}/decisions/"

    def transaction(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def _mirrored(self, url: str) -> Path:
        """Where this machine's mirror keeps the object at `url`."""
        return self.mirror / url[len(self.url) + 1 :]

    # Versions ----------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        names = [url.split("/")[-2] for url in self.store.glob(f"{self.url}/versions/*/version.json")]
        return sorted((name for name in names if VERSION_PATTERN.match(name)), key=lambda name: int(name[1:]))

    def publish(self, assemble: Assemble, flow_run_id: str | None) -> str:
        """Take the next free number by a create-only claim, upload the files, then `version.json`."""
        version = self._claim(flow_run_id)
        staging = self.mirror / ".staging" / f"{version}-{uuid.uuid4().hex[:8]}"
        try:
            assemble(staging, version)
            uploads = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == "version.json")
            try:
                for path in uploads[:-1]:
                    self.store.upload(path, f"{self.url}/versions/{version}/{path.relative_to(staging).as_posix()}")
                self.store.create(f"{self.url}/versions/{version}/version.json", uploads[-1].read_bytes())
            except Exception:  # no version.json: readers never saw it; give the number back if the store lets us
                with contextlib.suppress(Exception):
                    self.store.delete(f"{self.url}/versions/{version}")
                raise
            target = self.mirror / "versions" / version
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
            _mirrored_marker(target).touch()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def _claim(self, flow_run_id: str | None) -> str:
        claimed = [url.split("/")[-2] for url in self.store.glob(f"{self.url}/versions/*/.claim")]
        number = max((int(name[1:]) for name in claimed if VERSION_PATTERN.match(name)), default=0) + 1
        claim = json.dumps({"flow_run_id": flow_run_id, "time": now_iso()}).encode()
        while True:
            version = f"v{number:04d}"
            try:
                self.store.create(f"{self.url}/versions/{version}/.claim", claim)
                return version
            except store.AlreadyExists:
                number += 1

    def version_folder(self, version: str) -> Path:
        """The version's folder in this machine's mirror, downloaded whole the first time."""
        folder = self.mirror / "versions" / version
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

    def version_file(self, version: str, name: str) -> Path:
        url = f"{self.url}/versions/{version}/{name}"
        path = self._mirrored(url)
        if not path.is_file():
            self.store.download(url, path)
        return path

    def add_files(self, version: str, files: dict[str, Path]) -> None:
        """Create each object (create-only) and keep a copy in the mirror, whose version folder was
        marked whole before these existed: `version_file` fetches what a mirror lacks."""
        for name, source in files.items():
            url = f"{self.url}/versions/{version}/{name}"
            self.store.create(url, source.read_bytes())
            target = self._mirrored(url)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    # The pointer and the decisions ---------------------------------------------------------------

    def read_pointer(self) -> Pointer:
        tagged = self.store.read_tagged(self.pointer_location)
        if tagged is None:
            return Pointer(None, _Tag(None))
        data, etag = tagged
        pointer = Pointer.parse(data)
        return replace(pointer, token=_Tag(etag, pointer.sequence))

    def write_pointer(self, version: str | None, reason: str, record: DecisionRecord, token: object) -> Pointer:
        """Compare-and-swap the pointer read with `token`; raises `store.Conflict` if it changed. The
        pointer written names no version rather than being deleted, as a delete cannot be conditional."""
        tag = token if isinstance(token, _Tag) else _Tag(None)
        sequence = max([tag.sequence, *(_sequence(url) for url in self._decision_urls())]) + 1
        pointer = {
            "version": version,
            "since": now_iso(),
            "reason": reason,
            "sequence": sequence,
            "decision": record.to_dict(),
        }
        self.store.swap(self.pointer_location, json.dumps(pointer, indent=2, sort_keys=True).encode(), tag.etag)
        return Pointer(version, None, sequence, record.to_dict())  # the next write must read it again

    def append_decision(self, record: DecisionRecord, pointer: Pointer) -> None:
        """Write the decision as its own object, named so that the log's order is production's order:
        a decision that moved the pointer goes under the pointer's sequence number, create-only (so
        completing it twice writes it once); any other after it."""
        if json.dumps(pointer.decision, sort_keys=True) == json.dumps(record.to_dict(), sort_keys=True):
            name = f"{pointer.sequence:08d}-0-{record.action}-{record.candidate}"
        else:
            name = f"{pointer.sequence:08d}-1-{record.time}-{record.action}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(store.AlreadyExists):
            self.store.create(f"{self.log_location}{name}.json", (record.to_json() + "\n").encode())

    def _decision_urls(self) -> list[str]:
        return sorted(self.store.glob(f"{self.log_location}*.json"))

    def decision_entries(self) -> list[LogEntry]:
        entries = []
        for url in self._decision_urls():
            path = self._mirrored(url)  # a decision never changes once written: read it once
            if not path.exists():
                self.store.download(url, path)
            entries.append(LogEntry(f"Decision {url}", path.read_text(errors="replace"), url))
        return entries

    def set_aside(self, damaged: list[LogEntry]) -> list[str]:
        """Move each damaged decision to damaged/, as objects cannot be edited in place."""
        done = []
        for entry in damaged:
            url = entry.key
            data = self.store.read(url)
            backup = f"{self.url}/damaged/{url.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}"
            self.store.write(backup, data)
            self.store.delete(url)
            self._mirrored(url).unlink(missing_ok=True)
            done.append(f"moved the unreadable decision {url} to {backup}")
        return done

    # Leftovers ---------------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """Claims older than `STALE_CLAIM_SECONDS` whose version was never written."""
        found = []
        for url in self.store.glob(f"{self.url}/versions/*/.claim"):
            folder = url.rsplit("/", 1)[0]
            if self.store.exists(f"{folder}/version.json"):
                continue
            claimed = json.loads(self.store.read(url)).get("time", "")
            started = datetime.fromisoformat(claimed).replace(tzinfo=UTC).timestamp() if claimed else time.time()
            age = time.time() - started
            if age > STALE_CLAIM_SECONDS:
                found.append(folder)
        return found

    def remove_leftover(self, leftover: str) -> None:
        self.store.delete(leftover)


def _sequence(url: str) -> int:
    return int(url.rsplit("/", 1)[1].split("-", 1)[0])


def _mirrored_marker(folder: Path) -> Path:
    """Beside a version's mirrored folder: present once all its files are there (single files, such as
    its version.json, are mirrored on their own before)."""
    return folder.with_name(f".{folder.name}.mirrored")
