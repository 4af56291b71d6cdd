"""Import TensorFlow without its start-up notices, keeping every other line it prints, and without the
integrations Keras loads at start-up that this project never uses.

TensorFlow's C++ side prints, on every start, lines that read like failures on a machine without a
GPU (`E0000 ... failed call to cuInit: ... CUDA error`) and notices about oneDNN and CPU features.
`TF_CPP_MIN_LOG_LEVEL` cannot silence them: they are written before TensorFlow's logging is set up.
So while the import (and the device probe that triggers the CUDA call) runs, the process's stderr
goes through a pipe, and a thread passes each line on at once unless it is one of those notices.
Nothing else is held back: the import may run in a background thread while the rest of the program
writes to stderr (and starts processes that inherit it). The CUDA failure is dropped only after
TensorFlow said there is no CUDA driver at all: on a machine with a driver, it is a real error.

Keras imports scikit-learn (for its scikit-learn wrappers), matplotlib's pyplot (for its image
gallery plots) and pandas (to take DataFrames as training data) at start-up whenever they are
installed, and MLflow installs them. None of these features is used here, and the three imports were
over a third of `import tensorflow` (bench/ci_results.md), paid by every process that trains,
evaluates or converts. Keras imports each inside `try: ... except ImportError`, and no option of
Keras turns them off, so while TensorFlow and Keras import, those modules are marked absent in
`sys.modules` (Python then raises ImportError); the marks are removed afterwards, so a later
`import matplotlib.pyplot` (the run's plots) imports it as usual.
Meanwhile another thread could not import them either; none does here (Prefect, MLflow and the
flows import none of them meanwhile; the plots come after training, which waits for this import).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

STARTUP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
)
NO_DRIVER = "Could not find cuda drivers on your machine"
KERAS_EXTRAS_UNUSED = ("sklearn", "matplotlib.pyplot", "pandas")
CUDA_INIT_FAILED = "failed call to cuInit"

_lock = threading.Lock()
_ready = False
_restore: Callable[[], None] | None = (
    None  # while stderr goes through the filter: puts it back and passes on what is left
)


class _NoticeFilter:
    """Decides line by line, remembering whether TensorFlow reported that there is no CUDA driver."""

    def __init__(self) -> None:
        self.no_driver = False

    def keep(self, line: str) -> bool:
        self.no_driver = self.no_driver or NO_DRIVER in line
        return not STARTUP_NOTICES.search(line) and not (self.no_driver and CUDA_INIT_FAILED in line)


def startup_noise_removed(text: str) -> str:
    """`text` without TensorFlow's start-up notices (and without a cuInit failure on a driverless machine)."""
    notices = _NoticeFilter()
    return "".join(line for line in text.splitlines(keepends=True) if notices.keep(line))


def _pass_on(read_fd: int, target_fd: int) -> None:
    """Copy lines from the pipe to the real stderr, leaving out the notices, until the pipe closes."""
    notices = _NoticeFilter()
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        for raw in iter(pipe.readline, b""):
            if notices.keep(raw.decode(errors="replace")):
                os.write(target_fd, raw)


@contextmanager
def _filtered_stderr() -> Iterator[None]:
    """File descriptor 2 (C++ writes there directly) through the notice filter, for the block."""
    global _restore
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    passer = threading.Thread(target=_pass_on, args=(read_fd, saved), name="tensorflow-notice-filter", daemon=True)
    passer.start()

    def restore() -> None:
        global _restore
        _restore = None
        sys.stderr.flush()
        os.dup2(saved, 2)  # our end of the pipe closes; a process started meanwhile may keep its own
        passer.join(timeout=1)  # what was written before is passed on

    _restore = restore
    try:
        yield
    finally:
        if _restore is restore:
            restore()


@contextmanager
def _absent(modules: tuple[str, ...]) -> Iterator[None]:
    """The `modules` not imported yet fail to import (ImportError) during the block."""
    marked = [name for name in modules if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]  # Python's documented "not importable" mark
    try:
        yield
    finally:
        for name in marked:
            if sys.modules.get(name, "imported meanwhile") is None:
                del sys.modules[name]


def release_stderr() -> None:
    """Put stderr back now if an import is filtering it (a program about to exit calls this, so that
    nothing it wrote is left in the pipe)."""
    if _restore is not None:
        _restore()


def import_tensorflow() -> Any:
    """The `tensorflow` module, imported once per process without its start-up notices. Safe to call
    from several threads (e.g. a background import while Prefect starts its server)."""
    global _ready
    with _lock:
        if not _ready:
            with _absent(KERAS_EXTRAS_UNUSED):
                with _filtered_stderr():
                    import tensorflow as tf

                    tf.config.list_physical_devices("GPU")  # the CUDA probe, whose failure would print later
                # Keras too, under the same lock: two threads importing it at once (the background import
                # and a stage loading a model) can be handed a half-initialised module by Python's
                # import-deadlock avoidance ("module 'keras' has no attribute 'KerasTensor'", seen once in CI)
                import keras  # noqa: F401

            _ready = True
    import tensorflow as tf

    return tf


def import_tensorflow_in_background() -> threading.Thread:
    """Start `import_tensorflow` in a thread of its own (for a program with other work meanwhile); the thread.

    Modules that TensorFlow's import loads set warning filters as they load (requests: "ignore urllib3's
    DependencyWarning"), and a `warnings.catch_warnings()` block in another thread (Prefect has several)
    puts the process's filters back as it found them when it ends: a block that spans such a module's
    load drops that filter. So the first line of a fresh clone's first run was urllib3's "SOCKS support
    in urllib3 requires the installation of optional dependencies". requests, the one seen, is imported
    first, in the calling thread (a small part of TensorFlow's import).
    """
    with suppress(ModuleNotFoundError):  # a TensorFlow that no longer needs it: no race
        importlib.import_module("requests")

    thread = threading.Thread(target=import_tensorflow, name="import-tensorflow", daemon=True)
    thread.start()
    return thread
