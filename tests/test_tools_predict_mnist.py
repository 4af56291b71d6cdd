"""`mnist-pipeline predict` on real MNIST digits with a real model: pictures of the test images score
as the arrays do, and photographed-like inverted ones are classified as the originals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_pipeline.cli.predict import load_files, predict_files
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from mnist_pipeline.core.registry import open_registry
from support.pictures import photographed, write_png

pytestmark = pytest.mark.slow

N_PICTURES = 300


@pytest.fixture(scope="module")
def test_images(split_files):
    return split_files.load("test")


@pytest.fixture(scope="module")
def mlp(trained_mlp):
    return load_model(trained_mlp.model_path)


def test_pngs_of_mnist_test_images_come_through_as_the_arrays_and_score_the_same(
    tmp_path, test_images, mlp_artifacts, mlp
):
    images, labels = test_images[0][:N_PICTURES], test_images[1][:N_PICTURES]
    files = [str(write_png(tmp_path / f"{i}.png", image)) for i, image in enumerate(images)]

    names, laid_out = load_files(files, invert=False)
    assert [name for name, _ in names] == files
    # MNIST's own layout is kept: at most one grey level differs (digits whose brightest pixel is 254)
    assert np.abs(laid_out.astype(int) - images).max() <= 1

    array_accuracy = (predict_probabilities(mlp, images).argmax(1) == labels).mean()
    output = predict_files(files, open_registry(mlp_artifacts / "registry"), None, 1, False, as_json=True)
    predicted = np.array([p["top"][0]["class"] for p in json.loads(output)["predictions"]])
    assert (predicted == labels).mean() == array_accuracy
    assert array_accuracy > 0.9  # a trained model, so the equality above means something


def test_photographed_inverted_digits_are_classified_as_the_originals(tmp_path, test_images, mlp):
    images = test_images[0][:50]
    # black on white, photographed-like: larger, RGB, JPEG, on an off-white page
    files = [str(photographed(255 - image, tmp_path / f"page-{i}.jpg")) for i, image in enumerate(images)]
    _, laid_out = load_files(files, invert=True)
    agree = (predict_probabilities(mlp, laid_out).argmax(1) == predict_probabilities(mlp, images).argmax(1)).mean()
    assert agree >= 0.9
