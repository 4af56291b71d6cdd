"""Where Prefect keeps the pipeline's task results and cache records.

With a local artifacts folder: `<artifacts>/prefect-results`. With an artifact store by URL (team
mode): a saved Prefect `RemoteFileSystem` block on `<store URL>/prefect-results`, so that a result a
worker on one machine cached is found by a worker on another (an unsaved storage would be recorded
by a local path). The block holds no credentials: s3fs reads them from the environment of each
worker, and the block is shown in the UI. Its name is `$MNIST_RESULTS_BLOCK`, by default
`mnist-results-<hash of the URL>`; it is saved the first time it is needed.

`python -m mnist_pipeline.orchestration.results_storage STORE_URL` saves it (unless it exists) and
prints its slug: the team stack does so with the server's settings in the environment.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mnist_pipeline.core.storage.paths import ArtifactPaths
from mnist_pipeline.core.support import settings

if TYPE_CHECKING:
    from prefect.filesystems import RemoteFileSystem

RESULTS_BLOCK_ENV_VAR = settings.RESULTS_BLOCK


def results_block_name(store_url: str) -> str:
    digest = hashlib.sha256(store_url.rstrip("/").encode()).hexdigest()[:10]
    return settings.read(RESULTS_BLOCK_ENV_VAR) or f"mnist-results-{digest}"


def ensure_results_block(store_url: str) -> str:
    """Save the results block of `store_url` unless it exists; its slug (`remote-file-system/NAME`)."""
    return f"remote-file-system/{_results_block(store_url)._block_document_name}"


def result_storage(paths: ArtifactPaths) -> Path | RemoteFileSystem:
    """What to pass as a task's `result_storage`: a folder, or the saved block of the store."""
    return _results_block(paths.location) if paths.shared else Path(paths.prefect_results)


def _results_block(store_url: str) -> RemoteFileSystem:
    """The saved results block of `store_url`, saved first if there is none."""
    from prefect.filesystems import RemoteFileSystem

    name = results_block_name(store_url)
    try:
        # `load` is typed "the block, or a coroutine in an async context": called here from sync code only.
        return cast(RemoteFileSystem, RemoteFileSystem.load(name))
    except ValueError:  # no such block yet
        block = RemoteFileSystem(basepath=f"{store_url.rstrip('/')}/prefect-results")
        block.save(name, overwrite=True)
        return block


if __name__ == "__main__":
    print(ensure_results_block(sys.argv[1]))
