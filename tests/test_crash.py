"""A run killed with SIGKILL at any point leaves nothing half-written under a valid name, and the
next run completes normally (and completes an interrupted registration)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from mnist_pipeline.core.data.splits import is_intact
from mnist_pipeline.core.modelling.models import load_model
from mnist_pipeline.core.registry import Registry, open_registry
from support.commands import run_flow_script

pytestmark = pytest.mark.slow

# (crash point, what must be true of the artifacts right after the kill)
CRASHES = [
    ("write:manifest.json", "no split"),  # split files written, manifest not yet renamed
    ("train@epoch1", "split only"),  # after the first epoch's checkpoint
    ("write:model.keras", "split only"),  # model written under a temporary name
    ("register:staged", "split only"),  # version folder complete under a temporary name
    ("register:added", "one pending version"),  # version in place; production and log untouched
]


def run_flow(artifacts: Path, api_url: str, crash_at: str | None = None, *options: str):
    return run_flow_script(
        *["--preset", "mlp", "--epochs", "1", "--threshold", "0.9", "--per-class-floor", "0.8"],
        *("--artifacts-dir", str(artifacts), *options),
        env={"PREFECT_API_URL": api_url, **({"MNIST_TEST_CRASH_AT": crash_at} if crash_at else {})},
        timeout=900,
    )


def visible_splits(artifacts: Path) -> list[Path]:
    root = artifacts / "splits"
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []


def pending_versions(registry: Registry) -> list[str]:
    """Versions whose registration's decision was never applied (a process died in between), as
    `registry check` names them."""
    problems = [problem for problem in registry.check() if "never applied" in problem]
    return [
        version
        for version in registry.versions()
        if any(problem.startswith(f"{registry.version_dir(version)}:") for problem in problems)
    ]


def assert_nothing_half_written(artifacts: Path) -> None:
    for split in visible_splits(artifacts):
        assert is_intact(split), f"{split} is visible but not intact"
    for model in (artifacts / "runs").glob("*/model.keras") if (artifacts / "runs").is_dir() else []:
        load_model(model)  # a model under its final name is whole
    registry = open_registry(artifacts / "registry")
    for version in registry.versions():
        load_model(registry.model_path(version))  # and matches its registered checksum


@pytest.fixture(scope="module")
def crashed_artifacts(tmp_path_factory, prefect_api_url):
    """One artifacts directory that lived through every crash in CRASHES, in order, and what was seen
    after each (read it; `test_next_run...` works on a copy)."""
    artifacts = tmp_path_factory.mktemp("crashes") / "artifacts"
    observations = []
    for crash_at, _ in CRASHES:
        result = run_flow(artifacts, prefect_api_url, crash_at)
        assert result.returncode == -signal.SIGKILL, f"{crash_at}: {result.returncode}\n{result.stderr[-3000:]}"
        registry = open_registry(artifacts / "registry")
        observations.append(
            (
                crash_at,
                bool(visible_splits(artifacts)),
                registry.versions(),
                pending_versions(registry),
                registry.backend.production_file.exists(),
                registry.backend.decision_log.exists(),
            )
        )
        assert_nothing_half_written(artifacts)
    return artifacts, observations


def test_each_crash_leaves_only_whole_files(crashed_artifacts):
    _, observations = crashed_artifacts
    assert observations == [
        ("write:manifest.json", False, [], [], False, False),
        ("train@epoch1", True, [], [], False, False),
        ("write:model.keras", True, [], [], False, False),
        ("register:staged", True, [], [], False, False),
        ("register:added", True, ["v0001"], ["v0001"], False, False),
    ]


def test_next_run_completes_and_finishes_the_interrupted_registration(crashed_artifacts, prefect_api_url, tmp_path):
    artifacts = Path(shutil.copytree(crashed_artifacts[0], tmp_path / "artifacts"))
    # another learning rate: a model of its own (the same inputs would give v0001's model again, unchanged)
    result = run_flow(artifacts, prefect_api_url, None, "--learning-rate", "2e-3")
    assert result.returncode == 0, result.stderr[-3000:]
    registry = open_registry(artifacts / "registry")
    assert registry.versions() == ["v0001", "v0002"]
    assert [(d.action, d.candidate) for d in registry.decisions()] == [("register", "v0001"), ("register", "v0002")]
    assert registry.production() in {"v0001", "v0002"}
    problems = registry.check()  # what is left: the staging folder of the kill before rename
    assert problems and all("left by an interrupted registration" in problem for problem in problems), problems
    registry.repair()
    assert registry.check() == []
    assert_nothing_half_written(artifacts)
    assert len(visible_splits(artifacts)) == 1
