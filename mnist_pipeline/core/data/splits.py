"""The data split: train/validation/test written once as files, named by the hash of its recipe.

The split is a pure function of its recipe (dataset version, source checksums, validation fraction,
seed, this module's code), so the split stage can be cached on the recipe. Validation is carved out
of the official train split by a seeded index permutation, once: no example is in two splits, and
the test split is always MNIST's official one, so accuracies stay comparable across runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.data import extra_data, mnist
from mnist_pipeline.core.data.extra_data import ExtraPictures
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.errors import SplitValidationError
from mnist_pipeline.core.support.files import fsync_dir, sha256_file, write_json_atomic

SPLIT_NAMES = ("train", "validation", "test")
MANIFEST = "manifest.json"

Log = logging.Logger | logging.LoggerAdapter[Any]  # a logger, or Prefect's run logger
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSources:
    """Where a split's inputs are read: MNIST's bundled files or tensorflow-datasets' data folder (as
    the recipe's source says), and the extra training pictures, if the recipe has any."""

    bundle_dir: Path
    tfds_data_dir: Path
    extra_dir: Path | None = None


@dataclass(frozen=True)
class SplitRecipe:
    """Everything the split depends on; its hash names the split and keys the cache."""

    dataset: str
    source: str  # one of mnist.SOURCES
    source_sha256: tuple[tuple[str, str], ...]
    validation_fraction: float
    seed: int
    code_sha256: str
    extra_sha256: tuple[tuple[str, str], ...] = ()  # the extra training pictures (core/data/extra_data.py)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def split_dir(self, splits_root: Path) -> Path:
        return splits_root / f"mnist-{self.key[:16]}"

    @property
    def data_fingerprint(self) -> str:
        return data_fingerprint(self.source_sha256, self.extra_sha256)


def data_fingerprint(source_sha256: tuple[Any, ...], extra_sha256: tuple[Any, ...]) -> str:
    """The hash of the data alone (dataset, source files, extra pictures): what the change check
    compares with the production model's, so a new picture means a retraining but a new seed or a
    change of this module's code does not."""
    data = {"dataset": mnist.DATASET, "source_sha256": source_sha256, "extra_sha256": extra_sha256}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def source_checksums(source: str, bundle_dir: Path) -> tuple[tuple[str, str], ...]:
    """(file name, SHA-256) of MNIST's source files. Fails at once, naming the path, when a bundle file
    is missing."""
    if source == "bundle":
        return tuple((name, sha256_file(mnist.bundle_file(bundle_dir, name))) for name in mnist.BUNDLE_FILES)
    # tfds verifies its download against these registered checksums
    return tuple(sorted((name, sha) for name, (_, sha) in mnist.registered_files().items()))


def make_recipe(
    source: str, bundle_dir: Path, validation_fraction: float, seed: int, extra: ExtraPictures | None = None
) -> SplitRecipe:
    """Hash the inputs of the split. Fails at once, naming the path, when a bundle file is missing."""
    return SplitRecipe(
        dataset=mnist.DATASET,
        source=source,
        source_sha256=source_checksums(source, bundle_dir),
        validation_fraction=validation_fraction,
        seed=seed,
        code_sha256=sha256_file(Path(__file__)),
        extra_sha256=extra.fingerprint() if extra else (),
    )


