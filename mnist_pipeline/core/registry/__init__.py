"""The model registry: numbered versions, a production pointer and a decision log.

One policy (registry.py) over a storage backend: a local folder (local.py) or an S3-compatible store
(object_store.py), chosen by `open_registry` from the location.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnist_pipeline.core.registry.backend import REPAIR_COMMAND, RegistryError
from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.registry.local import LocalBackend
from mnist_pipeline.core.registry.object_store import ObjectStoreBackend
from mnist_pipeline.core.registry.registry import SAVED_MODEL_DIR, Candidate, Registry, version_name
from mnist_pipeline.core.storage import store

__all__ = [
    "REPAIR_COMMAND",
    "SAVED_MODEL_DIR",
    "Candidate",
    "DecisionRecord",
    "LocalBackend",
    "ObjectStoreBackend",
    "Registry",
    "RegistryError",
    "open_registry",
    "version_name",
]


def open_registry(location: str | os.PathLike[str], splits_dir: Path | None = None) -> Registry:
    """The registry at `location`: a folder (guarded by a file lock), or a URL in an S3-compatible
    store (kept consistent by conditional writes)."""
    if store.is_url(location):
        return Registry(ObjectStoreBackend(str(location)), splits_dir)
    return Registry(LocalBackend(Path(location)), splits_dir)
