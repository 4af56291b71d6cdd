"""Stage 2: split validation and the input pipelines, on a synthetic split (the real one passes in
test_split_mnist.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.data.splits import SplitFiles, check_split
from mnist_pipeline.core.modelling.batches import batches_of
from mnist_pipeline.core.support.errors import SplitValidationError
from mnist_pipeline.core.support.files import sha256_file, write_json_atomic


@pytest.fixture
def split_copy(synthetic_split, tmp_path):
    """The manifest of a private copy of the synthetic split."""
    copy = shutil.copytree(Path(synthetic_split.manifest_path).parent, tmp_path / "split")
    return Path(copy) / "manifest.json"


def _rewrite(manifest_path, split, images, labels, *, fix_manifest=True):
    """Replace one split's arrays, updating the manifest's checksum (so only the content is wrong)."""
    file = SplitFiles(str(manifest_path), "").path(split)
    np.savez_compressed(file, images=images, labels=labels)
    if fix_manifest:
        manifest = json.loads(manifest_path.read_text())
        manifest["splits"][split]["sha256"] = sha256_file(file)
        write_json_atomic(manifest_path, manifest)


def _load(manifest_path, split):
    return SplitFiles(str(manifest_path), "").load(split)


def test_a_split_as_written_passes(split_copy):
    files = check_split(split_copy)
    assert files.data_sha256 == sha256_file(split_copy)


def test_checksum_mismatch_names_file_and_fix(split_copy):
    images, labels = _load(split_copy, "test")
    _rewrite(split_copy, "test", images[::-1], labels[::-1], fix_manifest=False)
    with pytest.raises(SplitValidationError, match=r"test-[0-9a-f]{16}\.npz has SHA-256 .*Delete that folder"):
        check_split(split_copy)


def test_label_out_of_range_is_rejected(split_copy):
    images, labels = _load(split_copy, "validation")
    labels = labels.copy()
    labels[0] = 10
    _rewrite(split_copy, "validation", images, labels)
    with pytest.raises(SplitValidationError, match="labels outside 0-9"):
        check_split(split_copy)


def test_missing_class_is_rejected(split_copy):
    images, labels = _load(split_copy, "test")
    keep = labels != 7
    _rewrite(split_copy, "test", images[keep], labels[keep])  # fewer examples than the manifest records, too
    with pytest.raises(SplitValidationError, match="test has no example of class 7"):
        check_split(split_copy)


def test_wrong_image_shape_is_rejected(split_copy):
    images, labels = _load(split_copy, "test")
    _rewrite(split_copy, "test", images[:, :27, :27], labels)
    with pytest.raises(SplitValidationError, match="expected uint8"):
        check_split(split_copy)


def test_unreadable_manifest_is_rejected(split_copy):
    split_copy.write_text("{not json")
    with pytest.raises(SplitValidationError, match="manifest"):
        check_split(split_copy)


def test_pipeline_batches_raw_uint8_and_shuffles_with_seed(synthetic_split):
    images, labels = synthetic_split.load("train")
    pipeline = batches_of(images, labels, 100, shuffle_seed=1)
    assert pipeline.options().autotune.enabled is False  # see batches.py: its iterator's teardown waited
    batches = list(pipeline.take(2))
    first_images, first_labels = batches[0]
    assert first_images.dtype.name == "uint8" and tuple(first_images.shape) == (100, 28, 28)
    assert not np.array_equal(first_labels.numpy(), labels[:100])  # shuffled
    again = next(iter(batches_of(images, labels, 100, shuffle_seed=1)))
    assert np.array_equal(again[1].numpy(), first_labels.numpy())  # repeatable
    ordered = next(iter(batches_of(images, labels, 100)))
    assert np.array_equal(ordered[1].numpy(), labels[:100])  # evaluation order kept
