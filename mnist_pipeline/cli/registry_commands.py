"""`mnist-pipeline registry list|show|promote|rollback`: the registry as text for people.

The state changes themselves are `Registry.promote` and `Registry.rollback` (core/registry/registry.py).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.evaluation.gate import GateSettings
from mnist_pipeline.core.modelling.parameters import PipelineParameters, validate_parameters
from mnist_pipeline.core.registry import Registry

GATE_SETTINGS = tuple(field.name for field in fields(GateSettings))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def _interval(record: dict) -> str:
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
        rows.append([version, record["created"], record["preset"], f"{record['test_accuracy']:.4f}",
                     _interval(record), statuses[version], "<- production" if version == production else ""])
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
        *(f"    {_describe(logged)}" for logged in registry.decisions()
          if logged.candidate == version or (logged.action != "register" and logged.production_before == version)),
        "",
        (folder / "model_card.md").read_text().rstrip(),
    ]
    return "\n".join(lines)


def _flatten(params: dict, prefix: str = "") -> list[tuple[str, object]]:
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
        return (f"{record.time} rollback {record.production_before} -> {record.candidate} "
                f"by {record.who}: {record.why}")
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
        help_text = f"{field.description} (default: the one N was registered with)"
        if field.annotation is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(option, type=_checked(name), metavar=name.upper(), help=help_text)


def _checked(name: str):
    """An argparse type: the text as the pipeline parameter `name`, within its bounds."""
    def value(text: str) -> float:
        try:
            return getattr(validate_parameters({name: text}), name)
        except PipelineError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return value


def promote(registry: Registry, version: str, settings: dict, force: bool, who: str, why: str) -> tuple[str, bool]:
    """(what happened, promoted?). `settings`: the gate settings given (None: the version's own)."""
    record = registry.promote(version, who, why, force=force, **settings)
    if record.promoted:
        text = f"{version} is now production (was {record.production_before or 'none'}): {record.reason}"
    else:
        text = (f"{version} not promoted: {record.reason}. Production stays {record.production_before or 'none'}; "
                "pass --force to promote past the gate.")
    return f"{text}\nlogged in {registry.decision_log}", record.promoted


def rollback(registry: Registry, who: str, why: str) -> str:
    record = registry.rollback(who, why)
    return (f"production rolled back from {record.production_before} to {record.candidate}\n"
            f"logged in {registry.decision_log}")
