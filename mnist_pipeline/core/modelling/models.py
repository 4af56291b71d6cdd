"""Model presets: the architectures and the hyperparameters they train best with.

Every model takes raw uint8 28x28 images and returns class probabilities: its first layer scales
pixels to [0, 1], so training, evaluation and serving share one preprocessing step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.data.mnist import IMAGE_SHAPE, NUM_CLASSES
from mnist_pipeline.core.modelling.batches import batches_of
from mnist_pipeline.core.support.errors import PermanentError
from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow

# Training steps run per call into TensorFlow: one call per step costs more in Python and dispatch
# than a whole step of the small MLPs (bench/ measures it). Callbacks still see every epoch's end.
STEPS_PER_EXECUTION = 50


@dataclass(frozen=True)
class TrainingConfig:
    """The hyperparameters of one training run (a preset's defaults, with any overrides applied)."""

    preset: str
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int
    width: int = 0  # units of the first dense layer (the mlp's second has half as many)
    dropout: float | None = None  # dropout rate; None: the preset has no dropout layer


class ConfigError(PermanentError):
    """A training configuration that the preset cannot take."""


def _seed_mlp(layers: Any, config: TrainingConfig) -> list[Any]:
    """The tutorial's model: 784-50-50-10, relu, softmax."""
    return [
        layers.Flatten(),
        layers.Dense(config.width, activation="relu"),
        layers.Dense(config.width, activation="relu"),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ]


def _mlp(layers: Any, config: TrainingConfig) -> list[Any]:
    return [
        layers.Flatten(),
        layers.Dense(config.width, activation="relu"),
        layers.Dropout(config.dropout),
        layers.Dense(config.width // 2, activation="relu"),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ]


def _shifted(layers: Any, fraction: float) -> list[Any]:
    """Digits moved by up to `fraction` of their 28 pixels each way, anew in every batch: training-only
    layers, left out of the model that is saved (`for_inference`)."""
    return [layers.Reshape((*IMAGE_SHAPE, 1)), layers.RandomTranslation(fraction, fraction, fill_mode="constant")]


def conv_pool_layers(layers: Any, config: TrainingConfig, filters: tuple[int, int]) -> list[Any]:
    """Two 3x3 convolutions of `filters`, each max-pooled, then dense (width), dropout and softmax."""
    first, second = filters
    return [
        layers.Conv2D(first, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(second, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(config.width, activation="relu"),
        layers.Dropout(config.dropout),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ]


def _cnn(layers: Any, config: TrainingConfig) -> list[Any]:
    """Two small conv blocks, trained on digits shifted by up to 1.7 pixels. 32 and 64 filters: with 24
    and 48, some seeds stayed below 99.4%; batch 256 at 4e-3 for 9 epochs: at 128 and 2e-3 it needed 10
    epochs of ~1.4x the time each (bench/time_to_accuracy_results.md)."""
    return [*_shifted(layers, 0.06), *conv_pool_layers(layers, config, (32, 64))]


def _conv_bn(layers: Any, filters: int) -> list[Any]:
    """3x3 convolution, batch normalization, relu (no bias: the normalization's shift is one)."""
    return [layers.Conv2D(filters, 3, use_bias=False), layers.BatchNormalization(), layers.ReLU()]


def _cnn_best(layers: Any, config: TrainingConfig) -> list[Any]:
    """Two double-conv blocks with batch normalization, trained on shifted and slightly rotated digits."""
    return [
        *_shifted(layers, 0.1),  # up to 2.8 pixels
        layers.RandomRotation(0.03, fill_mode="constant"),  # up to ~11 degrees
        *_conv_bn(layers, 32),
        *_conv_bn(layers, 32),
        layers.MaxPooling2D(),
        *_conv_bn(layers, 64),
        *_conv_bn(layers, 64),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(config.width, use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dropout(config.dropout),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ]


@dataclass(frozen=True)
class Preset:
    layers: Callable[[Any, TrainingConfig], list[Any]]  # (keras.layers, config) -> the layers after the input's scaling
    defaults: TrainingConfig
    description: str  # what it is, and what it reaches in how long on 2 CPU cores (bench/time_to_accuracy_results.md)
    cosine_decay: bool = True  # learning rate decays to 0 over the planned epochs (not in the tutorial)
    warmup_epochs: float = 0.0  # before the decay, the learning rate rises from 0 over this many epochs


PRESETS: dict[str, Preset] = {
    "cnn": Preset(
        _cnn,
        TrainingConfig(
            "cnn", epochs=9, batch_size=256, learning_rate=4e-3, patience=3, seed=42, width=128, dropout=0.3
        ),
        "small convolutional network, the default: about 99.4-99.5% in 1-3.5 minutes on 2 CPU cores, by CPU",
    ),
    "cnn-best": Preset(
        _cnn_best,
        TrainingConfig(
            "cnn-best", epochs=25, batch_size=256, learning_rate=3e-3, patience=5, seed=42, width=256, dropout=0.3
        ),
        "the most accurate: batch-normalized network, shifted and rotated digits; about 99.6% in 6-33 minutes on 2 CPU cores, by CPU",
        warmup_epochs=1.0,
    ),
    "mlp": Preset(
        _mlp,
        # batch 512 with the learning rate scaled 4x from (128, 1e-3): fewer, fuller steps; 0.981 vs 0.980
        TrainingConfig(
            "mlp", epochs=6, batch_size=512, learning_rate=4e-3, patience=2, seed=42, width=256, dropout=0.2
        ),
        "fast multilayer perceptron: about 98% in seconds",
    ),
    "seed-mlp": Preset(
        _seed_mlp,
        TrainingConfig("seed-mlp", epochs=5, batch_size=100, learning_rate=1e-3, patience=2, seed=42, width=50),
        "the tutorial's 784-50-50-10 network as written: about 96.5%",
        cosine_decay=False,
    ),
}


def training_config(preset: str, seed: int, **overrides: int | float | None) -> TrainingConfig:
    """The preset's defaults with the overrides that are not None; a dropout rate for a preset without
    a dropout layer is refused (ConfigError)."""
    given: dict[str, Any] = {name: value for name, value in overrides.items() if value is not None}
    if "dropout" in given and PRESETS[preset].defaults.dropout is None:
        raise ConfigError(
            f"{preset} has no dropout layer, so a dropout rate cannot apply to it; leave dropout "
            f"out, or choose a preset with one ({', '.join(p for p, s in PRESETS.items() if s.defaults.dropout is not None)})"
        )
    return replace(PRESETS[preset].defaults, seed=seed, **given)


@contextmanager
def _layer_seeds_from(seed: int) -> Iterator[None]:
    """Give the layers built inside seeds of their own, drawn from `random.Random(seed)`.

    Keras draws the seed of every initializer and dropout layer built without one from Python's global
    `random` (`make_default_seed` in keras.src.random.seed_generator), which any other thread of the
    process may draw from at the same moment (Prefect's client and its retries do): the same config
    then gave other weights now and then, and a retraining on unchanged inputs was not recognised as
    unchanged. Keras has no public way to give it another generator, so its module's `python_random`
    is swapped while the layers are built. The generator is seeded as `keras.utils.set_random_seed`
    seeds the global one before a training, so an undisturbed run's weights are unchanged.
    """
    from keras.src.random import seed_generator

    global_random = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = global_random


def build_model(config: TrainingConfig, steps_per_epoch: int = 1) -> Any:
    """A compiled Keras model of the config's preset, taking raw uint8 images."""
    import_tensorflow()
    import keras

    preset = PRESETS[config.preset]
    learning_rate = config.learning_rate
    if preset.cosine_decay:
        total_steps = steps_per_epoch * config.epochs
        warmup_steps = min(round(steps_per_epoch * preset.warmup_epochs), total_steps // 2)  # short runs decay too
        if warmup_steps:
            learning_rate = keras.optimizers.schedules.CosineDecay(
                0.0, total_steps - warmup_steps, warmup_target=learning_rate, warmup_steps=warmup_steps
            )
        else:
            learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)

    from mnist_pipeline.core.modelling.fused_batch_norm import FusedBatchNormalization

    with _layer_seeds_from(config.seed):
        inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
        x = keras.layers.Rescaling(1.0 / 255, name="scale_to_unit")(inputs)
        for layer in preset.layers(keras.layers, config):
            if type(layer) is keras.layers.BatchNormalization:  # trains on the fused kernel (fused_batch_norm.py)
                layer = FusedBatchNormalization.from_config(layer.get_config())
            x = layer(x)
        model = keras.Model(inputs, x, name=config.preset.replace("-", "_"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def is_augmentation(layer: Any) -> bool:
    """Whether `layer` is one of Keras' random augmentation layers (RandomTranslation, RandomRotation,
    RandomZoom, ...: all named Random*)."""
    return type(layer).__name__.startswith("Random")


def for_inference(model: Any) -> Any:
    """The trained model as it is saved, served and exported: without its augmentation layers, and with
    Keras' own BatchNormalization where it trained on the fused kernel (with the trained weights).
    Keras' random preprocessing layers pass pictures through when `training` is False, but a bare
    `model(x)` and `model.export()` call them in training mode, so they are taken out."""
    import keras

    from mnist_pipeline.core.modelling.fused_batch_norm import FusedBatchNormalization, as_keras_layer

    kept = [layer for layer in model.layers[1:] if not is_augmentation(layer)]
    fused = any(isinstance(layer, FusedBatchNormalization) for layer in kept)
    if len(kept) == len(model.layers) - 1 and not fused:
        return model
    inputs = x = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    for layer in kept:
        if isinstance(layer, FusedBatchNormalization):
            trained, layer = layer, as_keras_layer(layer)
            x = layer(x)
            layer.set_weights(trained.get_weights())
        else:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def load_model(model_path: str | Path) -> Any:
    """Load a `.keras` model with Keras' safe mode on (no arbitrary code from the file)."""
    import_tensorflow()
    import keras

    path = Path(model_path)
    if path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras model file; only the .keras format is loaded")
    return keras.models.load_model(path, safe_mode=True, compile=False)


def predict_probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    """Class probabilities [n, 10] of raw uint8 images [n, 28, 28]."""
    return np.asarray(model.predict(batches_of(images, None, 1000), verbose=0))


def top_classes(probabilities: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """The k most probable classes of each row, with their probabilities, most probable first (of equal
    ones, the lower class first). In Python on each row's list: for the ten classes of the one or few
    rows a service's answer holds, numpy's per-call cost was most of the time."""
    return [
        [(c, row[c]) for c in sorted(range(len(row)), key=row.__getitem__, reverse=True)[:k]]
        for row in np.asarray(probabilities).tolist()
    ]
