"""Command line of the flow: `python flows/mnist_flow.py [--preset cnn] ...`.

Arguments are parsed and validated from `PipelineParameters` before Prefect or TensorFlow load,
so `--help` and bad values answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing

from flows.parameters import PipelineParameters, validate_parameters
from tasks.errors import PipelineError

EXIT_NOT_PROMOTED = 3

# The pipeline runs offline: keep Prefect's temporary server from trying to send telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# On a busy 2-core machine the temporary server can take longer than Prefect's default 20 s to start.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def _value_type(annotation):
    """The scalar type of `Optional[X]`, `X` or `Literal[...]` (for argparse)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _value_type(args[0])
    return annotation


DESCRIPTION = ("Train an MNIST classifier as a Prefect flow: download/split, preprocess, train, evaluate, "
               "register; promote the model to production if it passes the gate.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per pipeline parameter, plus --fail-if-not-promoted (shared with `mnist-pipeline run`)."""
    for name, field in PipelineParameters.model_fields.items():
        help_text = field.description if field.default is None else f"{field.description} (default: {field.default})"
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=field.default, type=_value_type(field.annotation),
            choices=choices, help=help_text.replace("%", "%%"),
        )
    parser.add_argument(
        "--fail-if-not-promoted", action="store_true",
        help=f"exit with code {EXIT_NOT_PROMOTED} when the gate rejects the model (default: exit 0)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python flows/mnist_flow.py", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def validated(parser: argparse.ArgumentParser, args: dict) -> tuple[PipelineParameters, bool]:
    """(validated parameters, fail-if-not-promoted) from the options `add_arguments` defined;
    exits with code 2, naming the bad parameter, through `parser`."""
    values = {name: args[name] for name in PipelineParameters.model_fields}
    try:
        return validate_parameters(values), args["fail_if_not_promoted"]
    except PipelineError as error:
        parser.error(str(error))


def parse_args(argv: list[str] | None = None) -> tuple[PipelineParameters, bool]:
    """(validated parameters, fail-if-not-promoted); exits with code 2 on bad arguments."""
    parser = build_parser()
    return validated(parser, vars(parser.parse_args(argv)))


def format_summary(summary: dict) -> str:
    low, high = summary["accuracy_interval_95"]
    return "\n".join([
        f"MNIST pipeline finished: model {summary['version']} ({summary['preset']})",
        f"  test accuracy : {summary['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f})",
        f"  promoted      : {'yes' if summary['promoted'] else 'no'}: {summary['reason']}",
        f"  production    : {summary['production'] or 'none'}",
        f"  model files   : {summary['version_dir']}",
        f"  run files     : {summary['run_dir']}",
        f"  decision log  : {summary['decision_log']}",
    ])


def run(flow, params: PipelineParameters, fail_if_not_promoted: bool) -> int:
    """Run the flow; print its summary; 0 promoted, 0/3 rejected, 1 on failure."""
    try:
        summary = flow(**params.model_dump())
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if not summary["promoted"] and fail_if_not_promoted:
        return EXIT_NOT_PROMOTED
    return 0
