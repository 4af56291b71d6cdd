"""`mnist-pipeline registry list|show|promote|rollback|check|repair|convert|sync-mlflow`: the registry as
text for people.

The state changes themselves are `Registry.promote`, `Registry.rollback` and `Registry.repair`
(core/registry/registry.py). `promote` exits 3 when the gate refuses; `check` and `repair` exit 1
while a problem remains. With an MLflow tracking URI (`--mlflow-uri` or `$MLFLOW_TRACKING_URI`), each
change is mirrored to MLflow afterwards (core/tracking/model_sync.py); MLflow failing is a warning, never
a change to the registry. `sync-mlflow` mirrors the whole registry (idempotent).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from mnist_pipeline.cli import options
from mnist_pipeline.core.evaluation.gate import GateSettings
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry import Registry
from mnist_pipeline.core.registry.decisions import DecisionRecord

GATE_SETTINGS = tuple(field.name for field in fields(GateSettings))


ABOUT = """List, inspect, promote or roll back registered models.

The model registry: its versions and which one is production.
"""


def add_parser(subparsers: options.Subparsers) -> None:
    actions = options.actions(subparsers, "registry", ABOUT)
    reading, deciding = (options.artifacts_dir,), (options.decision_options, options.mlflow_options)
    options.command(actions, "list", _list, shared=reading)
    _version_argument(options.command(actions, "show", _show, shared=reading))
    promoting = options.command(actions, "promote", _promote)
    _version_argument(promoting)
    options.switch(promoting, "force", "promote even if the gate refuses (logged as forced)")
    add_gate_options(promoting)
    for add in deciding:
        add(promoting)
    options.command(actions, "rollback", _rollback, shared=deciding)
    options.command(actions, "check", _check, shared=reading)
    options.command(actions, "repair", _repair, shared=(options.artifacts_dir, options.mlflow_options))
    options.command(actions, "convert", _convert, shared=reading).add_argument(
        "versions", nargs="*", type=options.version, metavar="N", help="versions (default: every version)"
    )
    options.command(actions, "sync-mlflow", _sync_mlflow, shared=(options.artifacts_dir, options.mlflow_options))


def _version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", type=options.version, metavar="N", help="version: N, vN or v000N")


def _list(args: argparse.Namespace) -> int:
    """Every registered version: created, accuracy, interval, status, production."""
    print(list_versions(options.registry_at(args.artifacts_dir)))
    return options.EXIT_OK


def _show(args: argparse.Namespace) -> int:
    """One version: metrics, parameters, data hash, files, decisions, model card."""
    print(show_version(options.registry_at(args.artifacts_dir), args.version))
    return options.EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    """Make a version production, through the gate unless --force.

    Version N becomes production if it passes the promotion gate: its test accuracy reaches the
    threshold, every class reaches the per-class floor, and on the same test images no class falls more
    than the per-class margin below production's and it is not worse than production (with
    --require-significant: significantly better, by an exact McNemar test). Each setting defaults to the
    one N was registered with. The decision, either way, goes to the decision log with who and why.
    Exits 3 when the gate refuses.
    """
    settings = {name: getattr(args, name) for name in GATE_SETTINGS}
    registry = options.registry_at(args.artifacts_dir)
    text, promoted = promote(registry, args.version, settings, args.force, args.who, args.reason)
    print(text)
    mirror_to_mlflow(registry, args)
    return options.EXIT_OK if promoted else options.EXIT_NOT_PROMOTED


def _rollback(args: argparse.Namespace) -> int:
    """Move production back to the previously promoted version.

    The version that was production before the current one; logged with who and why.
    """
    registry = options.registry_at(args.artifacts_dir)
    print(rollback(registry, args.who, args.reason))
    mirror_to_mlflow(registry, args)
    return options.EXIT_OK


def _sync_mlflow(args: argparse.Namespace) -> int:
    """Bring MLflow's registered model in step with the registry (versions, tags, production alias).

    Every registered version is mirrored to the MLflow registered model (a Keras model version tagged
    with the project's version, model SHA-256 and decision) and its `production` alias points at
    production. Idempotent: for a server that was down during a run, or added later.
    """
    from mnist_pipeline.core.support.errors import PipelineError
    from mnist_pipeline.core.tracking.model_sync import sync_registry
    from mnist_pipeline.core.tracking.target import resolve_target

    target = resolve_target(args.mlflow_uri, args.mlflow_experiment, args.mlflow_model)
    if target is None:
        raise PipelineError("No MLflow tracking server given: pass --mlflow-uri URI or set MLFLOW_TRACKING_URI.")
    said = sync_registry(options.registry_at(args.artifacts_dir), target, target.check()).lines()
    print("\n".join(said) if said else f"MLflow's {target.model_name} at {target.uri} is in step with the registry")
    return options.EXIT_OK


def mirror_to_mlflow(registry: Registry, args: argparse.Namespace) -> None:
    """After a change to the registry: mirror it to MLflow, if a tracking URI is given. A failure is a
    warning (the registry changed; MLflow did not), with the command that repairs it."""
    from mnist_pipeline.core.tracking.target import first_line, resolve_target

    target = resolve_target(args.mlflow_uri, args.mlflow_experiment, args.mlflow_model)
    if target is None:
        return
    try:
        from mnist_pipeline.core.tracking.model_sync import sync_registry

        for line in sync_registry(registry, target, target.check()).lines():
            print(f"MLflow: {line}")
    except Exception as error:  # MLflow's, the network's: the registry's change stands
        print(
            f"warning: MLflow at {target.uri} not updated ({first_line(error)}); production is "
            f"{registry.production() or 'none'} in the registry. Run `mnist-pipeline registry sync-mlflow` once "
            "MLflow answers.",
            file=sys.stderr,
        )


def _check(args: argparse.Namespace) -> int:
    """List every inconsistency in the registry (exit 1 if any).

    It checks the versions' model files, the decision log and the production pointer; each problem names
    its file and the way out.
    """
    problems = options.registry_at(args.artifacts_dir).check()
    print("\n".join(f"problem: {problem}" for problem in problems) if problems else "registry is consistent")
    return options.EXIT_FAILED if problems else options.EXIT_OK


def _repair(args: argparse.Namespace) -> int:
    """Make the registry consistent again from its version folders and decision log.

    It removes leftovers of interrupted registrations, drops unreadable decision-log lines (the old log is
    kept beside it), applies decisions that a dying process did not, and rebuilds the production pointer
    from the decision log. Version folders are never changed or deleted. Exits 1 if a problem remains.
    """
    registry = options.registry_at(args.artifacts_dir)
    done = registry.repair()
    print("\n".join(done) if done else "nothing to repair")
    mirror_to_mlflow(registry, args)
    remaining = registry.check()
    for problem in remaining:
        print(f"still a problem: {problem}", file=sys.stderr)
    return options.EXIT_FAILED if remaining else options.EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    """Give versions registered before light models their light model (LiteRT).

    Each is converted and verified on the test split it was tested on (or MNIST's test images when that
    split is gone): the same top class as Keras on every image, probabilities within 1e-5. `predict` and
    `serve` then run them without TensorFlow. A version that fails verification is recorded as such and
    stays served by Keras. The version's own files are not changed. Needs TensorFlow.
    """
    registry = options.registry_at(args.artifacts_dir)
    for version in args.versions or registry.versions():
        had = registry.light_record(version) is not None
        record = registry.convert(version)
        if had:
            state = "had one already" if record.get("file") else f"has none: {record['problem']}"
        elif record.get("file"):
            state = f"converted: {record['file']} (verified on {record['verified_on_images']} test images)"
        else:
            state = f"not converted: {record['problem']}; Keras serves it"
        print(f"{version}  {state}")
    return options.EXIT_OK


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _interval(record: dict[str, Any]) -> str:
    low, high = record["accuracy_interval_95"]
    return f"{low:.4f}-{high:.4f}"


def list_versions(registry: Registry) -> str:
    versions = registry.versions()
    if not versions:
        return f"No versions in {registry.location} yet: train one with `mnist-pipeline run`."
    production, statuses = registry.production(), registry.statuses()
    rows = []
    for version in versions:
        record = registry.read_version(version)
        rows.append(
            [
                version,
                record["created"],
                record["preset"],
                f"{record['test_accuracy']:.4f}",
                _interval(record),
                statuses[version],
                "<- production" if version == production else "",
            ]
        )
    return _table(["version", "created", "preset", "accuracy", "95% interval", "status", "production"], rows)


def show_version(registry: Registry, version: str) -> str:
    """Status, metrics, parameters, data hash, files, the decisions about it, and its model card."""
    registry.require(version)
    folder = registry.version_dir(version)
    record = registry.read_version(version)
    metrics = registry.read_json(version, "metrics.json")
    params = registry.read_json(version, "params.json")
    production = registry.production()
    per_class = "  ".join(f"{row['class']}:{row['accuracy']:.3f}" for row in metrics["per_class"])
    lines = [
        f"{version}  ({registry.statuses()[version]}{', production' if version == production else ''})",
        f"  created        : {record['created']} (flow run {record['flow_run_id']})",
        f"  preset         : {record['preset']}",
        f"  test accuracy  : {metrics['accuracy']:.4f} (95% interval {_interval(metrics)}, "
        f"{metrics['correct']}/{metrics['total']})",
        f"  test loss      : {metrics['loss']:.4f}",
        f"  per class      : {per_class}",
        f"  data (split manifest) SHA-256 : {record['data_sha256']}",
        f"  test split SHA-256            : {record['test_split_sha256']}",
        f"  model SHA-256                 : {record['model_sha256']}",
        f"  frameworks     : TensorFlow {record['versions']['tensorflow']}, Keras {record['versions']['keras']}",
        "  parameters     :",
        *(f"    {name} = {value}" for name, value in _flatten(params)),
        f"  files in {folder}:",
        *(f"    {path.name}{'/' if path.is_dir() else ''}" for path in sorted(folder.iterdir())),
        "  decisions      :",
        *(
            f"    {_describe(logged)}"
            for logged in registry.decisions()
            if logged.candidate == version or (logged.action != "register" and logged.production_before == version)
        ),
        "",
        (folder / "model_card.md").read_text().rstrip(),
    ]
    return "\n".join(lines)


def _flatten(params: dict[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for name, value in sorted(params.items()):
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{name}.")
        else:
            items.append((f"{prefix}{name}", value))
    return items


def _describe(record: DecisionRecord) -> str:
    """One decision-log record in words."""
    if record.action == "rollback":
        return f"{record.time} rollback {record.production_before} -> {record.candidate} by {record.who}: {record.why}"
    text = f"{record.time} {record.action} {record.candidate}: {record.verdict}: {record.reason}"
    if record.action == "promote":
        text += f" (by {record.who}: {record.why})"
    return text


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    """One option per gate setting (--threshold, --per-class-floor, ...), allowing what the run's
    parameter of that name allows; unset, N's own setting applies."""
    for name in GATE_SETTINGS:
        field = PipelineParameters.model_fields[name]
        option = "--" + name.replace("_", "-")
        help_text = f"{field.description} (default: the one N was registered with)".replace("%", "%%")
        if field.annotation is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(option, type=options.parameter_value(name), metavar=name.upper(), help=help_text)


def promote(
    registry: Registry, version: str, settings: dict[str, Any], force: bool, who: str, why: str
) -> tuple[str, bool]:
    """(what happened, promoted?). `settings`: the gate settings given (None: the version's own)."""
    record = registry.promote(version, who, why, force=force, **settings)
    if record.promoted:
        text = f"{version} is now production (was {record.production_before or 'none'}): {record.reason}"
    else:
        text = (
            f"{version} not promoted: {record.reason}. Production stays {record.production_before or 'none'}; "
            "pass --force to promote past the gate."
        )
    return f"{text}\nlogged in {registry.decision_log}", record.promoted


def rollback(registry: Registry, who: str, why: str) -> str:
    record = registry.rollback(who, why)
    return (
        f"production rolled back from {record.production_before} to {record.candidate}\n"
        f"logged in {registry.decision_log}"
    )
