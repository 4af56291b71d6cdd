"""What a run leaves for tools outside the pipeline: the SavedModel export of each registered version
(TF Serving), the TensorBoard logs and the training progress artifact."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tasks.evaluate import evaluate_model, load_model, predict_probabilities
from tasks.export import SAVED_MODEL_DIR
from tasks.models import training_config
from tasks.register import register_candidate
from tasks.registry import Registry
from tasks.train import PROGRESS_KEY, fit, train


@pytest.fixture(scope="module")
def registered_mlp(trained_mlp, split_files, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("export") / "registry")
    evaluation = evaluate_model(trained_mlp, split_files, tmp_path_factory.mktemp("eval"))
    decision = register_candidate(registry, trained_mlp, evaluation, split_files, 0.5, {}, None)
    return registry.version_dir(decision.candidate)


def test_saved_model_takes_raw_uint8_images_and_predicts_as_the_keras_model(registered_mlp, split_files):
    import tensorflow as tf

    images = split_files.load("test")[0][:1000]
    serving = tf.saved_model.load(str(registered_mlp / SAVED_MODEL_DIR)).signatures["serving_default"]
    [spec] = serving.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]

    served = serving(image=tf.constant(images))["output_0"].numpy()
    expected = predict_probabilities(load_model(registered_mlp / "model.keras"), images)
    assert served.shape == (1000, 10)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert np.array_equal(served.argmax(1), expected.argmax(1))


def test_a_failed_export_leaves_no_version(trained_mlp, split_files, tmp_path, monkeypatch):
    import tasks.register

    def broken_export(model_path, target):
        target.mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(tasks.register, "export_saved_model", broken_export)
    registry = Registry(tmp_path / "registry")
    evaluation = evaluate_model(trained_mlp, split_files, tmp_path / "eval")
    with pytest.raises(OSError, match="disk full"):
        register_candidate(registry, trained_mlp, evaluation, split_files, 0.5, {}, None)
    assert registry.versions() == [] and list(registry.versions_dir.iterdir()) == []


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
        prefect_server, split_files, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    @flow
    def train_two_epochs(run_dir: str, tensorboard_dir: str):
        return train(training_config("seed-mlp", seed=11, epochs=2, patience=5), split_files, run_dir, tensorboard_dir)

    state = train_two_epochs(str(tmp_path / "run"), str(tmp_path / "tensorboard" / "run"), return_state=True)
    trained = state.result()

    recorded = json.loads(Path(trained.history_path).read_text())
    logged = {split: events(tmp_path / "tensorboard" / "run" / split) for split in ("train", "validation")}
    for split, prefix in (("train", ""), ("validation", "val_")):
        assert [step for step, _ in logged[split]["epoch_loss"]] == [0, 1]
        np.testing.assert_allclose([v for _, v in logged[split]["epoch_loss"]], recorded[f"{prefix}loss"], rtol=1e-5)
        np.testing.assert_allclose([v for _, v in logged[split]["epoch_accuracy"]], recorded[f"{prefix}accuracy"],
                                   rtol=1e-5)

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    [progress] = [a for a in artifacts if a.key == PROGRESS_KEY]
    assert progress.type == "progress"
    assert float(progress.data) == 100.0 and progress.description == "Training seed-mlp: epoch 2 of 2"


def test_training_outside_prefect_makes_no_progress_artifact(split_files, tmp_path, monkeypatch):
    """Tests and scripts call `fit` directly: it must not need a Prefect run (or a server)."""
    import prefect.artifacts

    def no_artifacts(*args, **kwargs):
        raise AssertionError("fit outside a task run created an artifact")

    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", no_artifacts)
    trained = fit(training_config("seed-mlp", seed=12, epochs=1), split_files, tmp_path / "run",
                  logging.getLogger("tests.fit"))
    assert Path(trained.model_path).is_file()
    assert not (tmp_path / "tensorboard").exists()
