"""A flow run's MLflow view (core/tracking/), with what only Prefect knows: the flow run's id, name and
UI URL as tags, and a link artifact from the Prefect run to the MLflow run.

Off (and MLflow not imported) unless the run has a tracking URI. The server is checked before any
work: if it does not answer, the run stops with an error naming the URI, unless `mlflow_optional`.
After that nothing MLflow does fails the run: a failure is logged as a warning saying what was not
mirrored, and the view stops mirroring for the rest of the run. The registry is never touched by it;
`mnist-pipeline registry sync-mlflow` (or the next tracked run) brings MLflow's registered model back
in step.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.logging import get_logger, get_run_logger
from prefect.runtime import flow_run as current_run
from prefect.states import State

from mnist_pipeline.core.evaluation.scoring import Evaluation
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.registry.report import render_report
from mnist_pipeline.core.runs.sweep import Trial
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.tracking.run_log import FLOW_RUN_TAG, FLOW_RUN_URL_TAG, RunLog, experiment_id, find_run
from mnist_pipeline.core.tracking.target import MlflowTarget, MlflowUnavailable, first_line, resolve_target

LINK_KEY = "mlflow-run"
SYNC_COMMAND = "mnist-pipeline registry sync-mlflow"
NOT_LOGGED = ("mlflow_uri", "mlflow_experiment", "mlflow_model", "mlflow_optional")


def target_of(params: PipelineParameters) -> MlflowTarget | None:
    return resolve_target(params.mlflow_uri, params.mlflow_experiment, params.mlflow_model)


class FlowTracking:
    """The MLflow run of this flow run (`begin`), or nothing at all when MLflow is off."""

    def __init__(self, run: RunLog | None = None):
        self.run = run
        self.stopped = False  # after a failure: nothing more is sent

    @classmethod
    def begin(cls, params: PipelineParameters, run_dir: str, kind: str, more: dict[str, Any]) -> FlowTracking:
        """Check the server and start this flow run's MLflow run (`kind`: run or sweep) with the parameters
        and `more` of them (the split's recipe and the data's fingerprint)."""
        target = target_of(params)
        if target is None:
            return cls()
        try:
            client = target.check()
        except MlflowUnavailable as error:
            if not params.mlflow_optional:
                raise
            get_run_logger().warning("%s Going on without MLflow (mlflow_optional).", error)
            return cls()
        tracking = cls()
        tracking._mirror(
            "the run's start",
            lambda: setattr(
                tracking,
                "run",
                RunLog.start(
                    target,
                    client,
                    current_run.get_name() or kind,
                    {**{k: v for k, v in params.model_dump().items() if k not in NOT_LOGGED}, **more},
                    {
                        FLOW_RUN_TAG: str(current_run.get_id()),
                        **({FLOW_RUN_URL_TAG: ui_url} if (ui_url := prefect_ui_url()) else {}),
                        "mnist.kind": kind,
                        "mnist.preset": params.preset,
                        "mnist.run_dir": run_dir,
                    },
                ),
            ),
        )
        if tracking.run is not None and tracking.run.url:
            create_link_artifact(
                tracking.run.url, link_text="MLflow run", key=LINK_KEY, description=f"This {kind} in MLflow"
            )
        return tracking

    def candidates(self, trials: list[Trial]) -> None:
        """One nested run per sweep candidate: its configuration and curves; FAILED with its error if its
        training failed."""
        run = self.run
        if run is None:
            return

        def log_candidate(trial: Trial) -> None:
            nested = RunLog.start(
                run.target,
                run.client,
                trial.name,
                {"candidate": trial.name},
                {"mnist.candidate": trial.name, "mnist.preset": trial.config.preset, "mnist.run_dir": trial.run_dir},
                parent=run,
            )
            if trial.trained is None:
                nested.log_params({f"training.{k}": v for k, v in asdict(trial.config).items()})
                nested.set_tags({"mnist.error": trial.error[:4000]})
                nested.end("FAILED")
                return
            nested.log_training(trial.trained)
            nested.end()

        for trial in trials:
            self._mirror(f"sweep candidate {trial.name}", functools.partial(log_candidate, trial))

    def finish(
        self, trained: TrainedModel | None, evaluation: Evaluation, decision: DecisionRecord, registry_location: str
    ) -> None:
        """Log the training, the evaluation and the gate's decision, mirror the registry (the new version,
        the alias), and end the run. (`trained` is never None where a decision was made; a sweep's
        `Trial` types it as optional.)"""
        run = self.run
        if run is None or trained is None:
            return
        registry = open_registry(registry_location)
        self._mirror("the training's parameters and curves", lambda: run.log_training(trained))
        self._mirror("the test results and plots", lambda: run.log_evaluation(evaluation))

        def log_decision() -> None:
            version = decision.candidate or ""
            metrics = evaluation.fetched().metrics_path
            report = render_report(
                decision,
                json.loads(Path(metrics).read_text()),
                registry.version_dir(version),
                trained.config.preset,
                files_at=store.join(registry.location, "versions", version),
            )
            run.log_decision(decision, report)

        self._mirror("the gate's decision and the report", log_decision)
        self._mirror("the registry (versions, production alias)", lambda: sync_and_log(registry, run))
        self._mirror("the run's end", run.end)

    def _mirror(self, what: str, action: Callable[[], Any]) -> None:
        """Do `action` unless mirroring stopped; on a failure warn, say what was not mirrored, and stop."""
        if self.stopped:
            get_run_logger().warning("MLflow: %s not mirrored (mirroring stopped after an earlier failure)", what)
            return
        try:
            action()
        except Exception as error:  # MLflow's, the network's, a full disk: none may fail the run
            self.stopped = True
            get_run_logger().warning(
                "MLflow: %s not mirrored (%s). The run goes on and the registry is unaffected; run `%s` once "
                "MLflow answers to bring its registered model back in step.",
                what,
                first_line(error),
                SYNC_COMMAND,
            )


def prefect_ui_url() -> str | None:
    """This flow run's page in Prefect's UI (None when the server has no UI URL, e.g. a temporary one)."""
    url = current_run.get_flow_run_ui_url()
    return url if url and url.startswith(("http://", "https://")) else None


def sync_and_log(registry: Any, run: RunLog) -> None:
    from mnist_pipeline.core.tracking.model_sync import sync_registry

    for line in sync_registry(registry, run.target, run.client).lines():
        get_run_logger().info("MLflow: %s", line)


def mark_failed(flow: Any, flow_run: FlowRun, state: State[Any]) -> None:
    """A flow's on_failure/on_crashed hook: the MLflow run of a flow run that failed ends FAILED."""
    try:
        target = resolve_target(
            flow_run.parameters.get("mlflow_uri"),
            flow_run.parameters.get("mlflow_experiment"),
            flow_run.parameters.get("mlflow_model"),
        )
        if target is None:
            return
        client = target.client()
        found = find_run(client, experiment_id(client, target.experiment), FLOW_RUN_TAG, str(flow_run.id))
        if found is not None:
            client.set_tag(found, "mnist.failure", str(state.message or state.name)[:4000])
            client.set_terminated(found, "FAILED")
    except Exception as error:  # a hook's failure is only logged by Prefect; say what it was
        get_logger("mnist.mlflow").warning("MLflow: could not mark the failed run (%s)", first_line(error))
