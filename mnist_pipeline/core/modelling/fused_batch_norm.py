"""Batch normalization on TensorFlow's fused kernel while training.

Keras 3's BatchNormalization computes a batch's moments and then normalizes, as separate operations;
on this project's 2-core CPU that was about half of a `cnn-best` training step
(bench/time_to_accuracy_results.md, "Where cnn-best's time goes"). TensorFlow's fused kernel (oneDNN
on CPU, cuDNN on GPU) does both in one operation. The layer trains with it and is otherwise Keras'
own: the same weights, the same moving averages, the same inference. `for_inference` (models.py)
puts Keras' layer back in the model that is saved, so nothing that loads, serves or converts a model
needs this module.
"""

from __future__ import annotations

from typing import Any

from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402 - after TensorFlow's start-up notices are filtered


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (last axis, no mask, no renorm) whose training step runs
    TensorFlow's fused kernel."""

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        rank = len(inputs.shape)
        fusable = self.axis in (-1, rank - 1) and rank in (2, 4) and not self.renorm and self.compute_dtype == "float32"
        if not (training and self.trainable and fusable and mask is None and self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        images = inputs if rank == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            images, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )
        count = tf.cast(tf.size(images) // channels, variance.dtype)
        variance = variance * (count - 1) / count  # the kernel's is Bessel-corrected; Keras keeps the batch's own
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs if rank == 4 else tf.reshape(outputs, tf.shape(inputs))


def as_keras_layer(layer: FusedBatchNormalization) -> Any:
    """Keras' own BatchNormalization with `layer`'s configuration (weights: set them once built)."""
    return keras.layers.BatchNormalization.from_config(layer.get_config())
