"""The MNIST dataset: its facts, its four source files, and reading them.

Two sources: `bundle`, the four IDX files in a folder (shipped with the package; offline), checked
against the sizes and SHA-256 sums tensorflow-datasets registers for MNIST and then parsed directly;
and `tfds`, tensorflow-datasets' own download and preparation.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from mnist_pipeline.core.data.idx import read_idx
from mnist_pipeline.core.data.tfds_import import import_tfds
from mnist_pipeline.core.support.errors import BundleMissingError, BundleTruncatedError, ChecksumMismatchError
from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow

DATASET = "mnist:3.0.1"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
BUNDLE_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SOURCES = ("bundle", "tfds")  # the IDX files in a folder (offline), or tfds' own download


def bundle_file(bundle_dir: Path, name: str) -> Path:
    """The path of one bundle file; fails, naming the path and the way out, if it is not there."""
    path = bundle_dir / name
    if not bundle_dir.is_dir():
        raise BundleMissingError(
            f"MNIST bundle directory {bundle_dir} does not exist or is not a directory. Point "
            "--bundle-dir at a folder holding the four MNIST IDX .gz files (the project ships them "
            "in data/mnist/), or use --data-source tfds to let tensorflow-datasets download them."
        )
    if not path.is_file() or not os.access(path, os.R_OK):
        raise BundleMissingError(
            f"MNIST bundle file {path} is missing or unreadable. Restore it (e.g. `git checkout -- "
            f"data/mnist/{name}` in the project) or point --bundle-dir at a complete copy."
        )
    return path


def registered_files() -> dict[str, tuple[int, str]]:
    """{file name: (size, SHA-256)} of each MNIST file as tensorflow-datasets registers it."""
    import_tensorflow()
    tfds = import_tfds()

    infos = tfds.builder_cls(DATASET.split(":")[0]).url_infos
    return {info.filename: (int(info.size), info.checksum) for info in infos.values()}


def verify_bundle(bundle_dir: Path, checksums: dict[str, str]) -> None:
    """Compare each bundle file (with its SHA-256 already computed) with tfds' registered size and
    SHA-256; name the culprit if one differs."""
    registered = registered_files()
    for name, actual in checksums.items():
        expected_size, expected = registered[name]
        path = bundle_dir / name
        size = path.stat().st_size
        if size != expected_size:
            raise (BundleTruncatedError if size < expected_size else ChecksumMismatchError)(
                f"MNIST bundle file {path} has {size} bytes, expected {expected_size} "
                f"({'truncated' if size < expected_size else 'too long'}): the copy is damaged. "
                "Restore it from the project (data/mnist/) or download it again with --data-source tfds."
            )
        if actual != expected:
            raise ChecksumMismatchError(
                f"MNIST bundle file {path} has SHA-256 {actual}, expected {expected} (the checksum "
                "tensorflow-datasets registers for it): the file is corrupt or not genuine MNIST. "
                "Restore it from the project (data/mnist/) or download it again with --data-source tfds."
            )


def canonical_order(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples sorted by a hash of (image, label): an order that does not depend on where they
    were read from (the IDX files keep their own order, tfds shuffles examples as it prepares them),
    so both sources give the same split for the same seed."""
    keys = [
        hashlib.blake2b(image.tobytes() + bytes([label]), digest_size=8).digest()
        for image, label in zip(images, labels, strict=True)
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return images[order], labels[order]


def read_bundle(bundle_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train"|"test": (images uint8 [n, 28, 28], labels uint8 [n])} parsed from the (verified) IDX
    files in `bundle_dir`, in canonical order. Parsing them takes a second; having tfds prepare
    TFRecords from them and reading those back took twenty."""
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(bundle_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(bundle_dir / f"{prefix}-labels-idx1-ubyte.gz")
        arrays[split] = canonical_order(images.astype(np.uint8).reshape(-1, *IMAGE_SHAPE), labels.astype(np.uint8))
    return arrays


def read_tfds(tfds_data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train"|"test": (images uint8 [n, 28, 28], labels uint8 [n])}, downloaded and prepared by tfds
    (which checks the download against its registered checksums) and read once, in canonical order."""
    import_tensorflow()
    tfds = import_tfds()

    tfds.disable_progress_bar()
    builder = tfds.builder(DATASET, data_dir=str(tfds_data_dir))
    builder.download_and_prepare()
    arrays = {}
    for split in ("train", "test"):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
        arrays[split] = canonical_order(data["image"].reshape(-1, *IMAGE_SHAPE), data["label"].astype(np.uint8))
    return arrays
