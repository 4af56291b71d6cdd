"""Stage 2, preprocess: check the split files before anything trains on them.

Images stay uint8 in memory and in the input pipelines: scaling to [0, 1] is the model's first layer,
the one place that both training and serving use.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger
from prefect.runtime import task_run

from mnist_pipeline.core.data.splits import SplitFiles, check_split, describe_split
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.faults import inject_fault
from mnist_pipeline.orchestration.retries import retry_unless_permanent


@task(name="preprocess", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_permanent)
def preprocess(manifest: str) -> SplitFiles:
    """Checksums, shapes, dtypes, label range, class coverage and counts; the tf.data pipelines are
    built from the checked files where they are consumed (train). `manifest` is a path, or a URL in
    the artifact store (the split is downloaded to this machine first)."""
    inject_fault("preprocess", task_run.run_count)
    manifest_path = store.fetch_tree(store.parent(manifest)) / Path(manifest).name
    files = check_split(manifest_path)
    get_run_logger().info("checked %s", describe_split(manifest_path))
    return files
