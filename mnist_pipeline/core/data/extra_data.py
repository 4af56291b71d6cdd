"""Extra labelled digits that users add over time, for the training split only.

A folder with one sub-folder per class, `0/` to `9/`, of PNG or JPEG pictures of any size, each
prepared exactly as `mnist-pipeline predict` prepares pictures (`core/data/pictures.py`): a light digit on
a dark background, laid out as MNIST's digits are. The corrections that the serving page stores
land in this layout once a person accepted them: `<corrections>/reviewed/` (core/data/review.py);
the review queue itself is refused, so nothing unreviewed trains.

What is skipped and what fails:
- skipped (counted in the log): hidden entries (names starting with "."), and files in a class
  folder that are not .png, .jpg or .jpeg;
- fails the run before anything trains, every problem listed with its path: an entry at the top
  that is not a class folder, and a picture that cannot be used (unreadable, truncated, blank, too
  large, a dark digit on a light background).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.core.data import review
from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.data.pictures import InputError, Wording, read_picture
from mnist_pipeline.core.support.errors import PermanentError
from mnist_pipeline.core.support.files import sha256_file

PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CLASS_FOLDERS = {str(label) for label in range(NUM_CLASSES)}
WORDING = Wording(
    readable="a picture",
    accepted="PNG or JPEG pictures of a light digit on a dark background",
    invert_option="a copy with its colours inverted",
)


class ExtraDataError(PermanentError):
    """Extra data that cannot be used; the message lists every problem with its path."""


@dataclass(frozen=True)
class ExtraPictures:
    """The usable pictures of an extra-data folder (path relative to it, label), and what was skipped."""

    root: Path
    pictures: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...]

    def fingerprint(self) -> tuple[tuple[str, str], ...]:
        """(relative path, SHA-256) of every picture: what a split built from them depends on."""
        return tuple((name, sha256_file(self.root / name)) for name, _ in self.pictures)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [n, 28, 28], labels uint8 [n]); fails listing every picture that cannot be used."""
        images, problems = [], []
        for name, _ in self.pictures:
            try:
                images.append(read_picture(self.root / name, name=self.root / name, wording=WORDING))
            except InputError as error:
                problems.append(str(error))
        if problems:
            raise ExtraDataError(_listing(self.root, problems, "cannot be used"))
        labels = np.array([label for _, label in self.pictures], dtype=np.uint8)
        return np.array(images, dtype=np.uint8).reshape(-1, 28, 28), labels


def scan(root: Path) -> ExtraPictures:
    """The pictures under `root` by class folder; fails listing every entry that does not belong."""
    if not root.is_dir():
        raise ExtraDataError(
            f"extra data folder {root} does not exist or is not a folder. Give a folder "
            f"with one sub-folder per class ({', '.join(sorted(CLASS_FOLDERS))}) of PNG or JPEG pictures."
        )
    if (root / review.PENDING).is_dir() or (root / review.REVIEWED).is_dir():
        raise ExtraDataError(
            f"{root} is a review queue of corrections, not an extra-data folder: training reads only "
            f"the pictures a person reviewed; give {root / review.REVIEWED}"
        )
    pictures, skipped, problems = [], [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            skipped.append(entry.name)
        elif not entry.is_dir() or entry.name not in CLASS_FOLDERS:
            problems.append(f"{entry}: not a class folder (the entries here must be folders named 0 to 9)")
        else:
            for file in sorted(entry.rglob("*")):
                name = file.relative_to(root).as_posix()
                if any(part.startswith(".") for part in file.relative_to(root).parts):
                    skipped.append(name)
                elif file.is_file() and file.suffix.lower() in PICTURE_SUFFIXES:
                    pictures.append((name, int(entry.name)))
                elif file.is_file():
                    skipped.append(name)
    if problems:
        raise ExtraDataError(_listing(root, problems, "does not belong"))
    return ExtraPictures(root, tuple(pictures), tuple(skipped))


def _listing(root: Path, problems: list[str], what: str) -> str:
    return f"extra data in {root}: {len(problems)} item(s) {what}; fix or remove them and run again:\n  " + "\n  ".join(
        problems
    )
