"""The MNIST training pipeline as one Prefect flow.

    download/split -> preprocess -> train -> evaluate -> register (gate: promote or reject)

Run it: `python flows/mnist_flow.py --help` (the same as `mnist-pipeline run`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

if __name__ == "__main__":  # answer the command line before Prefect (1.5 s to import) loads
    from mnist_pipeline.cli.main import entry_point

    entry_point(["run", *sys.argv[1:]])

from prefect import State, flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Completed

from mnist_pipeline.core.data import extra_data
from mnist_pipeline.core.data.splits import SplitRecipe, make_recipe, split_available
from mnist_pipeline.core.evaluation.gate import GateSettings
from mnist_pipeline.core.evaluation.scoring import Evaluation
from mnist_pipeline.core.modelling.models import TrainingConfig, training_config
from mnist_pipeline.core.modelling.parameters import (
    DataParameters,
    PipelineParameters,
    takes_parameters,
    validate_parameters,
)
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.storage.paths import ArtifactPaths, bundled_mnist_dir
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.orchestration.mlflow_view import FlowTracking, mark_failed
from mnist_pipeline.orchestration.results_storage import result_storage
from mnist_pipeline.tasks.evaluate import evaluate
from mnist_pipeline.tasks.preprocess import preprocess
from mnist_pipeline.tasks.register import register
from mnist_pipeline.tasks.split import download_split
from mnist_pipeline.tasks.train import train


@dataclass(frozen=True)
class Plan:
    """Everything a run needs decided before its first stage: where things go, and what to train."""

    params: PipelineParameters
    paths: ArtifactPaths
    bundle_dir: Path
    extra_dir: Path | None
    recipe: SplitRecipe
    config: TrainingConfig
    run_dir: Path

    @property
    def gate(self) -> GateSettings:
        return GateSettings.of(self.params.model_dump())

    @property
    def run_params(self) -> dict[str, Any]:
        """What the registry keeps of this run besides the training configuration and the gate."""
        return {
            "split_recipe_key": self.recipe.key,
            "data_source": self.params.data_source,
            "data_fingerprint": self.recipe.data_fingerprint,
            "extra_pictures": len(self.recipe.extra_sha256),
        }


def run_name() -> str:
    """What ran, and when: e.g. `cnn-seed42-20261129T071835Z` (shown in Prefect's lists of runs)."""

    def given(name: str) -> Any:
        return flow_run.parameters.get(name, PipelineParameters.model_fields[name].default)

    return f"{given('preset')}-seed{given('seed')}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


@flow(
    name="mnist-training-pipeline",
    flow_run_name=run_name,
    log_prints=True,
    on_failure=[mark_failed],  # the MLflow run, if any, ends FAILED too
    on_crashed=[mark_failed],
)
@takes_parameters
def mnist_pipeline(**values: Any) -> State:
    """Train an MNIST classifier and promote it to production if it passes the gate.

    The run ends in a `Completed` state named `Promoted`, `Rejected` or `Unchanged` (the training
    was taken from the cache, or gave a registered model again), with the gate's reason as its
    message; its result is the `RunSummary`.
    """
    plan = make_plan(validate_parameters(values))
    tracking = FlowTracking.begin(
        plan.params, plan.paths.ref(plan.run_dir), "run", plan.run_params
    )  # MLflow, if asked for
    tag_run(f"preset:{plan.config.preset}")
    results = result_storage(plan.paths)  # a stable place, so later runs (on any machine) find the cache
    refs = plan.paths.ref
    split = download_split.with_options(
        result_storage=results,
        refresh_cache=not split_available(plan.recipe, refs(plan.paths.splits)),  # never trust a damaged cache hit
    )
    manifest = split(
        plan.recipe,
        str(plan.bundle_dir),
        refs(plan.paths.splits),
        str(plan.paths.tfds_data),
        plan.extra_dir and str(plan.extra_dir),
    )
    data = preprocess(manifest)
    trained = train.with_options(result_storage=results, refresh_cache=plan.params.force_retrain)(
        plan.config, data, refs(plan.run_dir), refs(plan.paths.tensorboard / plan.run_dir.name)
    )
    evaluation = evaluate.with_options(result_storage=results)(trained, data, refs(plan.run_dir))
    decision = register(trained, evaluation, data, refs(plan.paths.registry), plan.gate, plan.run_params)

    summary = summarize(decision, trained, evaluation, refs(plan.paths.registry), refs(plan.run_dir))
    tracking.finish(trained, evaluation, decision, refs(plan.paths.registry))
    return Completed(name=decision.verdict.capitalize(), message=decision.reason, data=summary)


def summarize(
    decision: DecisionRecord, trained: TrainedModel, evaluation: Evaluation, registry_dir: str, run_dir: str
) -> RunSummary:
    """What a run returns: its model's results, the gate's decision, and the registry after it."""
    version = decision.candidate
    if version is None:  # a registration's decision always names the version it decided on
        raise PipelineError(f"the registry's decision names no version: {decision.reason}")
    registry = open_registry(registry_dir)
    return RunSummary(
        version=version,
        preset=trained.config.preset,
        accuracy=evaluation.accuracy,
        accuracy_interval_95=evaluation.interval_95,
        promoted=decision.promoted,
        reason=decision.reason,
        production=registry.production(),
        epochs_run=trained.epochs_run,
        train_seconds=trained.train_seconds,
        version_dir=store.join(registry.location, "versions", version),
        run_dir=run_dir,
        decision_log=str(registry.decision_log),
        verdict=decision.verdict,
    )


def tag_run(tag: str) -> None:
    """Add `tag` to this flow run's tags, for the UI's lists and filters (the preset is a parameter, so
    neither the deployment nor the caller can set it in advance)."""
    run_id = flow_run.get_id()
    if run_id is None:
        raise PipelineError("tag_run tags the flow run it is called in: there is none")
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), tags=sorted({*flow_run.get_tags(), tag}))


