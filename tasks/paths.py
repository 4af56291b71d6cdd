"""Where the project's inputs live and where a run writes its outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MNIST_DIR = PROJECT_ROOT / "data" / "mnist"
ARTIFACTS_ENV_VAR = "MNIST_ARTIFACTS_DIR"


def default_artifacts_dir() -> Path:
    """`$MNIST_ARTIFACTS_DIR` if set, else `artifacts/` at the project root."""
    return Path(os.environ.get(ARTIFACTS_ENV_VAR) or PROJECT_ROOT / "artifacts")


@dataclass(frozen=True)
class ArtifactPaths:
    """The layout of one artifacts directory; every run of the pipeline writes below `root`."""

    root: Path

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def tfds_data(self) -> Path:
        return self.root / "tfds"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def prefect_results(self) -> Path:
        return self.root / "prefect-results"

    @classmethod
    def resolve(cls, artifacts_dir: str | Path | None) -> "ArtifactPaths":
        root = Path(artifacts_dir) if artifacts_dir else default_artifacts_dir()
        return cls(root.expanduser().resolve())
