"""Each stage's retry policy as declared on its Prefect task: how often it is retried, how long each
wait is, and which errors are not worth a retry.

Fast tier: the task objects only. That the server really applies these policies (every stage retried
once, a permanent error tried once) is in test_server.py.
"""

from __future__ import annotations

import pytest

from mnist_pipeline.core.modelling.parameters import InvalidParameterError
from mnist_pipeline.core.registry.registry import RegistryError
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

# stage: (retries, seconds before each retry, jitter: each wait varies by up to this share)
POLICIES = {
    "download-split": (3, [2, 4, 8], 0.5),  # transient I/O: exponential backoff
    "preprocess": (2, 1, None),
    "train": (2, 2, None),
    "evaluate": (2, 2, None),
    "register": (3, 1, None),
}
STAGE_TASKS = {task.name: task for task in (download_split, preprocess, train, evaluate, register)}


def test_the_five_stages_are_the_flow_s_tasks():
    assert list(STAGE_TASKS) == list(POLICIES)


@pytest.mark.parametrize("stage", POLICIES)
def test_stage_declares_its_retry_policy(stage):
    task = STAGE_TASKS[stage]
    assert (task.retries, task.retry_delay_seconds, task.retry_jitter_factor) == POLICIES[stage]
    assert task.retry_condition_fn is retry_unless_permanent, "a permanent error must not be retried"


@pytest.mark.parametrize("error, retried", [
    (ChecksumMismatchError("bad bundle"), False),
    (BundleMissingError("no bundle"), False),
    (SplitValidationError("bad split"), False),
    (InvalidParameterError("bad parameter"), False),
    (RegistryError("damaged registry"), False),
    (InjectedFault("first attempt"), True),
    (PipelineError("transient"), True),
    (OSError("disk busy"), True),
    (RuntimeError("anything else"), True),
])
def test_only_errors_that_a_retry_may_fix_are_retried(error, retried):
    from prefect.states import Failed

    assert retry_unless_permanent(download_split, None, Failed(data=error)) is retried
