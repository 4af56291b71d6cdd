"""What the commands share: exit codes, number validators, and options declared once.

Every boolean option is a switch, `--x` / `--no-x` (argparse's `BooleanOptionalAction`); every option
has a help text (the CLI reference is generated from `cli.main.build_parser`). Options built from a
parameter model (`run`, `sweep`) take the model's description, default, choices and switches.
Nothing here loads Prefect or TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.registry import Registry, version_name
from mnist_pipeline.core.support.errors import PipelineError

EXIT_OK = 0
EXIT_FAILED = 1  # a PipelineError: `main` prints `error: <what is wrong and what to do>`
EXIT_USAGE = 2  # bad arguments or parameters (argparse's own code); nothing was started
EXIT_NOT_PROMOTED = 3  # see `not_promoted_code`, and `registry promote` refused by the gate


class Subparsers(Protocol):
    """What `ArgumentParser.add_subparsers` returns, as `command`, `actions` and `flow_command` use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


# Number validators (argparse types): the message names the value and what is allowed; argparse adds
# the option's name ("argument --port: 70000 is outside 1-65535").


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (no upper limit if None)."""
    allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {allowed}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not a whole number {allowed}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number from `low` to `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low:g} to {high:g}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is not a number from {low:g} to {high:g}")
        return value

    parse.__name__ = "number"
    return parse


def top_k(text: str) -> int:
    """An argparse type: a number of classes, 1 to 10."""
    return whole_number(1, NUM_CLASSES)(text)


def version(text: str) -> str:
    """An argparse type: a registered version's name from N, vN or v000N."""
    try:
        return version_name(text)
    except PipelineError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parameter_value(name: str) -> Callable[[str], Any]:
    """An argparse type: the text as the pipeline parameter `name`, within its bounds."""
    from mnist_pipeline.core.modelling.parameters import validate_parameters

    def parse(text: str) -> Any:
        try:
            return getattr(validate_parameters({name: text}), name)
        except PipelineError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name
    return parse


# Commands and their actions ---------------------------------------------------------------------------

AddOptions = Callable[[argparse.ArgumentParser], None]


def command(
    subparsers: Subparsers,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str | None = None,
    shared: tuple[AddOptions, ...] = (),
) -> argparse.ArgumentParser:
    """The parser of a command or of one of its actions (`serve`, `registry list`), which runs `func`,
    with the options it shares with other commands (e.g. `artifacts_dir`) added; its own are the
    caller's to add. `func`'s docstring describes it (`described`); `help` replaces its first paragraph
    in the list of commands."""
    summary, description = described(inspect.getdoc(func) or "")
    parser = subparsers.add_parser(name, help=help or summary, description=description)
    for add in shared:
        add(parser)
    parser.set_defaults(func=func)
    return parser


def actions(subparsers: Subparsers, name: str, about: str) -> Subparsers:
    """A command made of actions (`registry`, `team`), described by `about` (`described`): the
    sub-parsers its actions are added to."""
    summary, description = described(about)
    parser = subparsers.add_parser(name, help=summary, description=description)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def described(text: str) -> tuple[str, str]:
    """(help, description) of a command from a docstring-like text: its first paragraph is the help (in
    the list of commands: lower case, no full stop), the whole is the description (in the command's
    --help). So the text a user reads lives with the code it describes."""
    summary = inspect.cleandoc(text).split("\n\n")[0].rstrip(".")
    return " ".join((summary[:1].lower() + summary[1:]).split()), " ".join(text.split())


# Options more than one command has ------------------------------------------------------------------


def switch(
    parser: argparse.ArgumentParser, name: str, help: str, default: bool = False, dest: str | None = None
) -> None:
    """`--name` turns it on, `--no-name` off."""
    parser.add_argument(
        f"--{name}",
        dest=dest,
        default=default,
        action=argparse.BooleanOptionalAction,
        help=f"{help} (default: {'on' if default else 'off'})",
    )


def artifacts_dir(parser: argparse.ArgumentParser, use: str = "whose registry/ is used") -> None:
    """--artifacts-dir, for the commands that read the registry (run and sweep take it from their parameters)."""
    parser.add_argument(
        "--artifacts-dir", help=f"the pipeline's artifacts folder, {use} (default: $MNIST_ARTIFACTS_DIR or artifacts/)"
    )


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container user without a passwd entry)
        return "unknown"


def decision_options(parser: argparse.ArgumentParser) -> None:
    """--reason, --who and --artifacts-dir: what a registry change records in the decision log."""
    parser.add_argument("--reason", required=True, help="why; written to the decision log")
    parser.add_argument("--who", default=user(), help="who decides; written to the decision log (default: %(default)s)")
    artifacts_dir(parser)


