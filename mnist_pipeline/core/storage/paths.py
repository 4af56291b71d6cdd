"""Where the pipeline's inputs are and where a run writes its outputs.

The artifacts location is a folder, or the URL of an artifact store (`s3://bucket/prefix`, see
core/storage/store.py); for a URL, the paths here are this machine's mirror of it and `location` is the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support import settings

ARTIFACTS_ENV_VAR = settings.ARTIFACTS_DIR


def bundled_mnist_dir() -> Path:
    """The four MNIST IDX files shipped inside the package (data/mnist/ in a checkout)."""
    return Path(str(files("mnist_pipeline.data") / "mnist"))


def default_artifacts_dir() -> str:
    """`$MNIST_ARTIFACTS_DIR` if set, else `artifacts/` in the current directory."""
    return settings.artifacts_location()


class _Below:
    """A folder below the artifacts root, as an attribute of `ArtifactPaths` (`paths.runs`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, paths: ArtifactPaths, owner: type[ArtifactPaths]) -> Path:
        return paths.root / self.name


@dataclass(frozen=True)
class ArtifactPaths:
    """The layout of one artifacts directory; every run of the pipeline writes below `root`."""

    root: Path
    location: str  # `root` itself, or the URL of the store `root` mirrors

    @property
    def shared(self) -> bool:
        """True when the artifacts live in a store by URL (team mode)."""
        return store.is_url(self.location)

    def ref(self, path: Path) -> str:
        """The reference of a path below `root`: its URL in the store, or the path itself."""
        return store.ref_of(path) if self.shared else str(path)

    splits = _Below("splits")
    tfds_data = _Below("tfds")
    runs = _Below("runs")
    tensorboard = _Below("tensorboard")
    registry = _Below("registry")
    prefect_results = _Below("prefect-results")

    @classmethod
    def resolve(cls, artifacts_dir: str | Path | None) -> ArtifactPaths:
        location = str(artifacts_dir or default_artifacts_dir())
        if store.is_url(location):
            location = location.rstrip("/")
            return cls(store.local_path(location), location)
        root = Path(location).expanduser().resolve()
        return cls(root, str(root))
