"""Running the pipeline as its users do: the installed `mnist-pipeline` entry point and the flow script,
each in a process of its own, and what such a process imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FLOW_SCRIPT = PROJECT_ROOT / "flows" / "mnist_flow.py"
ENTRY_POINT = Path(sys.executable).parent / "mnist-pipeline"


def run_flow_script(
    *args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT, timeout: float = 1200
) -> subprocess.CompletedProcess:
    """`python flows/mnist_flow.py ARGS` in its own process."""
    return subprocess.run(
        [sys.executable, str(FLOW_SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        timeout=timeout,
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT, timeout: float = 1200
) -> subprocess.CompletedProcess:
    """`mnist-pipeline ARGS`, the installed entry point, in its own process."""
    return subprocess.run(
        [str(ENTRY_POINT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def imported_packages(*args: str) -> set[str]:
    """The top-level packages that `python -X importtime ARGS` imports."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}


def imported_modules(*args: str) -> set[str]:
    """The full names of the modules that `python -X importtime ARGS` imports (e.g. "mnist_pipeline.tasks")."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
