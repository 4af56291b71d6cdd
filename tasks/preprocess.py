"""Stage 2, preprocess: check the split files, and build the tf.data input pipelines from them.

Images stay uint8 in memory and in the pipelines: scaling to [0, 1] is the model's first layer
(`tasks.models.raw_image_input`), the one place that both training and serving use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task

from tasks.errors import SplitValidationError, retry_unless_permanent
from tasks.faults import inject_fault
from tasks.files import sha256_file
from tasks.split import IMAGE_SHAPE, NUM_CLASSES, SPLIT_NAMES

SHUFFLE_BUFFER = 10_000


@dataclass(frozen=True)
class SplitFiles:
    """A validated split on disk: where its manifest is, and the manifest's SHA-256 (the data hash)."""

    manifest_path: str
    data_sha256: str

    def path(self, split: str) -> Path:
        manifest = json.loads(Path(self.manifest_path).read_text())
        return Path(self.manifest_path).parent / manifest["splits"][split]["file"]

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [n, 28, 28], labels uint8 [n]) of one split."""
        with np.load(self.path(split), allow_pickle=False) as data:
            return data["images"], data["labels"]


def _fail(manifest_path: Path, problem: str) -> SplitValidationError:
    return SplitValidationError(
        f"Split in {manifest_path.parent} is not valid: {problem}. Delete that folder and run the "
        "pipeline again to rebuild the split from the MNIST source."
    )


def check_split(manifest_path: Path) -> SplitFiles:
    """Check checksums, shapes, dtypes, label range, class coverage and counts against the manifest."""
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = {name: manifest["splits"][name] for name in SPLIT_NAMES}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _fail(manifest_path, f"its manifest {manifest_path} is unreadable ({error})") from error
    files = SplitFiles(str(manifest_path), sha256_file(manifest_path))
    for name, entry in entries.items():
        path = manifest_path.parent / entry["file"]
        if not path.is_file():
            raise _fail(manifest_path, f"{path} is missing")
        if (actual := sha256_file(path)) != entry["sha256"]:
            raise _fail(manifest_path, f"{path} has SHA-256 {actual}, the manifest records {entry['sha256']}")
        images, labels = files.load(name)
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise _fail(manifest_path, f"{name} images are {images.dtype} {images.shape}, expected uint8 [n, 28, 28]")
        if len(images) != len(labels) or len(labels) != entry["count"]:
            raise _fail(manifest_path, f"{name} has {len(images)} images and {len(labels)} labels, manifest says {entry['count']}")
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise _fail(manifest_path, f"{name} has labels outside 0-9")
        class_counts = np.bincount(labels, minlength=NUM_CLASSES).tolist()
        if 0 in class_counts:
            raise _fail(manifest_path, f"{name} has no example of class {class_counts.index(0)}")
        if class_counts != entry["class_counts"]:
            raise _fail(manifest_path, f"{name} class counts {class_counts} differ from the manifest's")
    return files


@task(name="preprocess", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_permanent)
def preprocess(manifest_path: str) -> SplitFiles:
    """Validate the split; the input pipelines are built from it where they are consumed (train)."""
    inject_fault("preprocess")
    return check_split(Path(manifest_path))


def input_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle_seed: int | None = None):
    """Batched, prefetched tf.data pipeline of raw uint8 images; shuffled when a seed is given."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
