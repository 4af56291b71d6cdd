"""tensorflow-datasets' lazy imports confined to the thread that makes them: another thread's import
statement, run meanwhile, gets what it asked for (core/data/tfds_import.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from etils.epy import lazy_imports_utils

from mnist_pipeline.core.data.tfds_import import lazy_imports_of_this_thread


def imports_during(block: Callable[[], AbstractContextManager]) -> tuple[object, object]:
    """(what `import hashlib` gives inside `block()`, what `from json import dumps` gives another thread
    while the first is still inside it)."""
    inside, done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def lazy_importer() -> None:
        with block():
            import hashlib

            seen["inside"] = hashlib
            inside.set()
            done.wait(10)

    def other_thread() -> None:
        from json import dumps

        seen["other"] = dumps

    importer = threading.Thread(target=lazy_importer)
    importer.start()
    assert inside.wait(10)
    other = threading.Thread(target=other_thread)
    other.start()
    other.join(10)
    done.set()
    importer.join(10)
    return seen["inside"], seen["other"]


def test_etils_own_lazy_imports_hand_other_threads_a_stand_in():
    """Why the module exists; when etils stops doing this, the module can go. In a process of its own:
    here, the stand-ins could reach the threads this worker runs for other tests."""
    script = (
        "from etils.epy import lazy_imports_utils as etils; from test_tfds_import import imports_during; "
        "print(*(type(seen).__name__ for seen in imports_during(etils.lazy_imports)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["LazyModule", "LazyModule"], result.stdout + result.stderr[-2000:]


def test_lazy_imports_of_this_thread_leave_other_threads_their_imports():
    import builtins
    import json

    before = builtins.__import__
    inside, other = imports_during(lazy_imports_of_this_thread)
    assert isinstance(inside, lazy_imports_utils.LazyModule)  # lazy in the thread that asked
    assert other is json.dumps
    assert builtins.__import__ is before
