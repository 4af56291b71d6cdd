"""One MLflow run: what a flow run (or one candidate of a sweep) trained, how it scored, what the gate
decided.

Each training and each evaluation is logged once, by the first run that reports it: its run folder is
a tag (`mnist.training_dir`, `mnist.evaluation_dir`), and a later run whose training or evaluation came
from Prefect's cache finds that run by the tag and refers to it (`mnist.training_from_run`,
`mnist.evaluation_from_run`) instead of logging a second copy.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.core.evaluation.scoring import Evaluation
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.tracking.target import MlflowTarget

FLOW_RUN_TAG = "prefect.flow_run_id"
FLOW_RUN_URL_TAG = "prefect.flow_run_url"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests the run under its parent


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, creating it if it does not exist (a racing creator's is taken)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # created by another process meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def find_run(client: Any, experiment: str, tag: str, value: str) -> str | None:
    """The id of the earliest run of `experiment` whose tag `tag` is `value`, if any."""
    if "'" in value:  # not expressible in MLflow's filter syntax: no run is found, the caller logs its own copy
        return None
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{tag}` = '{value}'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    return str(runs[0].info.run_id) if runs else None


@dataclass(frozen=True)
class RunLog:
    """An MLflow run to log into (created by `start`)."""

    target: MlflowTarget
    client: Any
    experiment_id: str
    run_id: str

    @classmethod
    def start(
        cls,
        target: MlflowTarget,
        client: Any,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent: RunLog | None = None,
    ) -> RunLog:
        """A new run named `name` with `params` and `tags` (nested under `parent`, if given)."""
        experiment = parent.experiment_id if parent else experiment_id(client, target.experiment)
        if parent:
            tags = {**tags, PARENT_TAG: parent.run_id}
        run = client.create_run(experiment, run_name=name, tags=tags)
        log = cls(target, client, experiment, str(run.info.run_id))
        log.log_params(params)
        return log

    @property
    def url(self) -> str | None:
        return self.target.run_url(self.experiment_id, self.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        given = [Param(name, str(value)) for name, value in sorted(params.items()) if value is not None]
        for start in range(0, len(given), 100):  # MLflow takes at most 100 parameters a request
            self.client.log_batch(self.run_id, params=given[start : start + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def _made_before(self, part: str, folder: str) -> bool:
        """True (and a tag naming that run) if another run already logged the `part` of `folder`."""
        earlier = find_run(self.client, self.experiment_id, f"mnist.{part}_dir", folder)
        if earlier is not None and earlier != self.run_id:
            self.set_tags({f"mnist.{part}_from_run": earlier})
            return True
        self.set_tags({f"mnist.{part}_dir": folder})
        return False

    def log_training(self, trained: TrainedModel) -> None:
        """The training configuration as parameters and each epoch's training and validation loss and
        accuracy as steps, unless the run that trained this model logged them."""
        if self._made_before("training", store.parent(trained.model_path)):
            return
        from mlflow.entities import Metric

        self.log_params({f"training.{name}": value for name, value in asdict(trained.config).items()})
        history_path = store.fetch(trained.history_path)
        history: dict[str, list[float]] = json.loads(history_path.read_text())
        now = int(time.time() * 1000)
        points = [
            Metric(name, float(value), now, epoch)
            for name, values in sorted(history.items())
            for epoch, value in enumerate(values, start=1)
        ]
        points += [
            Metric("epochs_run", trained.epochs_run, now, 0),
            Metric("best_epoch", trained.best_epoch, now, 0),
            Metric("train_seconds", trained.train_seconds, now, 0),
        ]
        for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics a request
            self.client.log_batch(self.run_id, metrics=points[start : start + 1000])
        self.client.log_artifact(self.run_id, str(history_path), "training")

    def log_evaluation(self, evaluation: Evaluation) -> None:
        """Test accuracy with its 95% interval, loss, per-class accuracy, the split's hashes, the metrics
        file and the plots (confusion matrix, curves), unless the run that made this evaluation did."""
        if self._made_before("evaluation", store.parent(evaluation.metrics_path)):
            return
        from mlflow.entities import Metric

        local = evaluation.fetched()
        metrics = json.loads(Path(local.metrics_path).read_text())
        low, high = metrics["accuracy_interval_95"]
        values = {
            "test_accuracy": metrics["accuracy"],
            "test_accuracy_low_95": low,
            "test_accuracy_high_95": high,
            "test_loss": metrics["loss"],
            **{f"test_accuracy_class_{row['class']}": row["accuracy"] for row in metrics["per_class"]},
        }
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, float(v), now, 0) for name, v in values.items()])
        self.log_params({name: metrics[name] for name in ("data_sha256", "test_split_sha256")})
        for path in (local.metrics_path, *local.plot_paths):
            self.client.log_artifact(self.run_id, path, "evaluation")

    def log_decision(self, decision: DecisionRecord, report: str | None = None) -> None:
        """The gate's verdict and reason as tags (and the run's report as `report.md`)."""
        self.set_tags(
            {
                "mnist.gate.verdict": decision.verdict,
                "mnist.gate.reason": decision.reason[:4000],
                "mnist.registry.version": decision.candidate or "",
                "mnist.registry.production_before": decision.production_before or "",
            }
        )
        if report is not None:
            self.client.log_text(self.run_id, report, "report.md")

    def end(self, status: str = "FINISHED") -> None:
        """FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status)
