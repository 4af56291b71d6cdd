"""Sweeps: one preset trained with several hyperparameter values, the best candidate offered to the gate.

The sweep's parameters reuse the single run's definitions (`core/modelling/parameters.py`): each swept
parameter takes a list of the values a run allows, so the same bounds, help and Prefect schema apply.
Everything a bad grid can get wrong is found here, before anything trains.

Selection reads validation accuracy only: the test split belongs to the gate, and a model chosen
for its test accuracy would be judged on the data it was chosen by.
"""

from __future__ import annotations

import itertools
import json
import random
import socket
import typing
from dataclasses import asdict, dataclass
from types import GenericAlias
from typing import Annotated, Any

from pydantic import ConfigDict, Field, create_model

from mnist_pipeline.core.modelling.models import PRESETS, ConfigError, TrainingConfig, training_config
from mnist_pipeline.core.modelling.parameters import NOT_BOOL, InvalidParameterError, PipelineParameters
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.errors import PipelineError

SWEPT = ("learning_rate", "batch_size", "epochs", "width", "dropout")  # what TrainingConfig lets a preset vary
MAX_CANDIDATES = 64


def _scalar(annotation: Any) -> Any:
    """`X` of `Optional[X]`."""
    return next(arg for arg in typing.get_args(annotation) if arg is not type(None))


def _values_of(name: str) -> tuple[Any, Any]:
    """A swept parameter: a list of values each allowed for the single run's parameter of that name."""
    field = PipelineParameters.model_fields[name]
    return (
        GenericAlias(list, (Annotated[(_scalar(field.annotation), *field.metadata)],)),
        Field([], description=f"values to try, one or more: {field.description}"),
    )


_SWEEP_FIELDS: dict[str, Any] = {
    **{name: (field.annotation, field) for name, field in PipelineParameters.model_fields.items() if name not in SWEPT},
    **{name: _values_of(name) for name in SWEPT},
}
SweepParameters = create_model(
    "SweepParameters",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **_SWEEP_FIELDS,
    samples=(
        Annotated[int | None, NOT_BOOL],
        Field(
            None,
            ge=1,
            le=MAX_CANDIDATES,
            description=(
                "train this many combinations of the grid, drawn at random (seeded by sample_seed), instead of all"
            ),
        ),
    ),
    sample_seed=(
        Annotated[int, NOT_BOOL],
        Field(0, ge=0, le=2**31 - 1, description="seed of the random sample of the grid"),
    ),
    max_parallel=(
        Annotated[int | None, NOT_BOOL],
        Field(
            None,
            ge=1,
            le=256,
            description=(
                "candidates training at once on the local cluster, one worker process each (default: the machine's cores)"
            ),
        ),
    ),
    dask_address=(
        str | None,
        Field(
            None,
            pattern=r"^(tcp|tls)://[^\s/:]+:\d+$",
            description=(
                "an existing Dask scheduler to train on, e.g. tcp://host:8786 (default: a local cluster of processes)"
            ),
        ),
    ),
)


def candidate_configs(params: Any) -> list[TrainingConfig]:
    """The training configurations of a sweep: every combination of the swept values (the preset's own
    value where none is given), or `samples` of them drawn at random, in grid order."""
    defaults = PRESETS[params.preset].defaults
    grid = {name: getattr(params, name) or [getattr(defaults, name)] for name in SWEPT}
    for name, values in grid.items():
        if repeated := sorted({v for v in values if values.count(v) > 1}):
            raise InvalidParameterError(
                f"Invalid sweep: {name} lists {', '.join(map(str, repeated))} more than "
                "once; each value is tried once, so give it once"
            )
    combinations = list(itertools.product(*grid.values()))
    size = " x ".join(f"{len(values)} {name}" for name, values in grid.items() if len(values) > 1) or "nothing swept"
    if len(combinations) == 1:
        raise InvalidParameterError(
            f"Invalid sweep: nothing to compare, the grid has one combination ({size}); give "
            f"{', '.join(SWEPT)} two or more values between them"
        )
    if params.samples is not None:
        if params.samples > len(combinations):
            raise InvalidParameterError(
                f"Invalid sweep: samples={params.samples} but the grid has only {len(combinations)} combinations "
                f"({size}); ask for at most {len(combinations)}, or give more values"
            )
        picked = sorted(random.Random(params.sample_seed).sample(range(len(combinations)), params.samples))
        combinations = [combinations[i] for i in picked]
    elif len(combinations) > MAX_CANDIDATES:
        raise InvalidParameterError(
            f"Invalid sweep: the grid has {len(combinations)} combinations ({size}), more than {MAX_CANDIDATES}; "
            f"give fewer values, or train a random sample of them with samples=N (N <= {MAX_CANDIDATES})"
        )
    if params.max_parallel is not None and params.dask_address:
        raise InvalidParameterError(
            "Invalid sweep: max_parallel sizes the local cluster, but dask_address names an existing one, whose "
            "workers decide how many candidates train at once; give one or the other"
        )
    try:
        return [
            training_config(
                params.preset, params.seed, patience=params.patience, **dict(zip(SWEPT, combination, strict=True))
            )
            for combination in combinations
        ]
    except ConfigError as error:
        raise InvalidParameterError(f"Invalid sweep: {error}") from None


