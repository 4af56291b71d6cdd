"""The train stage as a Prefect task on a real server: TensorBoard logs and the progress artifact
(training itself is tested without Prefect in test_train.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.modelling.models import training_config
from mnist_pipeline.tasks.train import PROGRESS_KEY, train
from support.polling import wait_until

pytestmark = pytest.mark.slow


def events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the scalars in the TensorBoard event files in `folder`."""
    import tensorflow as tf

    found: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(file)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":  # e.g. the model's config
                    continue
                found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def test_training_in_a_prefect_task_writes_tensorboard_logs_and_reports_progress(
    prefect_server, synthetic_split, tmp_path
):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    @flow
    def train_two_epochs(run_dir: str, tensorboard_dir: str):
        config = training_config("seed-mlp", seed=11, epochs=2, patience=5, batch_size=32)
        return train(config, synthetic_split, run_dir, tensorboard_dir)

    state = train_two_epochs(str(tmp_path / "run"), str(tmp_path / "tensorboard" / "run"), return_state=True)
    trained = state.result()

    recorded = json.loads(Path(trained.history_path).read_text())
    logged = {split: events(tmp_path / "tensorboard" / "run" / split) for split in ("train", "validation")}
    for split, prefix in (("train", ""), ("validation", "val_")):
        assert [step for step, _ in logged[split]["epoch_loss"]] == [0, 1]
        np.testing.assert_allclose([v for _, v in logged[split]["epoch_loss"]], recorded[f"{prefix}loss"], rtol=1e-5)
        np.testing.assert_allclose(
            [v for _, v in logged[split]["epoch_accuracy"]], recorded[f"{prefix}accuracy"], rtol=1e-5
        )

    def progress():
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )
        return [a for a in artifacts if a.key == PROGRESS_KEY]

    [artifact] = wait_until(progress, lambda found: len(found) == 1 and float(found[0].data) == 100.0)
    assert artifact.type == "progress"
    assert artifact.description == "Training seed-mlp: done after epoch 2 of 2"
