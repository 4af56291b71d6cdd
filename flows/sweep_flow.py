"""A sweep as one Prefect flow: several trainings of one preset at once on Dask, the best through the gate.

    download/split -> preprocess -> train x N (Dask, in parallel) -> select on validation -> evaluate -> register

Run it: `mnist-pipeline sweep --help` (or `python flows/sweep_flow.py`: the same). The candidates
share one split, read by path; each trains in a Dask worker process of its own, on a local cluster
sized to the machine or on an existing cluster.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # answer the command line before Prefect loads
    from mnist_pipeline.cli.main import entry_point

    entry_point(["sweep", *sys.argv[1:]])

from prefect import State, flow, get_client, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed
from prefect_dask.task_runners import DaskTaskRunner

from mnist_pipeline.core.data.splits import SplitFiles, split_available
from mnist_pipeline.core.evaluation.plots import plot_sweep, png_data_uri
from mnist_pipeline.core.modelling.parameters import PipelineParameters, takes_parameters, validate_parameters
from mnist_pipeline.core.runs.sweep import (
    SWEPT,
    SweepParameters,
    SweepSummary,
    Trial,
    candidate_configs,
    check_dask_cluster,
    render_sweep_report,
    select,
)
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.storage.paths import ArtifactPaths
from mnist_pipeline.core.support.files import write_json_atomic
from mnist_pipeline.flows.mnist_flow import Plan, make_plan, run_name, summarize
from mnist_pipeline.orchestration.mlflow_view import FlowTracking, mark_failed
from mnist_pipeline.orchestration.results_storage import result_storage
from mnist_pipeline.tasks.evaluate import evaluate
from mnist_pipeline.tasks.preprocess import preprocess
from mnist_pipeline.tasks.register import register
from mnist_pipeline.tasks.split import download_split
from mnist_pipeline.tasks.train import train

SWEEP_REPORT_KEY = "mnist-sweep-report"


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep decides before its first stage: the shared run plan, the candidates, the cluster."""

    base: Plan  # folders, split recipe; its run folder's name is the stem of the candidates' folders
    trials: list[Trial]
    task_runner: DaskTaskRunner

    @property
    def sweep_dir(self) -> Path:
        run_dir: Path = self.base.run_dir  # (mypy does not resolve the mnist_pipeline.flows alias: Plan is Any to it)
        return run_dir.with_name(f"{run_dir.name}-sweep")


@flow(
    name="mnist-sweep",
    flow_run_name=lambda: f"sweep-{run_name()}",
    log_prints=True,
    on_failure=[mark_failed],  # the MLflow run, if any, ends FAILED too
    on_crashed=[mark_failed],
)
@functools.partial(takes_parameters, model=SweepParameters)
def mnist_sweep(**values: Any) -> State:
    """Train several configurations of one preset in parallel on Dask; evaluate the one with the best
    validation accuracy on the test split and offer it to the promotion gate.

    The run ends in a `Completed` state named `Promoted`, `Rejected` or `Unchanged` (as a single run's);
    its result is the `SweepSummary`.
    """
    plan = make_sweep_plan(validate_parameters(values, SweepParameters))
    base, paths = plan.base, plan.base.paths
    tracking = FlowTracking.begin(
        base.params, paths.ref(plan.sweep_dir), "sweep", base.run_params
    )  # MLflow, if asked for
    results, refs = result_storage(paths), paths.ref
    split = download_split.with_options(
        result_storage=results, refresh_cache=not split_available(base.recipe, refs(paths.splits))
    )
    data = preprocess(
        split(
            base.recipe,
            str(base.bundle_dir),
            refs(paths.splits),
            str(paths.tfds_data),
            base.extra_dir and str(base.extra_dir),
        )
    )
    with workers_share_this_api():
        # with_options wants a TaskRunner[PrefectFuture[Any]]; a DaskTaskRunner is one (of its own future subclass)
        trials = train_candidates.with_options(task_runner=plan.task_runner)(  # type: ignore[arg-type]
            plan.trials, data, refs(paths.tensorboard), paths.location, base.params.force_retrain
        )
    tracking.candidates(trials)
    selected = select(trials)
    evaluation = evaluate.with_options(result_storage=results)(selected.trained, data, selected.run_dir)
    decision = register(
        selected.trained,
        evaluation,
        data,
        refs(paths.registry),
        base.gate,
        {**base.run_params, "sweep": plan.sweep_dir.name, "candidate": selected.name},
    )

    summary = SweepSummary(
        candidates=[trial.record() for trial in trials],
        selected=selected.name,
        sweep_dir=refs(plan.sweep_dir),
        run=summarize(decision, selected.trained, evaluation, refs(paths.registry), selected.run_dir),
    )
    publish_report(summary)
    tracking.finish(selected.trained, evaluation, decision, refs(paths.registry))
    return Completed(name=decision.verdict.capitalize(), message=decision.reason, data=summary)


