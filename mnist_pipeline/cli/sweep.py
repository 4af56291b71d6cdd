"""`mnist-pipeline sweep` (and `python flows/sweep_flow.py`): several trainings of one preset in
parallel on Dask, the best through the gate.

Options are built from `SweepParameters` (a swept one takes one or more values) and, grid included,
checked before Prefect, Dask or TensorFlow load: a bad value or grid exits 2 at once, and a Dask
address that does not answer exits 1 before anything trains. Exit codes as `run`'s.
"""

from __future__ import annotations

import argparse

from mnist_pipeline.cli import options
from mnist_pipeline.cli.flow_runs import finish, hide_pipeline_error_tracebacks, prepare_prefect
from mnist_pipeline.cli.run import format_summary
from mnist_pipeline.core.runs.sweep import (
    SweepParameters,
    SweepSummary,
    candidate_configs,
    candidates_table,
    check_dask_cluster,
)


def add_parser(subparsers: options.Subparsers) -> None:
    options.flow_command(subparsers, "sweep", SweepParameters, sweep)


def format_sweep(summary: SweepSummary) -> str:
    return "\n".join(
        [
            f"MNIST sweep finished: {len(summary.candidates)} candidates, {summary.selected} selected "
            "(highest validation accuracy; ties: shortest training)",
            candidates_table(summary.candidates, summary.selected),
            format_summary(summary.run),
            f"  sweep files   : {summary.sweep_dir}",
        ]
    )


def sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Train several configurations on Dask at once; gate the best one.

    Several configurations of one preset train in parallel on Dask (a local cluster of processes, or an
    existing one with --dask-address): every combination of the values given, or a random sample of
    them. The candidate with the best validation accuracy is evaluated on the test split and offered to
    the promotion gate; the others stay run folders.
    """
    # prints the candidates and the selected one's summary; exit codes as `run`'s
    params = options.validated(parser, args, SweepParameters, check=candidate_configs)
    if params.dask_address:
        check_dask_cluster(params.dask_address)
    prepare_prefect()
    from mnist_pipeline.flows import sweep_flow

    hide_pipeline_error_tracebacks()
    summary = sweep_flow.mnist_sweep(**params.model_dump())
    print(format_sweep(summary))
    return finish(summary.run, args.summary_json, args.fail_if_not_promoted, summary.to_json())
