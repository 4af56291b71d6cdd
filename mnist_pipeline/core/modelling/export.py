"""The SavedModel export each registered version carries, for TensorFlow Serving.

Keras 3 writes SavedModel directories only through `model.export()`: an inference-only artifact
whose `serving_default` signature takes raw uint8 images `image` [n, 28, 28] (scaling is inside the
model, as in the `.keras` file) and returns `output_0`, the probabilities [n, 10] of the digits 0-9.
"""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.core.data.mnist import IMAGE_SHAPE
from mnist_pipeline.core.modelling.models import load_model


def export_saved_model(model_path: str | Path, target: Path) -> None:
    """Export the `.keras` model at `model_path` as a SavedModel directory `target`."""
    import tensorflow as tf

    model = load_model(model_path)
    signature = [tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="image")]
    model.export(str(target), format="tf_saved_model", verbose=False, input_signature=signature)
