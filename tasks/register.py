"""Stage 5, register: add the candidate to the registry and decide, through the gate, whether it
becomes production.

The gate (as TFX's Evaluator and ZenML's e2e example do it): promote only when test accuracy reaches
the threshold AND the candidate is not worse than the production model on the same test split (ties
promote; with no production model the threshold alone decides). A rejection is a normal outcome.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.evaluate import Evaluation, load_model, predict_probabilities, score
from tasks.export import SAVED_MODEL_DIR, export_saved_model
from tasks.errors import retry_unless_permanent
from tasks.faults import crash_point, inject_fault
from tasks.files import sha256_file
from tasks.preprocess import SplitFiles
from tasks.registry import Decision, Registry, now_iso
from tasks.report import render_model_card, render_report
from tasks.train import TrainedModel

REPORT_KEY = "mnist-training-report"


@dataclass(frozen=True)
class Scored:
    """A model's result on one test split: `correct` of `total` images right."""

    version: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def gate(candidate: Scored, champion: Scored | None, threshold: float) -> tuple[bool, str]:
    """(promote?, why). Both scores must come from the same test split."""
    if candidate.accuracy < threshold:
        return False, f"test accuracy {candidate.accuracy:.4f} is below the threshold {threshold:.4f}"
    if champion is None:
        return True, f"test accuracy {candidate.accuracy:.4f} reaches the threshold {threshold:.4f}; no production model yet"
    if candidate.correct < champion.correct:
        return False, (
            f"test accuracy {candidate.accuracy:.4f} is worse than production {champion.version}'s "
            f"{champion.accuracy:.4f} on the same test split"
        )
    return True, (
        f"test accuracy {candidate.accuracy:.4f} reaches the threshold {threshold:.4f} and is not worse "
        f"than production {champion.version}'s {champion.accuracy:.4f}"
    )


def champion_score(registry: Registry, data: SplitFiles, test_split_sha256: str) -> Scored | None:
    """The production model's score on this test split: recorded if it was measured on the same
    split, else measured now."""
    version = registry.production()
    if version is None:
        return None
    metrics = json.loads((registry.version_dir(version) / "metrics.json").read_text())
    if metrics.get("test_split_sha256") != test_split_sha256:
        images, labels = data.load("test")
        model = load_model(registry.model_path(version))
        metrics = score(predict_probabilities(model, images), labels)
    return Scored(version, metrics["correct"], metrics["total"])


def _framework_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def register_candidate(
    registry: Registry,
    trained: TrainedModel,
    evaluation: Evaluation,
    data: SplitFiles,
    threshold: float,
    run_params: dict,
    flow_run_id: str | None,
) -> Decision:
    """Register the candidate and apply the gate, exactly once however often this is called.

    The decision is stored in the version itself; a retry after a failure anywhere in here finds the
    version by its model's checksum and run folder, and completes what is missing (production
    pointer, log line). A registration whose process died is completed by the next one.
    """
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    model_sha256 = sha256_file(Path(trained.model_path))
    source_run = str(Path(trained.model_path).parent)
    with registry.lock:
        registry.complete_pending()
        version = registry.find_candidate(model_sha256, source_run)
        if version is None:
            champion = champion_score(registry, data, metrics["test_split_sha256"])
            promoted, reason = gate(Scored("candidate", evaluation.correct, evaluation.total), champion, threshold)
            record = {
                "created": now_iso(),
                "status": "promoted" if promoted else "rejected",
                "model_sha256": model_sha256,
                "source_run": source_run,
                "preset": trained.config.preset,
                "test_accuracy": evaluation.accuracy,
                "accuracy_interval_95": list(evaluation.interval_95),
                "data_sha256": data.data_sha256,
                "test_split_sha256": metrics["test_split_sha256"],
                "flow_run_id": flow_run_id,
                "versions": _framework_versions(),
                "decision": {
                    "candidate_accuracy": evaluation.accuracy,
                    "champion": champion.version if champion else None,
                    "champion_accuracy": champion.accuracy if champion else None,
                    "threshold": threshold,
                    "promoted": promoted,
                    "reason": reason,
                    "time": now_iso(),
                    "flow_run_id": flow_run_id,
                },
            }
            params = {"training": asdict(trained.config), "threshold": threshold, **run_params}
            files = {"model.keras": Path(trained.model_path), "metrics.json": Path(evaluation.metrics_path),
                     "history.json": Path(trained.history_path)}
            files.update({Path(p).name: Path(p) for p in evaluation.plot_paths})
            texts = {"params.json": json.dumps(params, indent=2, sort_keys=True) + "\n",
                     "model_card.md": render_model_card(record, params, metrics)}
            version = registry.add_version(files, texts, record, build=lambda folder: export_saved_model(
                trained.model_path, folder / SAVED_MODEL_DIR))
            crash_point("register:added")  # the version exists; production has not moved; nothing is logged
            inject_fault("register")
        decision = Decision(candidate=version, **registry.read_version(version)["decision"])
        registry.apply_decision(decision)
    return decision


@task(name="register", retries=3, retry_delay_seconds=1, retry_condition_fn=retry_unless_permanent)
def register(
    trained: TrainedModel,
    evaluation: Evaluation,
    data: SplitFiles,
    registry_dir: str,
    threshold: float,
    run_params: dict,
) -> Decision:
    registry = Registry(Path(registry_dir))
    decision = register_candidate(registry, trained, evaluation, data, threshold, run_params, flow_run.get_id())
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=render_report(decision, metrics, registry.version_dir(decision.candidate), trained.config.preset),
        description=f"MNIST {trained.config.preset}: {decision.verdict} ({evaluation.accuracy:.4f})",
    )
    return decision