def make_plan(params: PipelineParameters) -> Plan:
    """Resolve the folders (checking the artifacts folder takes files), hash the split's recipe and
    settle the training configuration, before any work is done."""
    paths = ArtifactPaths.resolve(params.artifacts_dir)
    _check_writable(paths.root)
    if paths.shared:
        store.ObjectStore(paths.location).check()
    bundle_dir, extra_dir = data_folders(params)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Plan(
        params=params,
        paths=paths,
        bundle_dir=bundle_dir,
        extra_dir=extra_dir,
        recipe=make_recipe(
            params.data_source,
            bundle_dir,
            params.validation_fraction,
            params.seed,
            extra_data.scan(extra_dir) if extra_dir else None,
        ),
        config=training_config(
            params.preset,
            params.seed,
            epochs=params.epochs,
            batch_size=params.batch_size,
            learning_rate=params.learning_rate,
            patience=params.patience,
            width=params.width,
            dropout=params.dropout,
        ),
        run_dir=paths.runs / f"{stamp}-{(flow_run.get_id() or os.getpid())!s:.8}",
    )


def data_folders(params: PipelineParameters | DataParameters) -> tuple[Path, Path | None]:
    """(the MNIST bundle's folder, the extra pictures' folder or None), resolved; extra pictures in a
    store (team mode: reviewed corrections) are mirrored here first."""
    bundle_dir = Path(params.bundle_dir).expanduser().resolve() if params.bundle_dir else bundled_mnist_dir()
    if params.extra_data and store.is_url(params.extra_data):
        return bundle_dir, store.mirror_tree(params.extra_data)
    return bundle_dir, Path(params.extra_data).expanduser().resolve() if params.extra_data else None


def _check_writable(directory: Path) -> None:
    """Create `directory` and check it takes files."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PipelineError(
            f"Artifacts directory {directory} is not writable ({error.strerror}). Pass a writable "
            "folder with --artifacts-dir or set MNIST_ARTIFACTS_DIR."
        ) from error
