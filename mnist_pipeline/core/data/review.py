"""Corrections wait for a person: the review queue between users' feedback and training data.

A correction sent to the service is a claim ("this drawing is a 7") from whoever could reach it. It
lands here as *pending*; only a person's decision moves it where training reads. The layout, in a
folder or (team mode) under a prefix of the artifact store, so any machine can review and train:

    pending/<id>.png, <id>.json     waiting: the 28x28 picture, and what came with it (label given,
                                    what the model read, model version, time, client address)
    reviewed/<label>/<sha>.png      accepted or relabelled: the extra-data folder training reads
                                    (`--extra-data <corrections>/reviewed`), named by the picture's
                                    content hash, so the same picture accepted twice is one file
    rejected/<id>.png, <id>.json    rejected, kept for audit
    reviews.jsonl (folder)          every decision, appended: what, who, why, when, through what
    reviews/<time>-<n>.json (store) the same, one object each (a store cannot append)

A pending id is the hash of the picture and its label, so a repeat of the same correction is one
pending entry. Every write is atomic and create-only; a decision writes its destination first,
then its log entry, then removes the pending files: a crash in between leaves the correction
pending (decided again later, the destination is found already there), never lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.errors import PermanentError
from mnist_pipeline.core.support.files import append_line_durably, fsync_dir

PENDING, REVIEWED, REJECTED = "pending", "reviewed", "rejected"
Action = Literal["accept", "relabel", "reject"]


class ReviewError(PermanentError):
    """A review request that cannot be carried out (unknown or ambiguous id, bad label)."""


@dataclass(frozen=True)
class Correction:
    """A pending correction: its id and what came with it (see `CorrectionQueue.submit`)."""

    id: str
    label: int
    sha256: str
    received: str
    client: str | None
    model_version: str | None
    model_top: tuple[tuple[int, float], ...]  # what the model read: (class, probability), best first

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Correction:
        return cls(
            id=data["id"],
            label=int(data["label"]),
            sha256=data["sha256"],
            received=data["received"],
            client=data.get("client"),
            model_version=data.get("model_version"),
            model_top=tuple((int(c), float(p)) for c, p in data.get("model_top") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "sha256": self.sha256,
            "received": self.received,
            "client": self.client,
            "model_version": self.model_version,
            "model_top": [list(pair) for pair in self.model_top],
        }


class QueueFiles(Protocol):
    """The storage primitives the queue needs: create-only writes, reads, listing, removal, a log."""

    location: str

    def create(self, name: str, data: bytes) -> bool:
        """Write `name` whole unless it exists; False if it did."""

    def read(self, name: str) -> bytes: ...

    def names(self, folder: str) -> list[str]:
        """The names of the files under `folder`, relative to the queue's root, sorted."""

    def size(self, folder: str) -> int:
        """The bytes the files under `folder` hold."""

    def delete(self, name: str) -> None: ...

    def append_log(self, entry: dict[str, Any]) -> None: ...

    def read_log(self) -> list[dict[str, Any]]: ...