def flow_outcome_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--fail-if-not-promoted and --summary-json, of `run` and `sweep` (`what`: "run" or "sweep")."""
    switch(
        parser,
        "fail-if-not-promoted",
        dest="fail_if_not_promoted",
        help=f"exit with code {EXIT_NOT_PROMOTED} unless the {what}'s model is production afterwards: when the "
        "gate rejects it, or when it is identical to a registered version (verdict unchanged) that is not "
        "production; an unchanged model that already is production exits 0",
    )
    parser.add_argument("--summary-json", metavar="FILE", help=f"also write the {what}'s summary as JSON to FILE")


def flow_command(
    subparsers: Subparsers,
    name: str,
    model: type[BaseModel],
    run: Callable[[argparse.ArgumentParser, argparse.Namespace], int],
) -> None:
    """A command that runs a flow (`run`, `sweep`): an option for each of `model`'s parameters and the
    flow's outcome options; `run(parser, args)` runs it, and its docstring describes it (`described`)."""
    summary, description = described(inspect.getdoc(run) or "")
    parser = subparsers.add_parser(name, help=summary, description=description)
    parameter_options(parser, model)
    flow_outcome_options(parser, name)
    parser.set_defaults(func=functools.partial(run, parser))


def not_promoted_code(promoted: bool, verdict: str, version: str, production: str | None) -> int:
    """The exit code of `--fail-if-not-promoted` for a finished run: 0 when its model is production
    (promoted now, or unchanged from the production version), else EXIT_NOT_PROMOTED. For CI: a re-run
    of a commit whose model is already production passes; a model the gate refused fails, however often
    it is retrained."""
    in_production = promoted or (verdict == "unchanged" and version == production)
    return EXIT_OK if in_production else EXIT_NOT_PROMOTED


# Options built from a parameter model (pydantic) ----------------------------------------------------------


def _value_type(annotation: Any) -> Any:
    """The scalar type of `Optional[X]`, `X` or `Literal[...]` (for argparse)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _value_type(args[0])
    return annotation


def parameter_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One option per field of `model`: `--name VALUE`, `--name VALUE [VALUE ...]` for a list field (a
    swept one), `--name/--no-name` for a boolean; with the field's description, default and choices.
    The values are checked against the model by `validated`, after parsing."""
    for name, field in model.model_fields.items():
        option, description = "--" + name.replace("_", "-"), (field.description or name).replace("%", "%%")
        if field.annotation is bool:
            switch(parser, option[2:], description, default=bool(field.default), dest=name)
            continue
        listed = typing.get_origin(field.annotation) is list
        annotation = typing.get_args(field.annotation)[0] if listed else field.annotation
        annotation = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None
        default = "" if field.default in (None, []) else f" (default: {field.default})"
        parser.add_argument(
            option,
            dest=name,
            default=field.default,
            type=_value_type(annotation),
            choices=choices,
            nargs="+" if listed else None,
            help=description + default,
        )


def validated(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    model: type[BaseModel],
    check: Callable[[Any], object] | None = None,
) -> Any:
    """The `model` parameters among `args` (then `check(params)`, if given); a bad one exits with code 2
    through `parser`, naming it and what it allows."""
    from mnist_pipeline.core.modelling.parameters import validate_parameters

    try:
        params = validate_parameters({name: getattr(args, name) for name in model.model_fields}, model)
        if check is not None:
            check(params)
    except PipelineError as error:
        parser.error(str(error))
    return params


def mlflow_options(parser: argparse.ArgumentParser) -> None:
    """--mlflow-uri, --mlflow-experiment and --mlflow-model of the registry's commands, described as the
    flow's parameters of those names (`run` and `sweep` take them from their parameters)."""
    from mnist_pipeline.core.modelling.parameters import PipelineParameters

    for name in ("mlflow_uri", "mlflow_experiment", "mlflow_model"):
        field = PipelineParameters.model_fields[name]
        parser.add_argument(
            "--" + name.replace("_", "-"), default=field.default, help=(field.description or name).replace("%", "%%")
        )


def registry_at(artifacts: str | None) -> Registry:
    """The registry of the artifacts folder `artifacts` (--artifacts-dir; None: $MNIST_ARTIFACTS_DIR or artifacts/)."""
    from mnist_pipeline.core.registry import open_registry
    from mnist_pipeline.core.storage.paths import ArtifactPaths

    paths = ArtifactPaths.resolve(artifacts)
    return open_registry(paths.ref(paths.registry), splits_dir=paths.splits)