def check_dask_cluster(address: str) -> None:
    """Fail at once, with what to do, when the Dask scheduler does not answer or has no workers to train on."""
    from distributed import Client

    host, port = address.split("://", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()  # a refused connection fails at once
        with Client(address, timeout="10s", set_as_default=False) as client:
            workers = client.scheduler_info()["workers"]
    except (OSError, TimeoutError) as error:
        raise PipelineError(
            f"Cannot reach the Dask scheduler at {address} ({error}). Check the address and that the scheduler "
            "is running, or leave the address out to train on a local cluster."
        ) from None
    if not workers:
        raise PipelineError(
            f"The Dask scheduler at {address} has no workers, so nothing would train. Start "
            "workers for it (one thread each) and run the sweep again."
        )


class SweepFailedError(PipelineError):
    """No candidate finished training: there is nothing to select."""


@dataclass(frozen=True)
class Trial:
    """One candidate of a sweep: its configuration, run folder and what became of its training."""

    name: str  # c01, c02, ... in grid order
    config: TrainingConfig
    run_dir: str
    trained: TrainedModel | None = None  # None: training failed
    error: str = ""

    @property
    def status(self) -> str:
        return "completed" if self.trained else "failed"

    @property
    def validation_accuracy(self) -> float | None:
        """Of the weights training kept (its best epoch by validation loss), as Keras measured it."""
        if not self.trained:
            return None
        history = json.loads(store.fetch(self.trained.history_path).read_text())
        accuracy: float = history["val_accuracy"][self.trained.best_epoch - 1]
        return accuracy

    def record(self) -> dict[str, Any]:
        """What the sweep report and `sweep.json` show of this candidate (its model's folder: an earlier
        run's when the training came from the cache)."""
        return {
            "candidate": self.name,
            "status": self.status,
            "run_dir": store.parent(self.trained.model_path) if self.trained else self.run_dir,
            **{name: getattr(self.config, name) for name in SWEPT},
            "validation_accuracy": self.validation_accuracy,
            "epochs_run": self.trained.epochs_run if self.trained else None,
            "train_seconds": round(self.trained.train_seconds, 2) if self.trained else None,
            "error": self.error,
        }


def select(trials: list[Trial]) -> Trial:
    """The completed candidate with the highest validation accuracy; of equals, the fastest to train
    (then the first in grid order)."""
    completed = [(trial, trial.trained) for trial in trials if trial.trained]
    if not completed:
        failures = "; ".join(f"{trial.name}: {trial.error}" for trial in trials)
        raise SweepFailedError(
            f"Every candidate of the sweep failed, so none can be selected ({failures}). "
            "Fix the cause named above and run the sweep again."
        )
    return max(completed, key=lambda pair: (pair[0].validation_accuracy, -pair[1].train_seconds))[0]


def candidates_table(records: list[dict[str, Any]], selected: str) -> str:
    """The candidates as a markdown table (also readable as plain text), the selected one marked."""
    lines = [
        "| candidate | learning rate | batch size | max epochs | width | dropout | validation accuracy | "
        "epochs run | training s | status |",
        "| --- " * 10 + "|",
    ]
    for r in records:
        mark = " (selected)" if r["candidate"] == selected else ""
        accuracy = f"{r['validation_accuracy']:.4f}" if r["validation_accuracy"] is not None else "-"
        dropout = f"{r['dropout']:g}" if r["dropout"] is not None else "-"
        lines.append(
            f"| {r['candidate']}{mark} | {r['learning_rate']:g} | {r['batch_size']} | {r['epochs']} | "
            f"{r['width']} | {dropout} | {accuracy} | {r['epochs_run'] or '-'} | "
            f"{r['train_seconds'] or '-'} | {r['status']} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep returns: every candidate's record, the selected one and its single-run summary."""

    candidates: list[dict[str, Any]]
    selected: str
    run: RunSummary  # the selected candidate's evaluation and the gate's decision
    sweep_dir: str  # sweep.json and the plot

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def render_sweep_report(summary: SweepSummary, plot_uri: str) -> str:
    """The sweep's markdown artifact: the candidates, why the selected one was chosen, the gate's verdict
    on it, and the validation accuracy plot inline (a `data:` URI: the Prefect UI opens no local files)."""
    run = summary.run
    failed = [r["candidate"] for r in summary.candidates if r["status"] == "failed"]
    return f"""# MNIST sweep: {len(summary.candidates)} candidates of {run.preset}, {summary.selected} selected

{summary.selected} has the highest validation accuracy (ties go to the shortest training); only it was
evaluated on the test split and offered to the gate: **{run.verdict}**
as {run.version} ({run.reason}). {f"Failed: {', '.join(failed)}." if failed else "No candidate failed."}

{candidates_table(summary.candidates, summary.selected)}

![validation accuracy per candidate]({plot_uri})

Candidates' run folders: `{store.parent(run.run_dir)}`; sweep record: `{summary.sweep_dir}/sweep.json`.
"""
