"""What a registered version carries for tools outside the pipeline: its SavedModel export for
TensorFlow Serving (on real digits in test_tools_export_mnist.py; the TensorBoard logs and the
progress artifact of the train task are in test_train_task.py)."""

from __future__ import annotations

import pytest

from mnist_pipeline.core.registry import open_registry
from support.training import assert_serves_as_keras, register


def test_saved_model_takes_raw_uint8_images_and_predicts_as_the_keras_model(two_versions, synthetic_split):
    assert_serves_as_keras(
        open_registry(two_versions / "registry").version_dir("v0001"), synthetic_split.load("test")[0]
    )


def test_a_failed_export_leaves_no_version(tiny_strong, synthetic_split, tmp_path, monkeypatch):
    import mnist_pipeline.core.registry.registry

    def broken_export(model_path, target):
        target.mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(mnist_pipeline.core.registry.registry, "export_saved_model", broken_export)
    registry = open_registry(tmp_path / "registry")
    with pytest.raises(OSError, match="disk full"):
        register(registry, tiny_strong, synthetic_split, threshold=0.5)
    assert registry.versions() == [] and list(registry.backend.versions_dir.iterdir()) == []
