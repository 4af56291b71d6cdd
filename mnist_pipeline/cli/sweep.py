"""`mnist-pipeline sweep`: several trainings of one preset in parallel on Dask, the best through the gate.

Options are built from `SweepParameters` (a swept one takes one or more values) and, grid included,
checked before Prefect, Dask or TensorFlow load: a bad value or grid exits 2 at once, and a Dask
address that does not answer exits 1 before anything trains.
"""

from __future__ import annotations

import argparse
import os
import typing
from pathlib import Path

from mnist_pipeline.cli.run import EXIT_NOT_PROMOTED, _hide_console_tracebacks_of, _value_type, format_summary
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.modelling.parameters import validate_parameters
from mnist_pipeline.core.runs.sweep import SweepParameters, SweepSummary, candidate_configs, candidates_table, \
    check_dask_cluster

DESCRIPTION = ("Train several configurations of one preset in parallel on Dask (a local cluster of processes, "
               "or an existing one with --dask-address): every combination of the values given, or a random "
               "sample of them. The candidate with the best validation accuracy is evaluated on the test split "
               "and offered to the promotion gate; the others stay run folders.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per sweep parameter (`--learning-rate 1e-3 4e-3` for a swept one), plus the command's own."""
    for name, field in SweepParameters.model_fields.items():
        swept = typing.get_origin(field.annotation) is list
        annotation = typing.get_args(typing.get_args(field.annotation)[0])[0] if swept else field.annotation
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None
        default = "" if field.default in (None, []) else f" (default: {field.default})"
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=field.default, type=_value_type(annotation),
            nargs="+" if swept else None, choices=choices, help=(field.description + default).replace("%", "%%"),
        )
    parser.add_argument(
        "--fail-if-not-promoted", action="store_true",
        help=f"exit with code {EXIT_NOT_PROMOTED} when the gate rejects the selected model (default: exit 0)",
    )
    parser.add_argument("--summary-json", metavar="FILE", help="also write the sweep's summary as JSON to FILE")


def format_sweep(summary: SweepSummary) -> str:
    return "\n".join([
        f"MNIST sweep finished: {len(summary.candidates)} candidates, {summary.selected} selected "
        "(highest validation accuracy; ties: shortest training)",
        candidates_table(summary.candidates, summary.selected),
        format_summary(summary.run),
        f"  sweep files   : {summary.sweep_dir}",
    ])


def sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the sweep flow; print the candidates and the selected one's summary; exit codes as `run`'s."""
    try:
        params = validate_parameters({name: getattr(args, name) for name in SweepParameters.model_fields},
                                     SweepParameters)
        candidate_configs(params)
    except PipelineError as error:
        parser.error(str(error))
    if params.dask_address:
        check_dask_cluster(params.dask_address)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as `run`: offline, a slow start
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from mnist_pipeline.flows.sweep_flow import mnist_sweep

    _hide_console_tracebacks_of(PipelineError)
    summary = mnist_sweep(**params.model_dump())  # a PipelineError ends as `error: ...`, exit 1 (cli/main.py)
    print(format_sweep(summary))
    if args.summary_json:
        Path(args.summary_json).write_text(summary.to_json() + "\n")
    return EXIT_NOT_PROMOTED if not summary.run.promoted and args.fail_if_not_promoted else 0
