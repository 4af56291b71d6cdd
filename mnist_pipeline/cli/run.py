"""`mnist-pipeline run` (and `python flows/mnist_flow.py`): the flow's options and its summary.

Options are built from `PipelineParameters` and checked before Prefect or TensorFlow load, so
`--help` and bad values answer at once (exit 2). A failure ends as `error: ...`, exit 1 (cli/main.py);
`--fail-if-not-promoted` exits 3 unless the run's model is production afterwards (cli/options.py).
"""

from __future__ import annotations

import argparse

from mnist_pipeline.cli import options
from mnist_pipeline.cli.flow_runs import finish, hide_pipeline_error_tracebacks, prepare_prefect
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow_in_background


def add_parser(subparsers: options.Subparsers) -> None:
    options.flow_command(subparsers, "run", PipelineParameters, run)


def format_summary(summary: RunSummary) -> str:
    low, high = summary.accuracy_interval_95
    return "\n".join(
        [
            f"MNIST pipeline finished: model {summary.version} ({summary.preset})",
            f"  test accuracy : {summary.accuracy:.4f} (95% CI {low:.4f}-{high:.4f})",
            f"  promoted      : {'yes' if summary.promoted else 'no'}: {summary.reason}"
            if summary.verdict != "unchanged"
            else f"  unchanged     : {summary.reason}",
            f"  production    : {summary.production or 'none'}",
            f"  model files   : {summary.version_dir}",
            f"  run files     : {summary.run_dir}",
            f"  decision log  : {summary.decision_log}",
        ]
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Train, evaluate and register a model (the Prefect flow).

    An MNIST classifier trained as a Prefect flow: download/split, preprocess, train, evaluate, register;
    the model is promoted to production if it passes the gate.
    """
    # prints the run's summary; the exit code is `flow_runs.finish`'s
    params = options.validated(parser, args, PipelineParameters)
    prepare_prefect()
    from mnist_pipeline.flows import mnist_flow

    hide_pipeline_error_tracebacks()

    # TensorFlow takes seconds to import: do it while Prefect starts its server (a process of its own,
    # waited for), not while Prefect imports (in this process, competing for the interpreter).
    import_tensorflow_in_background()
    summary = mnist_flow.mnist_pipeline(**params.model_dump())
    print(format_summary(summary))
    return finish(summary, args.summary_json, args.fail_if_not_promoted, summary.to_json())
