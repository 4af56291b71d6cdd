"""`mnist-pipeline run` (and `python flows/mnist_flow.py`): the flow's options and its summary.

Options are built from `PipelineParameters` and checked before Prefect or TensorFlow load, so
`--help` and bad values answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import types
import typing
from pathlib import Path

from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.modelling.parameters import PipelineParameters, validate_parameters
from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow
from mnist_pipeline.core.runs.summary import RunSummary

EXIT_NOT_PROMOTED = 3
DESCRIPTION = ("Train an MNIST classifier as a Prefect flow: download/split, preprocess, train, evaluate, "
               "register; promote the model to production if it passes the gate.")


def _value_type(annotation):
    """The scalar type of `Optional[X]`, `X` or `Literal[...]` (for argparse)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _value_type(args[0])
    return annotation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per pipeline parameter, plus the options of the command itself."""
    for name, field in PipelineParameters.model_fields.items():
        help_text = field.description if field.default is None else f"{field.description} (default: {field.default})"
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
        if field.annotation is bool:  # a switch: --name turns it on, --no-name off
            parser.add_argument("--" + name.replace("_", "-"), dest=name, default=field.default,
                                action=argparse.BooleanOptionalAction, help=help_text.replace("%", "%%"))
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=field.default, type=_value_type(field.annotation),
            choices=choices, help=help_text.replace("%", "%%"),
        )
    parser.add_argument(
        "--fail-if-not-promoted", action="store_true",
        help=f"exit with code {EXIT_NOT_PROMOTED} when the gate rejects the model (default: exit 0; a run whose "
             "model is identical to a registered one is not rejected)",
    )
    parser.add_argument("--summary-json", metavar="FILE", help="also write the run's summary as JSON to FILE")


def validated(parser: argparse.ArgumentParser, args: argparse.Namespace) -> PipelineParameters:
    """The parameters among `args`; exits with code 2, naming the bad parameter, through `parser`."""
    try:
        return validate_parameters({name: getattr(args, name) for name in PipelineParameters.model_fields})
    except PipelineError as error:
        parser.error(str(error))


def format_summary(summary: RunSummary) -> str:
    low, high = summary.accuracy_interval_95
    return "\n".join([
        f"MNIST pipeline finished: model {summary.version} ({summary.preset})",
        f"  test accuracy : {summary.accuracy:.4f} (95% CI {low:.4f}-{high:.4f})",
        f"  promoted      : {'yes' if summary.promoted else 'no'}: {summary.reason}"
        if summary.verdict != "unchanged" else f"  unchanged     : {summary.reason}",
        f"  production    : {summary.production or 'none'}",
        f"  model files   : {summary.version_dir}",
        f"  run files     : {summary.run_dir}",
        f"  decision log  : {summary.decision_log}",
    ])


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the flow; print its summary; 0 promoted or unchanged, 0/3 rejected, 1 on failure."""
    params = validated(parser, args)
    # The pipeline runs offline: keep Prefect's temporary server from trying to send telemetry, and
    # give it more than Prefect's default 20 s to start on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    # TensorFlow takes seconds to import: do it while Prefect starts its server (a process of its own,
    # waited for), not while Prefect imports (in this process, competing for the interpreter).
    threading.Thread(target=import_tensorflow, name="import-tensorflow", daemon=True).start()

    _hide_console_tracebacks_of(PipelineError)
    try:
        summary = mnist_pipeline(**params.model_dump())
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.summary_json:
        Path(args.summary_json).write_text(summary.to_json() + "\n")
    return EXIT_NOT_PROMOTED if summary.verdict == "rejected" and args.fail_if_not_promoted else 0


class _WithoutTracebacksOf(logging.Filter):
    def __init__(self, error_type: type[BaseException]):
        super().__init__()
        self.error_type = error_type

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], self.error_type))


def _hide_console_tracebacks_of(error_type: type[BaseException]) -> None:
    """Prefect's console log prints the traceback of the exception that ended the flow run. For a
    `PipelineError` the message says what is wrong and what to do, and `run` prints it last as
    `error: ...`, so the console leaves that record out; the Prefect server's log still has it."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_WithoutTracebacksOf(error_type))
