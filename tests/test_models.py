"""Presets: every model takes raw uint8 images and returns probabilities; seed-mlp is the tutorial."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.core.modelling.models import (
    PRESETS,
    ConfigError,
    build_model,
    for_inference,
    is_augmentation,
    training_config,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_model_maps_raw_uint8_images_to_probabilities(preset):
    model = build_model(training_config(preset, seed=0))
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    probabilities = np.asarray(model(images))
    assert probabilities.shape == (4, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.inputs[0].dtype == "uint8"


def test_scaling_is_the_models_first_step():
    model = build_model(training_config("mlp", seed=0))
    assert model.layers[1].name == "scale_to_unit"
    assert model.layers[1](np.full((1, 28, 28), 255, np.uint8)).numpy().max() == pytest.approx(1.0)


def test_seed_mlp_is_the_tutorial_model():
    config = training_config("seed-mlp", seed=0)
    assert (config.epochs, config.batch_size, config.patience, config.learning_rate) == (5, 100, 2, 1e-3)
    model = build_model(config)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in dense] == [50, 50, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    assert model.count_params() == 784 * 50 + 50 + 50 * 50 + 50 + 50 * 10 + 10
    assert model.optimizer.__class__.__name__ == "Adam"


def test_overrides_replace_preset_defaults_only_when_given():
    config = training_config("cnn", seed=5, epochs=3, batch_size=None)
    assert config.epochs == 3 and config.seed == 5
    assert config.batch_size == PRESETS["cnn"].defaults.batch_size


@pytest.mark.parametrize(
    "preset, width, dropout, units",
    [
        ("mlp", 64, 0.5, [64, 32, 10]),
        ("cnn", 32, 0.1, [32, 10]),
        ("cnn-best", 64, 0.2, [64, 10]),
        ("seed-mlp", 20, None, [20, 20, 10]),
    ],
)
def test_width_and_dropout_shape_the_model(preset, width, dropout, units):
    model = build_model(training_config(preset, seed=0, width=width, dropout=dropout))
    assert [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"] == units
    rates = [layer.rate for layer in model.layers if layer.__class__.__name__ == "Dropout"]
    assert rates == ([dropout] if dropout is not None else [])


def test_a_dropout_rate_for_a_preset_without_dropout_is_refused():
    with pytest.raises(ConfigError, match="seed-mlp has no dropout layer"):
        training_config("seed-mlp", seed=0, dropout=0.2)


@pytest.mark.parametrize("preset", ["cnn", "cnn-best", "mlp"])
def test_the_same_seed_builds_the_same_weights_while_another_thread_draws_from_random(preset):
    """Keras seeds each layer that has no seed from Python's global `random`, which other threads
    (Prefect's) draw from too: the layers' seeds must come from the config's seed alone."""
    import random
    import threading

    stop = threading.Event()

    def draw() -> None:
        while not stop.wait(0.0001):  # often, leaving the interpreter to the builds between draws
            random.random()

    noise = threading.Thread(target=draw, daemon=True)
    noise.start()
    try:
        builds = [build_model(training_config(preset, seed=7), steps_per_epoch=10).get_weights() for _ in range(3)]
    finally:
        stop.set()
        noise.join()
    for weights in builds[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(builds[0], weights, strict=True))
    other_seed = build_model(training_config(preset, seed=8), steps_per_epoch=10).get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(builds[0], other_seed, strict=True))


@pytest.mark.parametrize("preset", ["cnn", "cnn-best"])
def test_augmentation_moves_digits_in_training_only(preset):
    """The random shifts (and rotations) change what training sees, each batch anew; the model that
    is saved and served has none of them (a bare `model(x)` would run them), so the same picture gets
    the same answer every time, as it would from the trained model in inference mode."""
    model = build_model(training_config(preset, seed=0))
    augmentation = [layer for layer in model.layers if is_augmentation(layer)]
    assert augmentation, "no augmentation layer"
    digits = np.zeros((8, 28, 28, 1), np.float32)
    digits[:, 8:20, 12:16] = 1.0  # a "1", away from the edges
    moved = [np.asarray(augmentation[0](digits, training=True)) for _ in range(2)]
    assert not np.array_equal(moved[0], digits) and not np.array_equal(moved[0], moved[1])

    served = for_inference(model)
    assert not any(is_augmentation(layer) for layer in served.layers)
    assert len(served.layers) == len(model.layers) - len(augmentation)
    images = np.random.default_rng(1).integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    answer = np.asarray(served(images))
    assert np.array_equal(answer, np.asarray(served(images)))
    np.testing.assert_allclose(answer, np.asarray(model(images, training=False)), atol=1e-6)


def test_cnn_best_warms_its_learning_rate_up_then_decays_it_to_zero():
    config = training_config("cnn-best", seed=0, epochs=10)
    schedule = build_model(config, steps_per_epoch=100).optimizer._learning_rate  # Keras keeps the schedule there
    rates = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(config.learning_rate / 2)
    assert rates[2] == pytest.approx(config.learning_rate)  # the peak, after one epoch
    assert rates[2] > rates[3] > rates[4] and rates[4] == pytest.approx(0.0, abs=1e-9)


def test_batch_normalization_trains_on_the_fused_kernel_as_keras_would_and_is_saved_as_keras_own():
    """cnn-best's batch normalizations train on TensorFlow's fused kernel (Keras' own took about half
    of a training step on CPU): the same outputs and moving averages as Keras' layer, after a
    convolution and after a dense layer; the model that is saved holds Keras' layer, trained weights."""
    import keras

    from mnist_pipeline.core.modelling.fused_batch_norm import FusedBatchNormalization

    rng = np.random.default_rng(0)
    for shape in [(64, 12, 12, 32), (64, 256)]:
        batch = rng.normal(2.0, 3.0, shape).astype(np.float32)
        keras_own, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
        keras_own.build(shape)
        fused.build(shape)
        np.testing.assert_allclose(fused(batch, training=True), keras_own(batch, training=True), atol=2e-5)
        for ours, theirs in zip(fused.get_weights(), keras_own.get_weights(), strict=True):
            # gamma, beta, moving mean and variance; a variance left Bessel-corrected is 1.4e-3 off at 64 rows
            np.testing.assert_allclose(ours, theirs, rtol=1e-5)
        assert not np.allclose(fused.moving_variance, 1.0)  # the training step moved them

    model = build_model(training_config("cnn-best", seed=0))
    trained = [layer for layer in model.layers if isinstance(layer, FusedBatchNormalization)]
    assert len(trained) == 5
    saved = [layer for layer in for_inference(model).layers if "BatchNormalization" in type(layer).__name__]
    assert [type(layer) for layer in saved] == [keras.layers.BatchNormalization] * 5
    for ours, theirs in zip(trained, saved, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True))
