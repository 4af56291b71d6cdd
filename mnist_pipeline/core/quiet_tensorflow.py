"""Import TensorFlow without its start-up notices, keeping every other line it prints.

TensorFlow's C++ side prints, on every start, lines that read like failures on a machine without a
GPU (`E0000 ... failed call to cuInit: ... CUDA error`) and notices about oneDNN and CPU features.
`TF_CPP_MIN_LOG_LEVEL` cannot silence them: they are written before TensorFlow's logging is set up.
So the import (and the device probe that triggers the CUDA call) runs with the process's stderr
captured; afterwards each captured line is written back unless it is one of those notices. The
CUDA failure is dropped only when TensorFlow also said there is no CUDA driver at all: on a machine
with a driver, it is a real error and shows.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

STARTUP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
)
NO_DRIVER = "Could not find cuda drivers on your machine"
CUDA_INIT_FAILED = "failed call to cuInit"

_lock = threading.Lock()
_ready = False


def startup_noise_removed(text: str) -> str:
    """`text` without TensorFlow's start-up notices (and without a cuInit failure on a driverless machine)."""
    no_driver = NO_DRIVER in text
    kept = [line for line in text.splitlines(keepends=True)
            if not STARTUP_NOTICES.search(line) and not (no_driver and CUDA_INIT_FAILED in line)]
    return "".join(kept)


@contextmanager
def _filtered_stderr():
    """Capture file descriptor 2 (C++ writes there directly), then write back what is not noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = startup_noise_removed(captured.read().decode(errors="replace"))
            if kept:
                os.write(2, kept.encode())


def import_tensorflow():
    """The `tensorflow` module, imported once per process without its start-up notices. Safe to call
    from several threads (e.g. a background import while Prefect starts its server)."""
    global _ready
    with _lock:
        if not _ready:
            with _filtered_stderr():
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")  # the CUDA probe, whose failure would print later
            _ready = True
    import tensorflow as tf

    return tf
