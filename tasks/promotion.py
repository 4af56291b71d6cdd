"""Manual promotion: a registered version goes through the gate it met at registration
(`tasks.register.gate`: the threshold, and not worse than production on the same test split), or past
it with `force`. `Registry.promote` moves production under the registry's lock and logs who and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from tasks.files import sha256_file
from tasks.preprocess import SplitFiles
from tasks.register import Scored, champion_score, gate
from tasks.registry import Registry, RegistryError


def promote(registry: Registry, version: str, splits_dir: Path, threshold: float | None, force: bool,
            who: str, why: str) -> dict:
    """Promote `version` through the gate (past it if `force`); returns the decision-log line.

    `threshold` defaults to the one the version was registered with.
    """
    return registry.promote(version, who, why, gate_decider(registry, splits_dir, threshold, force))


def gate_decider(registry: Registry, splits_dir: Path, threshold: float | None,
                 force: bool) -> Callable[[str, str | None], dict]:
    """The decision `Registry.promote` applies (under its lock) to the version and current production."""

    def decide(version: str, production: str | None) -> dict:
        metrics = _read_json(registry.version_dir(version) / "metrics.json")
        limit = threshold if threshold is not None else _read_json(registry.version_dir(version) / "params.json")["threshold"]
        candidate = Scored(version, metrics["correct"], metrics["total"])
        try:
            champion = champion_score(registry, _split_if_needed(registry, splits_dir, version, production),
                                      metrics["test_split_sha256"])
            passed, reason = gate(candidate, champion, limit)
        except RegistryError as error:
            if not force:
                raise
            champion, passed, reason = None, False, f"the gate could not be applied: {error}"
        return {
            "candidate_accuracy": candidate.accuracy,
            "champion_accuracy": champion.accuracy if champion else None,
            "threshold": limit,
            "gate_passed": passed,
            "forced": force and not passed,
            "promoted": passed or force,
            "reason": reason if passed or not force else f"forced past the gate: {reason}",
        }

    return decide


def _split_if_needed(registry: Registry, splits_dir: Path, version: str, production: str | None) -> SplitFiles | None:
    """The version's data split when production was tested on another test split (to re-test
    production on this one); None when the recorded scores compare directly (champion_score then
    reads no split)."""
    if production is None:
        return None
    ours = _read_json(registry.version_dir(version) / "metrics.json")["test_split_sha256"]
    theirs = _read_json(registry.version_dir(production) / "metrics.json").get("test_split_sha256")
    if ours == theirs:
        return None
    data_sha256 = registry.read_version(version)["data_sha256"]
    for manifest in sorted(Path(splits_dir).glob("*/manifest.json")):
        if sha256_file(manifest) == data_sha256:
            return SplitFiles(str(manifest), data_sha256)
    raise RegistryError(
        f"{version} and production {production} were tested on different test splits, and {version}'s "
        f"split (manifest SHA-256 {data_sha256[:12]}...) is not under {splits_dir} to re-test {production} "
        "on it. Rebuild it by running the pipeline with the seed and validation fraction in "
        f"`mnist-pipeline registry show {version}`, or pass --force to promote without the gate."
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RegistryError(f"Registry file {path} is unreadable ({error}).") from error
