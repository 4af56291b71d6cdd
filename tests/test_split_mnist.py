"""Stages 1 and 2 on the real MNIST: the split's official sizes, genuine pixels, no leak between
splits, and the checks that pass it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_pipeline.core.data.splits import check_split
from mnist_pipeline.core.support.files import sha256_file
from support.data import TEST_CLASS_COUNTS, TRAIN_CLASS_COUNTS

pytestmark = pytest.mark.slow


def test_split_has_official_sizes_and_class_counts(split_manifest):
    manifest = json.loads(split_manifest.read_text())
    splits = manifest["splits"]
    assert (splits["train"]["count"], splits["validation"]["count"], splits["test"]["count"]) == (54000, 6000, 10000)
    train_and_validation = np.add(splits["train"]["class_counts"], splits["validation"]["class_counts"])
    assert train_and_validation.tolist() == TRAIN_CLASS_COUNTS
    assert splits["test"]["class_counts"] == TEST_CLASS_COUNTS


def test_split_images_are_the_genuine_pixels(split_files):
    train_images, _ = split_files.load("train")
    validation_images, _ = split_files.load("validation")
    test_images, _ = split_files.load("test")
    all_train = np.concatenate([train_images, validation_images])
    assert all_train.dtype == np.uint8 and all_train.shape == (60000, 28, 28)
    assert all_train.mean() == pytest.approx(33.3184, abs=1e-3)
    assert test_images.mean() == pytest.approx(33.7912, abs=1e-3)


def test_no_example_is_in_two_splits(split_files):
    def rows(split):
        images, _ = split_files.load(split)
        return {image.tobytes() for image in images}

    train, validation, test = rows("train"), rows("validation"), rows("test")
    # The 70,000 MNIST images are pairwise distinct, so any shared image would be a leak.
    assert (len(train), len(validation), len(test)) == (54000, 6000, 10000)
    assert not train & validation and not train & test and not validation & test


def test_real_split_passes(split_manifest):
    files = check_split(split_manifest)
    assert files.data_sha256 == sha256_file(split_manifest)
