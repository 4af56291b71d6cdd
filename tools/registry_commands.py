"""`mnist-pipeline registry list|show|promote|rollback`: the registry as text for people.

The state changes themselves are `Registry.promote` / `Registry.rollback` (tasks/registry.py), with
the gate of tasks/register.py applied by tasks/promotion.py.
"""

from __future__ import annotations

import json

from tasks.paths import ArtifactPaths
from tasks.registry import Registry, RegistryError, action_of


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
        return f"No versions in {registry.root} yet: train one with `mnist-pipeline run`."
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
    metrics = _read(folder / "metrics.json")
    params = _read(folder / "params.json")
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
        *(f"    {_describe(logged)}" for logged in registry.decisions() if version in (logged["candidate"], logged.get("previous"))),
        "",
        (folder / "model_card.md").read_text().rstrip(),
    ]
    return "\n".join(lines)


def _read(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RegistryError(f"Registry file {path} is unreadable ({error}).") from error


def _flatten(params: dict, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for name, value in sorted(params.items()):
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{name}.")
        else:
            items.append((f"{prefix}{name}", value))
    return items


def _describe(logged: dict) -> str:
    """One decision-log line in words."""
    action, when = action_of(logged), logged["time"]
    if action == "rollback":
        return f"{when} rollback {logged['previous']} -> {logged['candidate']} by {logged['who']}: {logged['why']}"
    text = f"{when} {action} {logged['candidate']}: {logged['verdict']}: {logged['reason']}"
    if action == "promote":
        text += f" (by {logged['who']}: {logged['why']})"
    return text


def promote(paths: ArtifactPaths, version: str, threshold: float | None, force: bool, who: str,
            why: str) -> tuple[str, bool]:
    """(what happened, promoted?)."""
    from tasks import promotion

    registry = Registry(paths.registry)
    entry = promotion.promote(registry, version, paths.splits, threshold, force, who, why)
    if entry["promoted"]:
        before = entry["previous"] or "none"
        text = f"{version} is now production (was {before}): {entry['reason']}"
    else:
        text = (f"{version} not promoted: {entry['reason']}. Production stays {entry['previous'] or 'none'}; "
                "pass --force to promote past the gate.")
    return f"{text}\nlogged in {registry.decision_log}", entry["promoted"]


def rollback(registry: Registry, who: str, why: str) -> str:
    entry = registry.rollback(who, why)
    return (f"production rolled back from {entry['previous']} to {entry['candidate']}\n"
            f"logged in {registry.decision_log}")
