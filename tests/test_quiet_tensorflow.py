"""TensorFlow's start-up notices stay out of what users read; anything else it prints stays in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_pipeline.core.support.quiet_tensorflow import startup_noise_removed

NO_GPU_STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795965885.585771    3785 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1795965885.586120    3785 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795965885.638481    3785 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795965887.736556    3785 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
REAL_ERROR = "E0000 00:00:1795965887.9 3785 op_kernel.cc:1] OOM when allocating tensor with shape [1000,784]\n"
CUINIT_FAILURE = NO_GPU_STARTUP.splitlines(keepends=True)[-1]


def test_the_notices_of_a_machine_without_gpu_are_removed_and_real_errors_kept():
    assert startup_noise_removed(NO_GPU_STARTUP) == ""
    assert startup_noise_removed(NO_GPU_STARTUP + REAL_ERROR + "a line of the program\n") == (
        REAL_ERROR + "a line of the program\n"
    )


def test_a_cuda_failure_shows_where_a_driver_is_installed():
    """Without "Could not find cuda drivers", a failed cuInit means a broken GPU set-up: an error to see."""
    assert startup_noise_removed(CUINIT_FAILURE) == CUINIT_FAILURE


@pytest.mark.slow  # a fresh process importing TensorFlow
def test_a_fresh_process_importing_tensorflow_in_the_background_prints_nothing_but_its_own_lines_and_loads_no_unused_extra():
    """The import in a background thread, as the run command does, while the main thread goes in and out
    of `warnings.catch_warnings()` blocks, as Prefect's code may meanwhile (each ending block puts the
    process's warning filters back: without the fix, urllib3's SOCKS warning in five runs of five).
    Nor does the import load what Keras would load for features unused here (scikit-learn, pyplot,
    pandas), which the process can still import afterwards."""
    program = (
        "import sys, time, warnings\nfrom mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow, "
        "import_tensorflow_in_background, KERAS_EXTRAS_UNUSED\nimporting = import_tensorflow_in_background()\n"
        "while importing.is_alive():\n    with warnings.catch_warnings():\n        time.sleep(0.001)\n"
        "tf = import_tensorflow()\nprint('stderr after import', file=sys.stderr)\n"
        "print(int(tf.reduce_sum(tf.constant([1, 2]))))\n"
        "print([name for name in KERAS_EXTRAS_UNUSED if name in sys.modules])\n"
        "import matplotlib.pyplot, pandas, sklearn\nprint(matplotlib.pyplot.__name__, pandas.__name__, sklearn.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout == "3\n[]\nmatplotlib.pyplot pandas sklearn\n"
    assert result.stderr == "stderr after import\n"


def test_what_the_program_writes_while_a_background_import_filters_stderr_is_not_lost_at_exit():
    """The run command imports TensorFlow in a background thread and exits with os._exit: a line it
    writes meanwhile (its error message) must reach stderr, not stay in the filter."""
    program = (
        "import os, sys, threading\nfrom mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow, "
        "release_stderr\nthreading.Thread(target=import_tensorflow, daemon=True).start()\n"
        "import time; time.sleep(0.5)\nprint('error: what went wrong', file=sys.stderr)\n"
        "sys.stderr.flush(); release_stderr(); os._exit(1)"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 1 and "error: what went wrong\n" in result.stderr, result.stderr
