"""The tf.data pipeline that feeds pictures held in memory to Keras, for training, validation and
prediction.

tf.data's autotuning is off: on a busy machine (another training beside it, as in the tests), a
finished `fit` often waited seconds for its autotuned iterator to be torn down, after the last
epoch's callbacks had run, where an iterator without autotuning returned at once; and `predict` on
an array was slower than on this pipeline (bench/ci_results.md, "tf.data's autotuning"). There is
nothing to tune here: slices of arrays already in memory, no parallel map, two batches read ahead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SHUFFLE_BUFFER = 10_000
READ_AHEAD = 2  # batches


def batches_of(
    images: np.ndarray, labels: np.ndarray | None, batch_size: int, *, shuffle_seed: int | None = None
) -> Any:
    """Batches of raw uint8 images (with their labels, if given), in order, or shuffled anew each epoch
    when a seed is given (the same order for the same seed)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).prefetch(READ_AHEAD).with_options(options)
