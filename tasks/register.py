"""Stage 5, register: offer the candidate to the registry, whose gate decides whether it becomes
production (`core/registry/`, `core/evaluation/gate.py`); a rejection is a normal outcome."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run, task_run

from mnist_pipeline.core.data.splits import SplitFiles
from mnist_pipeline.core.evaluation.gate import GateSettings
from mnist_pipeline.core.evaluation.scoring import Evaluation
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.registry import Candidate, open_registry
from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.registry.report import render_report
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.orchestration.retries import retry_unless_permanent

REPORT_KEY = "mnist-training-report"


@task(name="register", retries=3, retry_delay_seconds=1, retry_condition_fn=retry_unless_permanent)
def register(
    trained: TrainedModel,
    evaluation: Evaluation,
    data: SplitFiles,
    registry_dir: str,
    gate: GateSettings,
    run_params: dict,
) -> DecisionRecord:
    """Register exactly once (a retry completes an interrupted registration) and publish the report."""
    registry = open_registry(registry_dir)
    candidate = Candidate(trained.fetched(), evaluation.fetched(), data, gate, run_params, flow_run.get_id())
    decision = registry.register(candidate, attempt=task_run.run_count)
    version = decision.candidate
    if version is None:  # a registration's decision always names the version it decided on
        raise PipelineError(f"the registry's decision names no version: {decision.reason}")
    low, high = evaluation.interval_95
    logger = get_run_logger()
    logger.info("%s %s: %s (95%% CI %.4f-%.4f)", decision.candidate, decision.verdict, decision.reason, low, high)
    light = registry.light_record(version)
    if light is not None and not light.get("file"):
        logger.warning("%s has no light model, so Keras serves it: %s", version, light["problem"])
    metrics = json.loads(Path(candidate.evaluation.metrics_path).read_text())
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=render_report(
            decision,
            metrics,
            registry.version_dir(version),
            trained.config.preset,
            files_at=store.join(registry.location, "versions", version),
        ),
        description=f"MNIST {trained.config.preset}: {decision.verdict} ({evaluation.accuracy:.4f})",
    )
    return decision
