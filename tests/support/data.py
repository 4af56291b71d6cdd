"""Data to test with: tiny synthetic digits written as the pipeline writes a split, damaged copies of
the bundled MNIST, a split sabotaged for one class, and the genuine MNIST's class counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mnist_pipeline.core.data.mnist import IMAGE_SHAPE, NUM_CLASSES
from mnist_pipeline.core.storage.paths import bundled_mnist_dir


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of 10 made-up "digits" (one fixed random stroke pattern a class, 15% of its
    pixels flipped), every class present: learnable in a few epochs by the smallest preset."""
    templates = np.random.default_rng(0).random((NUM_CLASSES, *IMAGE_SHAPE)) > 0.75
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % NUM_CLASSES).astype(np.uint8)
    flips = rng.random((count, *IMAGE_SHAPE)) < 0.15
    images = (templates[labels] ^ flips).astype(np.uint8) * 255
    return images, labels


def synthetic_split_files(splits_root: Path, sizes=(600, 100, 300)):
    """A checked split of synthetic digits under `splits_root`, written as the pipeline writes one."""
    from mnist_pipeline.core.data.splits import SplitRecipe, check_split, write_split

    recipe = SplitRecipe(
        dataset="synthetic", source="synthetic", source_sha256=(), validation_fraction=0.1, seed=0, code_sha256=""
    )
    arrays = {
        name: synthetic_digits(size, seed)
        for seed, (name, size) in enumerate(zip(("train", "validation", "test"), sizes, strict=True), start=1)
    }
    split_dir = recipe.split_dir(splits_root)
    split_dir.parent.mkdir(parents=True, exist_ok=True)
    write_split(recipe, arrays, split_dir)
    return check_split(split_dir / "manifest.json")


def bundle_copy(destination: Path) -> Path:
    """A copy of the bundled MNIST files to damage."""
    return Path(shutil.copytree(bundled_mnist_dir(), destination, ignore=shutil.ignore_patterns("*.py", "__pycache__")))


def flip_byte(path: Path, offset: int) -> None:
    """Flip the bits of one byte of `path` (negative offsets count from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def split_with_shuffled_labels(split, digit: int, splits_root: Path, seed: int = 0):
    """A copy of the checked `split` in which the train images of class `digit` carry random labels
    0-9 (validation and test unchanged), written as the pipeline writes a split under `splits_root`:
    a training set that a careless labeller spoiled for one class."""
    from mnist_pipeline.core.data.splits import SPLIT_NAMES, SplitRecipe, check_split, write_split

    arrays = {name: split.load(name) for name in SPLIT_NAMES}
    images, labels = arrays["train"]
    spoiled = labels == digit
    labels = labels.copy()
    labels[spoiled] = np.random.default_rng(seed).integers(0, NUM_CLASSES, int(spoiled.sum()), dtype=labels.dtype)
    arrays["train"] = (images, labels)
    recipe = SplitRecipe(
        dataset=f"class-{digit}-shuffled",
        source="test",
        source_sha256=(),
        validation_fraction=0.1,
        seed=seed,
        code_sha256=split.data_sha256,
    )
    split_dir = recipe.split_dir(splits_root)
    split_dir.parent.mkdir(parents=True, exist_ok=True)
    write_split(recipe, arrays, split_dir)
    return check_split(split_dir / "manifest.json")


TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
