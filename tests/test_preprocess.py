"""Stage 2: split validation and the input pipelines."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tasks.errors import SplitValidationError
from tasks.files import sha256_file, write_json_atomic
from tasks.preprocess import check_split, input_pipeline


def test_real_split_passes(split_manifest):
    files = check_split(split_manifest)
    assert files.data_sha256 == sha256_file(split_manifest)


@pytest.fixture
def split_copy(split_manifest, tmp_path):
    copy = tmp_path / "split"
    shutil.copytree(split_manifest.parent, copy)
    return copy / "manifest.json"


def _rewrite(manifest_path, split, images, labels, *, fix_manifest=True):
    """Replace one split's arrays, updating the manifest's checksum (so only the content is wrong)."""
    file = manifest_path.parent / f"{split}.npz"
    np.savez_compressed(file, images=images, labels=labels)
    if fix_manifest:
        manifest = json.loads(manifest_path.read_text())
        manifest["splits"][split]["sha256"] = sha256_file(file)
        write_json_atomic(manifest_path, manifest)


def test_checksum_mismatch_names_file_and_fix(split_copy):
    images, labels = np.load(split_copy.parent / "test.npz")["images"], np.load(split_copy.parent / "test.npz")["labels"]
    _rewrite(split_copy, "test", images[::-1], labels[::-1], fix_manifest=False)
    with pytest.raises(SplitValidationError, match=r"test\.npz has SHA-256 .*Delete that folder"):
        check_split(split_copy)


def test_label_out_of_range_is_rejected(split_copy):
    data = np.load(split_copy.parent / "validation.npz")
    labels = data["labels"].copy()
    labels[0] = 10
    _rewrite(split_copy, "validation", data["images"], labels)
    with pytest.raises(SplitValidationError, match="labels outside 0-9"):
        check_split(split_copy)


def test_missing_class_is_rejected(split_copy):
    data = np.load(split_copy.parent / "test.npz")
    keep = data["labels"] != 7
    _rewrite(split_copy, "test", data["images"][keep], data["labels"][keep])
    with pytest.raises(SplitValidationError):
        check_split(split_copy)


def test_wrong_image_shape_is_rejected(split_copy):
    data = np.load(split_copy.parent / "test.npz")
    _rewrite(split_copy, "test", data["images"][:, :27, :27], data["labels"])
    with pytest.raises(SplitValidationError, match="expected uint8"):
        check_split(split_copy)


def test_unreadable_manifest_is_rejected(split_copy):
    split_copy.write_text("{not json")
    with pytest.raises(SplitValidationError, match="manifest"):
        check_split(split_copy)


def test_pipeline_batches_raw_uint8_and_shuffles_with_seed(split_files):
    images, labels = split_files.load("validation")
    batches = list(input_pipeline(images, labels, 500, shuffle_seed=1).take(2))
    first_images, first_labels = batches[0]
    assert first_images.dtype.name == "uint8" and tuple(first_images.shape) == (500, 28, 28)
    assert not np.array_equal(first_labels.numpy(), labels[:500])  # shuffled
    again = next(iter(input_pipeline(images, labels, 500, shuffle_seed=1)))
    assert np.array_equal(again[1].numpy(), first_labels.numpy())  # repeatable
    ordered = next(iter(input_pipeline(images, labels, 500)))
    assert np.array_equal(ordered[1].numpy(), labels[:500])  # evaluation order kept
