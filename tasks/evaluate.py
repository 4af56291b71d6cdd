"""Stage 4, evaluate: score the trained model on the test split, write metrics and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.runtime import task_run

from mnist_pipeline.core.data.splits import SplitFiles
from mnist_pipeline.core.evaluation.scoring import Evaluation, evaluate_model, evaluation_key
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.registry.report import per_class_rows
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.faults import inject_fault
from mnist_pipeline.orchestration.retries import retry_unless_permanent

PER_CLASS_TABLE_KEY = "mnist-per-class-accuracy"


def _inputs_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Prefect's cache key of an evaluation: `evaluation_key` of its model, data and folder; none (not
    cached) for a model whose file is gone, which the stage then reports (MissingModelError)."""
    try:
        return evaluation_key(
            parameters["trained"].model_path, parameters["data"].data_sha256, store.parent(parameters["run_dir"])
        )
    except FileNotFoundError:
        return None


@task(
    name="evaluate",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_permanent,
    cache_key_fn=_inputs_key,
    persist_result=True,
)  # the same model on the same data: scored before, `Cached`
def evaluate(trained: TrainedModel, data: SplitFiles, run_dir: str) -> Evaluation:
    """Idempotent: a retry rewrites the same files (atomically) and republishes the table. With an
    artifact store the model comes from it, and the files written are uploaded to it."""
    evaluation = evaluate_model(trained.fetched(), data, store.local_path(run_dir))
    low, high = evaluation.interval_95
    get_run_logger().info(
        "test accuracy %.4f (95%% CI %.4f-%.4f, %d/%d)",
        evaluation.accuracy,
        low,
        high,
        evaluation.correct,
        evaluation.total,
    )
    inject_fault("evaluate", task_run.run_count)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    create_table_artifact(
        key=PER_CLASS_TABLE_KEY,
        table=per_class_rows(metrics),
        description=f"Per-class test accuracy of {trained.config.preset} ({evaluation.accuracy:.4f} overall)",
    )
    return evaluation.published()
