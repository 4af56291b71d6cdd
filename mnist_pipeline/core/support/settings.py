"""Every `MNIST_*` environment variable the package reads, in one place.

Users' settings:

    MNIST_ARTIFACTS_DIR   where splits, runs and the registry go: a folder or `s3://bucket/prefix`
                          (default: `artifacts` in the current folder; `--artifacts-dir` wins)
    MNIST_CACHE_DIR       this machine's mirror of an artifact store given by URL
                          (default: ~/.cache/mnist-pipeline)
    MNIST_RESULTS_BLOCK   the name of the Prefect block keeping task results in a store
                          (default: mnist-results-<hash of the store URL>)
    MNIST_REPO_URL        team deployments: the repository the workers clone (default: the checkout's
                          `origin`, or the checkout itself)
    MNIST_REPO_COMMIT     team deployments: the commit they check out (default: the checkout's HEAD)
    MNIST_CORRECTIONS_TOKEN  the token `serve` requires for POST /v1/corrections (or
                          `--corrections-token-file`; required when listening beyond loopback)

Test and demo aids (off by default; see core/support/faults.py):

    MNIST_TEST_FAIL_ONCE           stages whose first attempt fails, e.g. `download,train@epoch2`
    MNIST_TEST_CRASH_AT            a crash point where the process kills itself, e.g. `write:model.keras`
    MNIST_TEST_FAIL_TRAINING_IN    every training whose run folder's name ends with it fails for good

Each is read when it is needed, not at import, so a process that sets one before a run is heard.
"""

from __future__ import annotations

import os
from pathlib import Path

ARTIFACTS_DIR = "MNIST_ARTIFACTS_DIR"
CACHE_DIR = "MNIST_CACHE_DIR"
RESULTS_BLOCK = "MNIST_RESULTS_BLOCK"
REPO_URL = "MNIST_REPO_URL"
REPO_COMMIT = "MNIST_REPO_COMMIT"
CORRECTIONS_TOKEN = "MNIST_CORRECTIONS_TOKEN"
TEST_FAIL_ONCE = "MNIST_TEST_FAIL_ONCE"
TEST_CRASH_AT = "MNIST_TEST_CRASH_AT"
TEST_FAIL_TRAINING_IN = "MNIST_TEST_FAIL_TRAINING_IN"

ALL = (
    ARTIFACTS_DIR,
    CACHE_DIR,
    RESULTS_BLOCK,
    REPO_URL,
    REPO_COMMIT,
    CORRECTIONS_TOKEN,
    TEST_FAIL_ONCE,
    TEST_CRASH_AT,
    TEST_FAIL_TRAINING_IN,
)


def read(name: str) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    if name not in ALL:
        raise KeyError(f"{name} is not one of the package's settings ({', '.join(ALL)})")
    return os.environ.get(name) or None


def artifacts_location() -> str:
    return read(ARTIFACTS_DIR) or "artifacts"


def cache_root() -> Path:
    return Path(read(CACHE_DIR) or Path.home() / ".cache" / "mnist-pipeline").expanduser().resolve()
