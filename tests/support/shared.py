"""Session fixtures made once for all of a run's workers instead of once by each."""

from __future__ import annotations

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
    tests read them, and copy them before changing anything."""
    with FileLock(str(run_folder / f"{name}.lock")):
        result = run_folder / f"{name}.pickle"
        if result.exists():
            made: T = pickle.loads(result.read_bytes())
            return made
        folder = run_folder / name
        folder.mkdir()
        made = make(folder)
        partial = run_folder / f"{name}.pickle.{os.getpid()}.partial"
        partial.write_bytes(pickle.dumps(made))
        os.replace(partial, result)
        return made
