"""Stage 1, download/split: MNIST read once (the bundled files, or tensorflow-datasets' download),
split by index, written as files.

Cached by Prefect on the split's recipe (`core/data/splits.py`): a second run shows `Cached` and reads
nothing. The flow refuses a cache hit whose files are missing or altered (`is_intact`). With an
artifact store by URL the split is kept there, and a split built on one machine is `Cached` on another.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS
from prefect.logging import get_run_logger
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from mnist_pipeline.core.data.splits import SplitRecipe, SplitSources, ensure_shared_split
from mnist_pipeline.core.support.faults import inject_fault
from mnist_pipeline.orchestration.retries import retry_unless_permanent


@task(
    name="download-split",
    # the recipe hashes the files of the bundle and of the extra pictures; splits_root stays in the key
    # because the result is a path (or URL) under it (a moved or copied artifacts folder must not get the
    # old folder's manifest path)
    cache_policy=INPUTS - "bundle_dir" - "tfds_data_dir" - "extra_dir",
    persist_result=True,
    retries=3,  # transient I/O (a download, a busy disk): back off 2, 4, 8 s, each +-50%
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_permanent,  # a bad checksum fails at once
)
def download_split(
    recipe: SplitRecipe, bundle_dir: str, splits_root: str, tfds_data_dir: str, extra_dir: str | None = None
) -> str:
    """The manifest (path or URL) of `recipe`'s split under `splits_root` (a folder or a store URL),
    built unless an intact copy is there."""
    inject_fault("download", task_run.run_count)
    sources = SplitSources(Path(bundle_dir), Path(tfds_data_dir), Path(extra_dir) if extra_dir else None)
    return ensure_shared_split(recipe, sources, splits_root, get_run_logger())
