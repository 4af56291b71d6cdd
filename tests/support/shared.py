"""Session fixtures made once for all of a run's workers instead of once by each, and the check that
no test changed them."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

T = TypeVar("T")


def made_once_per_run(run_folder: Path, name: str, make: Callable[[Path], T]) -> T:
    """What `make(run_folder / name)` returns, made by the first of the run's workers to ask; the others
    wait for it and read it back (pickled). The fixtures made so cost seconds each (a TensorFlow
    training, a registration), and every worker made its own. Their files are shared by the workers:
    tests read them, and copy them before changing anything (`changed_since_made` checks)."""
    with FileLock(str(run_folder / f"{name}.lock")):
        result = run_folder / f"{name}.pickle"
        if result.exists():
            made: T = pickle.loads(result.read_bytes())
            return made
        folder = run_folder / name
        folder.mkdir()
        made = make(folder)
        (run_folder / f"{name}.sha256").write_text(_digest(folder))
        partial = run_folder / f"{name}.pickle.{os.getpid()}.partial"
        partial.write_bytes(pickle.dumps(made))
        os.replace(partial, result)
        return made


def changed_since_made(run_folder: Path) -> list[str]:
    """The names of the things made once in `run_folder` whose files are no longer as they were made."""
    made = sorted(run_folder.glob("*.sha256"))
    return [record.stem for record in made if _digest(run_folder / record.stem) != record.read_text()]


def _digest(folder: Path) -> str:
    """SHA-256 of a folder's files: their paths and their bytes."""
    digest = hashlib.sha256()
    for path in sorted(path for path in folder.rglob("*") if path.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
