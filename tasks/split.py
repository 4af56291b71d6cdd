"""Stage 1, download/split: MNIST through tensorflow-datasets, split once by index, written as files.

The split is a pure function of its recipe (dataset version, source checksums, validation fraction,
seed, this module's code), so the task is cached on the recipe: a second run shows `Cached` and does
no tfds work. The flow refuses a cache hit whose files are missing or altered (`is_intact`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from prefect import task
from prefect.cache_policies import INPUTS
from prefect.tasks import exponential_backoff

from tasks.errors import BundleMissingError, BundleTruncatedError, ChecksumMismatchError, retry_unless_permanent
from tasks.faults import inject_fault
from tasks.files import fsync_dir, sha256_file, write_json_atomic

DATASET = "mnist:3.0.1"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
SPLIT_NAMES = ("train", "validation", "test")
BUNDLE_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SplitRecipe:
    """Everything the split depends on; its hash names the split and keys the cache."""

    dataset: str
    source: str  # "bundle": the IDX files in `bundle_dir`; "tfds": tfds' own download
    source_sha256: tuple[tuple[str, str], ...]
    validation_fraction: float
    seed: int
    code_sha256: str

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def split_dir(self, splits_root: Path) -> Path:
        return splits_root / f"mnist-{self.key[:16]}"


def make_recipe(source: str, bundle_dir: Path, validation_fraction: float, seed: int) -> SplitRecipe:
    """Hash the inputs of the split. Fails at once, naming the path, when a bundle file is missing."""
    if source == "bundle":
        checksums = tuple((name, sha256_file(bundle_file(bundle_dir, name))) for name in BUNDLE_FILES)
    else:  # tfds verifies its download against these registered checksums
        checksums = tuple(sorted(expected_checksums().items()))
    return SplitRecipe(
        dataset=DATASET,
        source=source,
        source_sha256=checksums,
        validation_fraction=validation_fraction,
        seed=seed,
        code_sha256=sha256_file(Path(__file__)),
    )


def bundle_file(bundle_dir: Path, name: str) -> Path:
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


def expected_checksums() -> dict[str, str]:
    """The SHA-256 of each MNIST file as registered in tensorflow-datasets."""
    return {name: size_and_sha[1] for name, size_and_sha in _registered_files().items()}


def _registered_files() -> dict[str, tuple[int, str]]:
    import tensorflow_datasets as tfds

    infos = tfds.builder_cls(DATASET.split(":")[0]).url_infos
    return {info.filename: (int(info.size), info.checksum) for info in infos.values()}


def verify_bundle(recipe: SplitRecipe, bundle_dir: Path) -> None:
    """Compare each bundle file with tfds' registered size and SHA-256; name the culprit if not."""
    registered = _registered_files()
    for name, actual in recipe.source_sha256:
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


def is_intact(split_dir: Path) -> bool:
    """True when the split's manifest is readable and every file it lists has its recorded SHA-256."""
    try:
        manifest = json.loads((split_dir / MANIFEST).read_text())
        return all(
            sha256_file(split_dir / entry["file"]) == entry["sha256"]
            for entry in manifest["splits"].values()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _load_tfds_arrays(recipe: SplitRecipe, bundle_dir: Path, tfds_data_dir: Path) -> dict[str, tuple]:
    """Prepare MNIST with tfds and read each official split once into uint8 arrays."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    builder = tfds.builder(recipe.dataset, data_dir=str(tfds_data_dir))
    manual_dir = str(bundle_dir) if recipe.source == "bundle" else None
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    arrays = {}
    for split in ("train", "test"):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
        arrays[split] = (data["image"].reshape(-1, *IMAGE_SHAPE), data["label"].astype(np.uint8))
    return arrays


def split_train_validation(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint index sets (train, validation), each sorted; validation is `fraction` of n."""
    order = np.random.default_rng(seed).permutation(n)
    n_validation = int(round(n * validation_fraction))
    return np.sort(order[n_validation:]), np.sort(order[:n_validation])


def _write_split_dir(recipe: SplitRecipe, arrays: dict[str, tuple], final_dir: Path) -> None:
    """Write the splits and their manifest into a fresh folder, then rename it into place."""
    tmp_dir = final_dir.parent / f".tmp-{final_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir(parents=True)
    try:
        entries = {}
        for name, (images, labels) in arrays.items():
            file = tmp_dir / f"{name}.npz"
            np.savez_compressed(file, images=images, labels=labels)
            with open(file, "rb") as f:
                os.fsync(f.fileno())
            entries[name] = {
                "file": file.name,
                "sha256": sha256_file(file),
                "count": int(len(labels)),
                "class_counts": np.bincount(labels, minlength=NUM_CLASSES).tolist(),
            }
        manifest = {
            "recipe": asdict(recipe),
            "recipe_key": recipe.key,
            "image_shape": list(IMAGE_SHAPE),
            "dtype": "uint8",
            "splits": entries,
        }
        write_json_atomic(tmp_dir / MANIFEST, manifest)
        _publish_dir(tmp_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Rename `tmp_dir` to `final_dir`, first removing a damaged copy there (caller holds the lock)."""
    if final_dir.exists():
        stale = final_dir.parent / f".stale-{final_dir.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final_dir, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.rename(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)


def build_split(recipe: SplitRecipe, bundle_dir: Path, tfds_data_dir: Path, final_dir: Path) -> None:
    """Verify the source, read MNIST once through tfds, split train/validation by seeded index and
    write the files into `final_dir` (the caller holds the splits lock)."""
    if recipe.source == "bundle":
        verify_bundle(recipe, bundle_dir)
    arrays = _load_tfds_arrays(recipe, bundle_dir, tfds_data_dir)
    train_images, train_labels = arrays["train"]
    train_idx, validation_idx = split_train_validation(len(train_labels), recipe.validation_fraction, recipe.seed)
    splits = {
        "train": (train_images[train_idx], train_labels[train_idx]),
        "validation": (train_images[validation_idx], train_labels[validation_idx]),
        "test": arrays["test"],
    }
    _write_split_dir(recipe, splits, final_dir)


@task(
    name="download-split",
    cache_policy=INPUTS,
    persist_result=True,
    retries=3,  # transient I/O (a download, a busy disk): back off 2, 4, 8 s, each +-50%
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_permanent,  # a bad checksum fails at once
)
def download_split(recipe: SplitRecipe, bundle_dir: str, splits_root: str, tfds_data_dir: str) -> str:
    """The split of `recipe` under `splits_root`, built unless an intact copy is there already.

    Returns the manifest's path. Cached on its inputs, so the recipe decides when it reruns.
    """
    inject_fault("download")
    final_dir = recipe.split_dir(Path(splits_root))
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(final_dir.parent / ".lock"):  # concurrent runs: one builds the split, the rest reuse it
        if not is_intact(final_dir):
            build_split(recipe, Path(bundle_dir), Path(tfds_data_dir), final_dir)
    return str(final_dir / MANIFEST)
