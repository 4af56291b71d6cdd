"""Each stage's retry policy as declared on its Prefect task: how often it is retried, how long each
wait is, and which errors are not worth a retry.

Fast tier: the task objects only. That the server really applies these policies (every stage retried
once, a permanent error tried once) is in test_server.py.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from mnist_pipeline.core.modelling.parameters import InvalidParameterError
from mnist_pipeline.core.modelling.training import MissingModelError
from mnist_pipeline.core.registry import RegistryError
from mnist_pipeline.core.support.errors import (
    BundleMissingError,
    ChecksumMismatchError,
    PipelineError,
    SplitValidationError,
)
from mnist_pipeline.core.support.faults import InjectedFault
from mnist_pipeline.orchestration.retries import retry_unless_permanent
from mnist_pipeline.tasks.evaluate import evaluate
from mnist_pipeline.tasks.preprocess import preprocess
from mnist_pipeline.tasks.register import register
from mnist_pipeline.tasks.split import download_split
from mnist_pipeline.tasks.train import train

STAGE_TASKS = {task.name: task for task in (download_split, preprocess, train, evaluate, register)}
MAX_WAIT_SECONDS = 30  # what a stage that keeps failing may hold its run up, its retries' waits added up


def test_the_five_stages_are_the_flow_s_tasks():
    from prefect import Task

    import mnist_pipeline.flows.mnist_flow as flow_module

    used = {value.name: value for value in vars(flow_module).values() if isinstance(value, Task)}
    assert used == STAGE_TASKS


def waits(task) -> list[float]:
    """The seconds `task` waits before each of its retries, at the most (with its jitter)."""
    delays = task.retry_delay_seconds
    delays = delays if isinstance(delays, list) else [delays] * task.retries
    return [delay * (1 + (task.retry_jitter_factor or 0)) for delay in delays]


@pytest.mark.parametrize("stage", STAGE_TASKS)
def test_a_failing_stage_is_retried_unless_permanent_and_holds_its_run_up_briefly(stage):
    task = STAGE_TASKS[stage]
    assert task.retries >= 1, "a transient error must be retried"
    assert task.retry_condition_fn is retry_unless_permanent, "a permanent error must not be retried"
    assert len(waits(task)) == task.retries and 0 < sum(waits(task)) <= MAX_WAIT_SECONDS, waits(task)


def test_the_download_backs_off_exponentially_and_at_random():
    task = STAGE_TASKS["download-split"]
    delays = task.retry_delay_seconds
    assert len(delays) == task.retries >= 3
    assert all(later == 2 * earlier for earlier, later in itertools.pairwise(delays))
    assert 0 < task.retry_jitter_factor < 1  # runs that failed together do not retry together


@pytest.mark.parametrize(
    "error, retried",
    [
        (ChecksumMismatchError("bad bundle"), False),
        (BundleMissingError("no bundle"), False),
        (SplitValidationError("bad split"), False),
        (InvalidParameterError("bad parameter"), False),
        (RegistryError("damaged registry"), False),
        (MissingModelError("deleted run folder"), False),
        (InjectedFault("first attempt"), True),
        (PipelineError("transient"), True),
        (OSError("disk busy"), True),
        (RuntimeError("anything else"), True),
    ],
)
def test_only_errors_that_a_retry_may_fix_are_retried(error, retried):
    from prefect.states import Failed

    assert retry_unless_permanent(download_split, None, Failed(data=error)) is retried


def test_evaluate_is_not_cached_on_a_model_whose_file_is_gone(tiny_strong, synthetic_split, tmp_path):
    """Prefect's cache of a training outlives a deleted run folder: the evaluate stage's cache key then
    has nothing to hash, and the stage runs to report it (MissingModelError), with no traceback of its own."""
    trained, _ = tiny_strong
    parameters = {"trained": trained, "data": synthetic_split, "run_dir": str(tmp_path / "runs" / "run")}
    assert evaluate.cache_key_fn(None, parameters)
    gone = replace(trained, model_path=str(tmp_path / "deleted-run" / "model.keras"))
    assert evaluate.cache_key_fn(None, {**parameters, "trained": gone}) is None
