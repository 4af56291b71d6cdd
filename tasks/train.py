"""Stage 3, train: fit the preset model, resuming from its last epoch's checkpoint on a retry.

Cached on everything that decides the model (`core.training.training_key`): a run whose inputs
did not change takes the model trained before, and the registry records it as unchanged.

Every training carries the tag `mnist-training`: a team's server caps trainings at once across runs,
sweeps and machines with Prefect's tag concurrency limit (`prefect concurrency-limit create
mnist-training N`, kept by the server as the global limit `tag:mnist-training`). Without the limit
nothing waits, and nothing is logged about it.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.runtime import task_run

from mnist_pipeline.core.data.splits import SplitFiles
from mnist_pipeline.core.modelling.models import TrainingConfig
from mnist_pipeline.core.modelling.progress import Progress, progress_callback
from mnist_pipeline.core.modelling.training import TrainedModel, fit, training_key
from mnist_pipeline.core.storage import store
from mnist_pipeline.orchestration.retries import retry_unless_permanent

PROGRESS_KEY = "mnist-training-progress"
TRAINING_TAG = "mnist-training"
TRAINING_CONCURRENCY_LIMIT = f"tag:{TRAINING_TAG}"  # the server's name of the tag's limit


def _progress_reporter(preset: str) -> Any:
    """A Keras callback that shows how far training got (epoch, batches within a long epoch, time
    left) as a Prefect progress artifact while it runs."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact_ids: list[UUID] = []  # the one artifact, made at the first report

    def show(progress: Progress) -> None:
        description = f"Training {preset}: {progress.describe()}"
        if not artifact_ids:
            # typed "the id, or a coroutine in an async context": Keras calls this from sync code
            artifact_ids.append(cast(UUID, create_progress_artifact(0.0, key=PROGRESS_KEY, description=description)))
        else:
            update_progress_artifact(artifact_ids[0], 100.0 * progress.fraction, description=description)

    return progress_callback(show)


def _inputs_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Prefect's cache key of a training: `training_key` of its inputs (the run's own folders aside)."""
    return training_key(parameters["config"], parameters["data"].data_sha256, store.parent(parameters["run_dir"]))


@task(
    name="train",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_permanent,
    tags=[TRAINING_TAG],
    cache_key_fn=_inputs_key,
    persist_result=True,
)  # same inputs: the model trained before, `Cached`
def train(config: TrainingConfig, data: SplitFiles, run_dir: str, tensorboard_dir: str) -> TrainedModel:
    """Train with TensorBoard logs and a progress artifact; a retry resumes from the checkpoint in `run_dir`.
    With an artifact store, `run_dir` and `tensorboard_dir` are URLs: Keras writes into this machine's
    mirror of them, and both folders are uploaded whole once training ends."""
    run_folder, tensorboard_folder = store.local_path(run_dir), store.local_path(tensorboard_dir)
    trained = fit(
        config,
        data,
        run_folder,
        get_run_logger(),
        tensorboard_dir=tensorboard_folder,
        attempt=task_run.run_count,
        callbacks=(_progress_reporter(config.preset),),
    )
    store.publish(tensorboard_folder)
    store.publish(run_folder)
    return trained.published()
