"""Stage 1: the split of the real MNIST, its manifest, its cache key, and bad bundles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TEST_CLASS_COUNTS, TRAIN_CLASS_COUNTS
from tasks.errors import BundleMissingError, BundleTruncatedError, ChecksumMismatchError
from tasks.paths import BUNDLED_MNIST_DIR
from tasks.split import BUNDLE_FILES, is_intact, make_recipe, split_train_validation, verify_bundle


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


def test_train_validation_indices_are_disjoint_seeded_and_complete():
    train, validation = split_train_validation(60000, 0.1, seed=3)
    assert len(validation) == 6000 and len(train) == 54000
    assert not set(train) & set(validation)
    assert sorted(np.concatenate([train, validation])) == list(range(60000))
    again_train, again_validation = split_train_validation(60000, 0.1, seed=3)
    assert np.array_equal(validation, again_validation)
    _, other_validation = split_train_validation(60000, 0.1, seed=4)
    assert not np.array_equal(validation, other_validation)


def test_recipe_key_changes_with_each_input():
    base = make_recipe("bundle", BUNDLED_MNIST_DIR, 0.1, 42)
    assert base.key == make_recipe("bundle", BUNDLED_MNIST_DIR, 0.1, 42).key
    assert base.key != make_recipe("bundle", BUNDLED_MNIST_DIR, 0.2, 42).key
    assert base.key != make_recipe("bundle", BUNDLED_MNIST_DIR, 0.1, 43).key


def test_recipe_checksums_match_what_tfds_registers():
    from tasks.split import expected_checksums

    recipe = make_recipe("bundle", BUNDLED_MNIST_DIR, 0.1, 42)
    assert dict(recipe.source_sha256) == expected_checksums()
    verify_bundle(recipe, BUNDLED_MNIST_DIR)  # the shipped bundle is genuine


def test_altered_split_file_is_not_intact(split_manifest, tmp_path):
    copy = tmp_path / "split"
    shutil.copytree(split_manifest.parent, copy)
    assert is_intact(copy)
    with open(copy / "test.npz", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not is_intact(copy)
    (copy / "test.npz").unlink()
    assert not is_intact(copy)


@pytest.fixture
def bundle_copy(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLED_MNIST_DIR, copy)
    return copy


def test_flipped_byte_names_file_expected_and_actual_checksum(bundle_copy):
    target = bundle_copy / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0x01
    target.write_bytes(bytes(data))
    recipe = make_recipe("bundle", bundle_copy, 0.1, 42)
    with pytest.raises(ChecksumMismatchError) as error:
        verify_bundle(recipe, bundle_copy)
    assert not isinstance(error.value, BundleTruncatedError)
    message = str(error.value)
    assert str(target) in message
    assert "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in message  # expected
    assert dict(recipe.source_sha256)[target.name] in message  # actual
    assert "Restore" in message


def test_truncated_bundle_file_is_reported_as_truncated(bundle_copy):
    target = bundle_copy / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(BundleTruncatedError, match="truncated"):
        verify_bundle(make_recipe("bundle", bundle_copy, 0.1, 42), bundle_copy)


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_missing_bundle_file_names_the_path(bundle_copy, name):
    (bundle_copy / name).unlink()
    with pytest.raises(BundleMissingError, match=name):
        make_recipe("bundle", bundle_copy, 0.1, 42)


def test_missing_bundle_directory_says_how_to_fix(tmp_path):
    with pytest.raises(BundleMissingError, match="--bundle-dir"):
        make_recipe("bundle", tmp_path / "nowhere", 0.1, 42)
