"""The SavedModel export of a real registered model, on real MNIST digits."""

from __future__ import annotations

import pytest

from mnist_pipeline.core.registry import open_registry
from support.training import assert_serves_as_keras

pytestmark = pytest.mark.slow


def test_saved_model_takes_raw_uint8_images_and_predicts_real_digits_as_the_keras_model(mlp_artifacts, split_files):
    assert_serves_as_keras(
        open_registry(mlp_artifacts / "registry").version_dir("v0001"), split_files.load("test")[0][:1000]
    )
