"""Converting a `.keras` model into its light model (LiteRT, `model.tflite`) and verifying it.

The light model lets `predict` and the service run without TensorFlow (`litert.py`). It is trusted
only once it answers as the Keras model does: on every test image given (the whole test split at
registration), the same top class and probabilities within `TOLERANCE`. A model whose conversion
fails or disagrees gets no light model; the record says why, and Keras serves it as before.

Conversion needs TensorFlow (imported here, inside the function); running the result does not.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.modelling.litert import LIGHT_MODEL_FILE, RUNTIME, LightModel
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from mnist_pipeline.core.support.files import sha256_file, write_bytes_atomic

TOLERANCE = 1e-5  # largest difference of any probability from Keras' allowed


def convert_verified(model_path: str | Path, folder: Path, test_images: np.ndarray) -> dict[str, Any]:
    """Write `folder/model.tflite` from the `.keras` model and verify it on `test_images`; returns the
    record kept in version.json: its file and SHA-256, or `file: None` and the problem. A light model
    that fails verification is deleted."""
    target = folder / LIGHT_MODEL_FILE
    record: dict[str, Any] = {"runtime": RUNTIME, "verified_on_images": int(len(test_images))}
    try:
        keras_model = load_model(model_path)
        _convert(keras_model, target)
        expected = predict_probabilities(keras_model, test_images)
        got = LightModel(target).predict(test_images)
    except Exception as error:  # any failure: no light model; Keras serves this version
        target.unlink(missing_ok=True)
        return {**record, "file": None, "problem": f"conversion failed: {type(error).__name__}: {error}"}
    difference = float(np.abs(got - expected).max())
    disagree = int((got.argmax(axis=1) != expected.argmax(axis=1)).sum())
    record |= {"max_probability_difference": difference, "top_class_disagreements": disagree}
    if disagree or difference > TOLERANCE:
        target.unlink()
        problem = (
            f"the light model disagrees with Keras on the test images: top class on {disagree} of "
            f"{len(test_images)}, probabilities by up to {difference:.2g} (at most {TOLERANCE:g} allowed)"
        )
        return {**record, "file": None, "problem": problem}
    return {**record, "file": LIGHT_MODEL_FILE, "sha256": sha256_file(target), "problem": None}


def _convert(keras_model: Any, target: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the signature it exports on the way
        data = converter.convert()
    write_bytes_atomic(target, data)
