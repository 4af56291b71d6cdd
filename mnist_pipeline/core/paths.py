"""Where the pipeline's inputs are and where a run writes its outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

ARTIFACTS_ENV_VAR = "MNIST_ARTIFACTS_DIR"


def bundled_mnist_dir() -> Path:
    """The four MNIST IDX files shipped inside the package (data/mnist/ in a checkout)."""
    return Path(str(files("mnist_pipeline.data") / "mnist"))


def default_artifacts_dir() -> Path:
    """`$MNIST_ARTIFACTS_DIR` if set, else `artifacts/` in the current directory."""
    return Path(os.environ.get(ARTIFACTS_ENV_VAR) or "artifacts")


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