@flow(name="mnist-sweep-candidates", flow_run_name="candidates")
def train_candidates(
    trials: list[Trial], data: SplitFiles, tensorboard_root: str, artifacts: str, force_retrain: bool
) -> list[Trial]:
    """Train every candidate on the Dask cluster, as many at once as it has worker processes (a candidate
    trained before, on the same data and code, comes from the cache as in a single run). A subflow
    because a flow's task runner is fixed when it starts, and which cluster to use is a parameter."""
    results = result_storage(ArtifactPaths.resolve(artifacts))
    futures = train.with_options(result_storage=results, refresh_cache=force_retrain).map(
        [trial.config for trial in trials],
        unmapped(data),
        [trial.run_dir for trial in trials],
        [store.join(tensorboard_root, store.local_path(trial.run_dir).name) for trial in trials],
    )
    futures.wait()
    finished = []
    for trial, future in zip(trials, futures, strict=True):
        if future.state.is_completed():
            finished.append(replace(trial, trained=future.result()))
        else:  # recorded as failed; the sweep goes on with the others
            error = future.state.message or future.state.name
            get_run_logger().warning("candidate %s failed: %s", trial.name, error)
            finished.append(replace(trial, error=error))
    return finished


def make_sweep_plan(params: Any) -> SweepPlan:
    """Expand and check the grid, resolve the folders, and find or size the cluster, before any work."""
    configs = candidate_configs(params)
    base = make_plan(PipelineParameters(**params.model_dump(include=set(PipelineParameters.model_fields) - set(SWEPT))))
    trials = [
        Trial(f"c{i:02d}", config, base.paths.ref(base.run_dir.with_name(f"{base.run_dir.name}-c{i:02d}")))
        for i, config in enumerate(configs, start=1)
    ]
    return SweepPlan(base, trials, dask_task_runner(params.dask_address, params.max_parallel, len(trials)))


def dask_task_runner(address: str | None, max_parallel: int | None, candidates: int) -> DaskTaskRunner:
    """The cluster at `address` (checked to answer and have workers), else a local cluster: one process
    per candidate training at once (up to the cores, or `max_parallel`), each running one task at a
    time with TensorFlow's thread pools sized to its share of the cores, and a share of the memory.
    Keras is not thread-safe, and one process per training keeps TensorFlow's memory growth contained."""
    if address:
        check_dask_cluster(address)
        return DaskTaskRunner(address=address)
    cores = len(os.sched_getaffinity(0))
    workers = min(max_parallel or cores, candidates)
    threads = str(max(1, cores // workers))
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "memory_limit": "auto",  # the machine's memory divided among the workers
            "env": {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads},
            "dashboard_address": None,
        }
    )


def workers_share_this_api() -> contextlib.AbstractContextManager[Any]:
    """Dask workers are other processes: with no Prefect API configured, each would start a temporary
    server of its own, whose records no one sees and which knows no concurrency limit. Hand them this
    flow's server (its settings travel with every task Dask runs)."""
    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    with get_client(sync_client=True) as client:
        return temporary_settings({PREFECT_API_URL: str(client.api_url).rstrip("/")})


def publish_report(summary: SweepSummary) -> None:
    """`sweep.json` and the validation accuracy plot in the sweep's folder, and the sweep report artifact."""
    sweep_dir = store.local_path(summary.sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sweep_dir / "sweep.json", {"selected": summary.selected, "candidates": summary.candidates})
    plot = sweep_dir / "validation_accuracy.png"
    plot_sweep(summary.candidates, summary.selected, plot)
    store.publish(sweep_dir)
    create_markdown_artifact(
        key=SWEEP_REPORT_KEY,
        markdown=render_sweep_report(summary, png_data_uri(plot)),
        description=f"MNIST sweep: {summary.selected} of {len(summary.candidates)} selected",
    )