def split_train_validation(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint index sets (train, validation), each sorted; validation is `fraction` of n."""
    order = np.random.default_rng(seed).permutation(n)
    n_validation = int(round(n * validation_fraction))
    return np.sort(order[n_validation:]), np.sort(order[:n_validation])


def is_intact(split_dir: Path) -> bool:
    """True when the split's manifest is readable and every file it lists has its recorded SHA-256."""
    try:
        manifest = json.loads((split_dir / MANIFEST).read_text())
        return all(sha256_file(split_dir / entry["file"]) == entry["sha256"] for entry in manifest["splits"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_split(recipe: SplitRecipe, sources: SplitSources, splits_root: Path, log: Log = _LOG) -> Path:
    """The manifest of `recipe`'s split under `splits_root`, built unless an intact copy is there.

    Concurrent callers wait on one lock: one builds the split, the others reuse it.
    """
    final_dir = recipe.split_dir(splits_root)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # here: it imports asyncio (70 ms), which reading a registry never needs

    with FileLock(final_dir.parent / ".lock"):
        if is_intact(final_dir):
            log.info("split %s is already on disk: reusing it", final_dir)
        else:
            source = f"the MNIST files in {sources.bundle_dir}" if recipe.source == "bundle" else "tensorflow-datasets"
            log.info("building split %s from %s", final_dir.name, source)
            started = time.perf_counter()
            build_split(recipe, sources, final_dir, log)
            log.info("built split %s in %.1f s", final_dir, time.perf_counter() - started)
    return final_dir / MANIFEST


def split_available(recipe: SplitRecipe, splits_root: str) -> bool:
    """True if `recipe`'s split is whole under `splits_root`: a folder, or a store URL (whose copy is
    downloaded to check it; a copy on this machine alone does not count)."""
    split_ref = store.join(splits_root, recipe.split_dir(Path()).name)
    if store.is_url(splits_root) and not store.ObjectStore.for_url(split_ref).exists(store.join(split_ref, MANIFEST)):
        return False
    return is_intact(store.fetch_tree(split_ref))


def ensure_shared_split(recipe: SplitRecipe, sources: SplitSources, splits_root: str, log: Log = _LOG) -> str:
    """`ensure_split` in the artifact store `splits_root` (a folder or a URL): the reference of the
    split's manifest. In a store, a split another machine built is downloaded, not built again; a
    split built here is uploaded, its manifest last and create-only, so when two machines build it
    at once the first manifest wins and the other machine takes that split."""
    split_ref = store.join(splits_root, recipe.split_dir(Path()).name)
    manifest_ref = store.join(split_ref, MANIFEST)
    if not store.is_url(splits_root):
        return str(ensure_split(recipe, sources, Path(splits_root), log))
    objects = store.ObjectStore.for_url(split_ref)
    in_store = objects.exists(manifest_ref)
    if in_store and split_available(recipe, splits_root):
        log.info("split %s is in the store: reusing it", split_ref)
        return manifest_ref
    manifest = ensure_split(recipe, sources, store.local_path(splits_root), log)
    for entry in json.loads(manifest.read_text())["splits"].values():
        objects.upload(manifest.parent / entry["file"], store.join(split_ref, entry["file"]))
    try:
        if in_store:  # the store's copy is damaged: this one replaces it
            objects.write(manifest_ref, manifest.read_bytes())
        else:
            objects.create(manifest_ref, manifest.read_bytes())
        log.info("uploaded split %s", split_ref)
    except store.AlreadyExists:  # another machine finished first: use its split
        log.info("split %s was uploaded meanwhile by another machine: using that one", split_ref)
        shutil.rmtree(manifest.parent, ignore_errors=True)
        store.fetch_tree(split_ref)
    return manifest_ref


def describe_split(manifest_path: Path) -> str:
    """One line saying which split this is and what it holds, for the logs."""
    manifest = json.loads(manifest_path.read_text())
    recipe, entries = manifest["recipe"], manifest["splits"]
    extra = len(recipe.get("extra_sha256", ()))
    return (
        f"split {manifest_path.parent.name} ({recipe['source']}{f' + {extra} extra pictures' if extra else ''}, "
        f"validation fraction {recipe['validation_fraction']}, seed {recipe['seed']}): "
        + ", ".join(f"{entries[name]['count']} {name}" for name in SPLIT_NAMES)
        + " images"
    )


def build_split(recipe: SplitRecipe, sources: SplitSources, final_dir: Path, log: Log = _LOG) -> None:
    """Verify the source, read MNIST once, split train/validation by seeded index, add the extra
    pictures to train, and write the files into `final_dir` (the caller holds the splits lock)."""
    if recipe.source == "bundle":
        mnist.verify_bundle(sources.bundle_dir, dict(recipe.source_sha256))
        arrays = mnist.read_bundle(sources.bundle_dir)
    else:
        arrays = mnist.read_tfds(sources.tfds_data_dir)
    train_images, train_labels = arrays["train"]
    train_idx, validation_idx = split_train_validation(len(train_labels), recipe.validation_fraction, recipe.seed)
    splits = {
        "train": _with_extra((train_images[train_idx], train_labels[train_idx]), recipe, sources.extra_dir, log),
        "validation": (train_images[validation_idx], train_labels[validation_idx]),
        "test": arrays["test"],
    }
    write_split(recipe, splits, final_dir)


def _with_extra(
    train: tuple[np.ndarray, np.ndarray], recipe: SplitRecipe, extra_dir: Path | None, log: Log
) -> tuple[np.ndarray, np.ndarray]:
    """The train split with the recipe's extra pictures appended (never validation or test: the test
    split stays MNIST's own, so accuracies stay comparable)."""
    if not recipe.extra_sha256:
        return train
    if extra_dir is None:
        raise extra_data.ExtraDataError("the split's recipe has extra pictures, but no extra data folder was given")
    extra = extra_data.scan(extra_dir)
    if extra.fingerprint() != recipe.extra_sha256:
        raise extra_data.ExtraDataError(
            f"extra data in {extra_dir} changed while the run was starting; run again to use what is there now"
        )
    images, labels = extra.load()
    log.info(
        "added %d extra training pictures from %s%s",
        len(labels),
        extra_dir,
        f" (skipped {len(extra.skipped)}: {', '.join(extra.skipped)})" if extra.skipped else "",
    )
    return np.concatenate([train[0], images]), np.concatenate([train[1], labels])


def write_split(recipe: SplitRecipe, arrays: dict[str, tuple[np.ndarray, np.ndarray]], final_dir: Path) -> None:
    """Write the splits and their manifest into a fresh folder, then rename it into place."""
    tmp_dir = final_dir.parent / f".tmp-{final_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir(parents=True)
    try:
        entries = {}
        for name, (images, labels) in arrays.items():
            written = tmp_dir / f"{name}.npz"
            np.savez_compressed(written, images=images, labels=labels)
            with open(written, "rb") as f:
                os.fsync(f.fileno())
            # named by content (the zip's timestamps make each build's bytes differ): two machines that
            # build the same split at once upload different names, and the manifest they race to
            # create decides which files are the split
            file = written.with_name(f"{name}-{sha256_file(written)[:16]}.npz")
            written.rename(file)
            entries[name] = {
                "file": file.name,
                "sha256": sha256_file(file),
                "count": int(len(labels)),
                "class_counts": np.bincount(labels, minlength=mnist.NUM_CLASSES).tolist(),
            }
        manifest = {
            "recipe": asdict(recipe),
            "recipe_key": recipe.key,
            "image_shape": list(mnist.IMAGE_SHAPE),
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


@dataclass(frozen=True)
class SplitFiles:
    """A validated split on disk: where its manifest is, and the manifest's SHA-256 (the data hash)."""

    manifest_path: str
    data_sha256: str

    def path(self, split: str) -> Path:
        manifest = json.loads(Path(self.manifest_path).read_text())
        file_name: str = manifest["splits"][split]["file"]
        return Path(self.manifest_path).parent / file_name

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [n, 28, 28], labels uint8 [n]) of one split."""
        with np.load(self.path(split), allow_pickle=False) as data:
            return data["images"], data["labels"]


def _invalid(manifest_path: Path, problem: str) -> SplitValidationError:
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
        raise _invalid(manifest_path, f"its manifest {manifest_path} is unreadable ({error})") from error
    files = SplitFiles(str(manifest_path), sha256_file(manifest_path))
    for name, entry in entries.items():
        path = manifest_path.parent / entry["file"]
        if not path.is_file():
            raise _invalid(manifest_path, f"{path} is missing")
        if (actual := sha256_file(path)) != entry["sha256"]:
            raise _invalid(manifest_path, f"{path} has SHA-256 {actual}, the manifest records {entry['sha256']}")
        images, labels = files.load(name)
        if images.dtype != np.uint8 or images.shape[1:] != mnist.IMAGE_SHAPE:
            raise _invalid(
                manifest_path,
                f"{name} images are {images.dtype} {images.shape}, "
                f"expected uint8 [n, {mnist.IMAGE_SHAPE[0]}, {mnist.IMAGE_SHAPE[1]}]",
            )
        if len(images) != len(labels):
            raise _invalid(manifest_path, f"{name} has {len(images)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= mnist.NUM_CLASSES):
            raise _invalid(manifest_path, f"{name} has labels outside 0-{mnist.NUM_CLASSES - 1}")
        class_counts = np.bincount(labels, minlength=mnist.NUM_CLASSES).tolist()
        if 0 in class_counts:
            raise _invalid(manifest_path, f"{name} has no example of class {class_counts.index(0)}")
        if len(labels) != entry["count"] or class_counts != entry["class_counts"]:
            raise _invalid(
                manifest_path,
                f"{name} has {len(labels)} examples with class counts {class_counts}; "
                f"the manifest records {entry['count']} with {entry['class_counts']}",
            )
    return files
