"""Stage 1: how the split is made (seeded indices, recipe key, intact files) and bad MNIST bundles.

The split itself is tested on a synthetic one here; the real MNIST split is in test_split_mnist.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.data.mnist import BUNDLE_FILES, registered_files, verify_bundle
from mnist_pipeline.core.data.splits import is_intact, make_recipe, split_train_validation
from mnist_pipeline.core.storage.paths import bundled_mnist_dir
from mnist_pipeline.core.support.errors import BundleMissingError, BundleTruncatedError, ChecksumMismatchError
from support.data import bundle_copy, flip_byte


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
    base = make_recipe("bundle", bundled_mnist_dir(), 0.1, 42)
    assert base.key == make_recipe("bundle", bundled_mnist_dir(), 0.1, 42).key
    assert base.key != make_recipe("bundle", bundled_mnist_dir(), 0.2, 42).key
    assert base.key != make_recipe("bundle", bundled_mnist_dir(), 0.1, 43).key


def test_recipe_checksums_match_what_tfds_registers():
    recipe = make_recipe("bundle", bundled_mnist_dir(), 0.1, 42)
    assert dict(recipe.source_sha256) == {name: sha for name, (_, sha) in registered_files().items()}
    verify_bundle(bundled_mnist_dir(), dict(recipe.source_sha256))  # the shipped bundle is genuine


def test_altered_split_file_is_not_intact(synthetic_split, tmp_path):
    copy = Path(shutil.copytree(Path(synthetic_split.manifest_path).parent, tmp_path / "split"))
    assert is_intact(copy)
    test_file = copy / json.loads((copy / "manifest.json").read_text())["splits"]["test"]["file"]
    flip_byte(test_file, 100)
    assert not is_intact(copy)
    test_file.unlink()
    assert not is_intact(copy)


@pytest.fixture
def bundle(tmp_path):
    return bundle_copy(tmp_path / "bundle")


def test_flipped_byte_names_file_expected_and_actual_checksum(bundle):
    target = bundle / "t10k-labels-idx1-ubyte.gz"
    flip_byte(target, 1000)
    recipe = make_recipe("bundle", bundle, 0.1, 42)
    with pytest.raises(ChecksumMismatchError) as error:
        verify_bundle(bundle, dict(recipe.source_sha256))
    assert not isinstance(error.value, BundleTruncatedError)
    message = str(error.value)
    assert str(target) in message
    assert "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in message  # expected
    assert dict(recipe.source_sha256)[target.name] in message  # actual
    assert "Restore" in message


def test_truncated_bundle_file_is_reported_as_truncated(bundle):
    target = bundle / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(BundleTruncatedError, match="truncated"):
        verify_bundle(bundle, dict(make_recipe("bundle", bundle, 0.1, 42).source_sha256))


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_missing_bundle_file_names_the_path(bundle, name):
    (bundle / name).unlink()
    with pytest.raises(BundleMissingError, match=name):
        make_recipe("bundle", bundle, 0.1, 42)


def test_missing_bundle_directory_says_how_to_fix(tmp_path):
    with pytest.raises(BundleMissingError, match="--bundle-dir"):
        make_recipe("bundle", tmp_path / "nowhere", 0.1, 42)
