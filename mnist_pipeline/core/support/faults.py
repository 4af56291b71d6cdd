"""Fault injection, test and demo aids (off by default).

    MNIST_TEST_FAIL_ONCE=download,preprocess,train@epoch2,evaluate,register

Each named stage raises `InjectedFault` on its first attempt (train: at the end of the given epoch,
after that epoch's checkpoint), so its retry policy and resume logic can be seen at work.

    MNIST_TEST_CRASH_AT=write:model.keras

kills the process with SIGKILL at a named crash point (`crash_point`), for the crash-safety tests:
`write:<file name>` (written and fsynced under a temporary name, not yet renamed), `train@epochN`,
`register:staged` (a version folder complete under its temporary name), `register:added` (the version
in place, production not moved, the decision not logged).

    MNIST_TEST_FAIL_TRAINING_IN=-c02

makes every attempt of the training whose run folder's name ends with the value fail for good (one
candidate of a sweep that cannot train).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from mnist_pipeline.core.support import settings
from mnist_pipeline.core.support.errors import PermanentError, PipelineError

FAIL_ONCE_ENV = settings.TEST_FAIL_ONCE
CRASH_AT_ENV = settings.TEST_CRASH_AT
FAIL_TRAINING_ENV = settings.TEST_FAIL_TRAINING_IN
STAGES = ("download", "preprocess", "train", "evaluate", "register")


class InjectedFault(PipelineError):
    """A deliberate, transient failure (retrying it succeeds)."""


def planned_faults(spec: str | None = None) -> dict[str, int | None]:
    """{stage: epoch or None} from the `MNIST_TEST_FAIL_ONCE` syntax; unknown stages are an error."""
    spec = (settings.read(FAIL_ONCE_ENV) or "") if spec is None else spec
    faults: dict[str, int | None] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        stage, _, epoch = item.partition("@epoch")
        if stage not in STAGES or (epoch and not epoch.isdigit()):
            raise ValueError(
                f"{FAIL_ONCE_ENV}={spec!r}: {item!r} is not a stage; use names from {', '.join(STAGES)}, "
                "with @epochN after train (e.g. train@epoch2)"
            )
        faults[stage] = int(epoch) if epoch else None
    return faults


def inject_fault(stage: str, attempt: int, *, epoch: int | None = None) -> None:
    """Raise `InjectedFault` if `MNIST_TEST_FAIL_ONCE` names this stage (and epoch) and this is the
    stage's first attempt (`attempt` counts from 1: Prefect's task-run `run_count`)."""
    faults = planned_faults()
    if stage not in faults or faults[stage] != epoch or attempt > 1:
        return
    where = f" at the end of epoch {epoch}" if epoch is not None else ""
    raise InjectedFault(f"injected fault: first attempt of stage {stage}{where} ({FAIL_ONCE_ENV})")


def crash_point(name: str) -> None:
    """Kill this process at once (SIGKILL: no cleanup runs) if `MNIST_TEST_CRASH_AT` names this point."""
    if settings.read(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_training_in(run_dir: str) -> None:
    """Raise a `PermanentError` (no retry helps) if `MNIST_TEST_FAIL_TRAINING_IN` ends this run folder's name."""
    target = settings.read(FAIL_TRAINING_ENV)
    if target and Path(run_dir).name.endswith(target):
        raise PermanentError(f"injected fault: training in {run_dir} fails on every attempt ({FAIL_TRAINING_ENV})")