class FolderFiles:
    """The queue in a local folder: create-only by hard link of a fsynced temporary file."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)

    def create(self, name: str, data: bytes) -> bool:
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.link(temporary, final)  # atomic, and fails if `final` exists
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        fsync_dir(final.parent)
        return True

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def names(self, folder: str) -> list[str]:
        base = self.root / folder
        files = (path for path in base.rglob("*") if path.is_file() and not path.name.startswith("."))
        return sorted(path.relative_to(self.root).as_posix() for path in files)

    def size(self, folder: str) -> int:
        return sum((self.root / name).stat().st_size for name in self.names(folder))

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def append_log(self, entry: dict[str, Any]) -> None:
        append_line_durably(self.root / "reviews.jsonl", json.dumps(entry, sort_keys=True))

    def read_log(self) -> list[dict[str, Any]]:
        log = self.root / "reviews.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines if line.strip()]


class StoreFiles:
    """The queue under a prefix of the artifact store (team mode): create-only writes
    (`If-None-Match: *`), one object per log entry."""

    def __init__(self, url: str):
        self.location = url.rstrip("/")
        self.store = store.ObjectStore.for_url(self.location)

    def _url(self, name: str) -> str:
        return f"{self.location}/{name}"

    def create(self, name: str, data: bytes) -> bool:
        try:
            self.store.create(self._url(name), data)
        except store.AlreadyExists:
            return False
        return True

    def read(self, name: str) -> bytes:
        return self.store.read(self._url(name))

    def names(self, folder: str) -> list[str]:
        prefix = self._url(folder) + "/"
        return sorted(
            url[len(self.location) + 1 :] for url in self.store.find(self._url(folder)) if url.startswith(prefix)
        )

    def size(self, folder: str) -> int:
        return sum(self.store.size(self._url(name)) for name in self.names(folder))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.store.delete(self._url(name))

    def append_log(self, entry: dict[str, Any]) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.store.create(self._url(f"reviews/{stamp}-{uuid.uuid4().hex[:8]}.json"), json.dumps(entry).encode())

    def read_log(self) -> list[dict[str, Any]]:
        return [json.loads(self.read(name)) for name in self.names("reviews")]


class CorrectionQueue:
    """Pending corrections, the decisions on them, and the log of those decisions."""

    def __init__(self, files: QueueFiles):
        self.files = files

    @property
    def location(self) -> str:
        return self.files.location

    @property
    def reviewed_location(self) -> str:
        """The extra-data folder (or store URL) training reads: reviewed pictures only."""
        return store.join(self.location, REVIEWED)

    def submit(
        self,
        png: bytes,
        label: int,
        *,
        client: str | None = None,
        model_version: str | None = None,
        model_top: Iterable[tuple[int, float]] = (),
    ) -> tuple[Correction, bool]:
        """Queue a 28x28 PNG claimed to show `label`: (the pending correction, True if it is new;
        False when the same picture with the same label is already pending)."""
        _check_label(label)
        sha = hashlib.sha256(png).hexdigest()
        correction = Correction(
            id=hashlib.sha256(png + bytes([label])).hexdigest()[:16],
            label=label,
            sha256=sha,
            received=datetime.now(UTC).isoformat(timespec="seconds"),
            client=client,
            model_version=model_version,
            model_top=tuple((int(c), round(float(p), 6)) for c, p in model_top),
        )
        self.files.create(f"{PENDING}/{correction.id}.png", png)
        new = self.files.create(f"{PENDING}/{correction.id}.json", _dumps(correction.to_json()))  # last: marks it whole
        return correction, new

    def pending(self) -> list[Correction]:
        """Every pending correction, oldest first."""
        found = [
            Correction.from_json(json.loads(self.files.read(name)))
            for name in self.files.names(PENDING)
            if name.endswith(".json")
        ]
        return sorted(found, key=lambda correction: (correction.received, correction.id))

    def pending_bytes(self) -> int:
        return self.files.size(PENDING)

    def picture(self, correction: Correction) -> bytes:
        return self.files.read(f"{PENDING}/{correction.id}.png")

    def find(self, prefix: str) -> Correction:
        """The pending correction whose id starts with `prefix`."""
        matches = [correction for correction in self.pending() if correction.id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ReviewError(f"no pending correction has an id starting with {prefix!r} (decided already, or a typo?)")
        raise ReviewError(f"{len(matches)} pending corrections have ids starting with {prefix!r}: give more of the id")

    def decide(
        self,
        correction: Correction,
        action: Action,
        reviewer: str,
        reason: str = "",
        *,
        label: int | None = None,
        via: str,
    ) -> dict[str, Any]:
        """Carry out a reviewer's decision on a pending correction; the log entry written.

        accept: into reviewed/<its label>/; relabel: into reviewed/<label>/; reject: into rejected/.
        """
        if not reviewer.strip():
            raise ReviewError("a decision needs the reviewer's name: who decided")
        if action == "relabel":
            if label is None:
                raise ReviewError("relabel needs the right label (0-9)")
            _check_label(label)
        final = correction.label if action == "accept" else label
        png = self.picture(correction)
        if action == "reject":
            stored = f"{REJECTED}/{correction.id}.png"
            self.files.create(stored, png)
            self.files.create(f"{REJECTED}/{correction.id}.json", _dumps(correction.to_json()))
        else:
            stored = f"{REVIEWED}/{final}/{correction.sha256[:16]}.png"
            self.files.create(stored, png)
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "id": correction.id,
            "action": action,
            "label_given": correction.label,
            "label": final,
            "reviewer": reviewer.strip(),
            "reason": reason,
            "via": via,
            "stored": stored,
            "correction": correction.to_json(),
        }
        self.files.append_log(entry)
        self.files.delete(f"{PENDING}/{correction.id}.json")
        self.files.delete(f"{PENDING}/{correction.id}.png")
        return entry

    def log(self) -> list[dict[str, Any]]:
        """Every decision, oldest first."""
        return sorted(self.files.read_log(), key=lambda entry: entry["time"])


def queue_location(corrections_dir: str | None, artifacts_dir: str | None) -> str:
    """`corrections_dir` (a folder or a store URL), else `corrections/` of the artifacts folder or store."""
    from mnist_pipeline.core.storage.paths import ArtifactPaths

    if corrections_dir:
        return corrections_dir if store.is_url(corrections_dir) else str(Path(corrections_dir).expanduser().resolve())
    paths = ArtifactPaths.resolve(artifacts_dir)
    return paths.ref(paths.root / "corrections")


def open_queue(location: str | os.PathLike[str]) -> CorrectionQueue:
    """The queue in a folder, or under a store URL (team mode)."""
    text = str(location)
    return CorrectionQueue(StoreFiles(text) if store.is_url(text) else FolderFiles(Path(text).expanduser().resolve()))


def _check_label(label: int) -> None:
    if label not in range(NUM_CLASSES):
        raise ReviewError(f"label {label!r} is not a digit 0-9")


def _dumps(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
