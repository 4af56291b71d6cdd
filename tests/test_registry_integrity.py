"""Corrupt or half-finished registry state: found, named, repaired; never served silently."""

from __future__ import annotations

import json

import pytest

from tasks.register import champion_score, register_candidate
from tasks.registry import REPAIR_COMMAND, Registry, RegistryError


@pytest.fixture
def registry(tmp_path, trained_mlp, mlp_evaluation, weak_candidate, split_files):
    """v0001 (the mlp, production) and v0002 (a weaker model, rejected), registered for real."""
    registry = Registry(tmp_path / "registry")
    register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.5, {}, "run-1")
    register_candidate(registry, *weak_candidate, split_files, 0.5, {}, "run-2")
    assert registry.production() == "v0001" and registry.check() == []
    return registry


def test_cut_short_decision_log_is_named_and_repaired(registry):
    text = registry.decision_log.read_text()
    registry.decision_log.write_text(text[:-40])  # the last line loses its end
    with pytest.raises(RegistryError) as error:
        registry.decisions()
    assert "decisions.jsonl line 2" in str(error.value) and REPAIR_COMMAND in str(error.value)
    assert any("line 2" in problem for problem in registry.check())
    done = registry.repair()
    assert any("dropped 1 unreadable line" in action for action in done)
    assert list(registry.root.glob("decisions.jsonl.damaged-*")), "the damaged log is kept"
    assert [d["candidate"] for d in registry.decisions() if d.get("action", "register") == "register"] == ["v0001", "v0002"]
    assert registry.check() == [] and registry.production() == "v0001"


@pytest.mark.parametrize("pointer", ["{\"vers", "{\"version\": \"v0009\"}", "{\"version\": \"../../x\"}"])
def test_broken_production_pointer_is_named_and_rebuilt_from_the_log(registry, pointer):
    registry.production_file.write_text(pointer)
    with pytest.raises(RegistryError) as error:
        registry.production()
    assert str(registry.production_file) in str(error.value) and REPAIR_COMMAND in str(error.value)
    assert registry.repair() == ["production pointer set to v0001, as the decision log says"]
    assert registry.production() == "v0001" and registry.check() == []


def test_pointer_edited_to_a_rejected_version_disagrees_with_the_log(registry):
    registry.production_file.write_text(json.dumps({"version": "v0002"}))
    assert any("decision log says v0001" in problem for problem in registry.check())
    registry.repair()
    assert registry.production() == "v0001"


def test_tampered_model_is_never_served(registry, split_files):
    model = registry.version_dir("v0001") / "model.keras"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(RegistryError, match="will not be served"):
        registry.model_path("v0001")
    assert any("model.keras" in problem for problem in registry.check())
    # re-scoring production for a candidate measured on another test split refuses the damaged file
    with pytest.raises(RegistryError, match="will not be served"):
        champion_score(registry, split_files, "sha256-of-another-test-split")


def test_registration_interrupted_before_logging_is_completed(registry, trained_mlp, mlp_evaluation):
    lines = registry.decision_log.read_text().splitlines()
    registry.decision_log.write_text(lines[0] + "\n")  # as if the process died before logging v0002
    assert any("v0002" in problem and "never applied" in problem for problem in registry.check())
    assert registry.repair() == ["applied the decision on v0002 (rejected)"]
    assert registry.check() == [] and len(registry.decisions()) == 2


def test_check_and_repair_commands(registry):
    import subprocess
    import sys

    def command(*args):
        return subprocess.run([sys.executable, "-m", "tools.main", "registry", *args,
                               "--artifacts-dir", str(registry.root.parent)], capture_output=True, text=True)

    registry.production_file.write_text("{\"vers")
    check = command("check")
    assert check.returncode == 1 and str(registry.production_file) in check.stdout and REPAIR_COMMAND in check.stdout
    repair = command("repair")
    assert repair.returncode == 0 and "production pointer set to v0001" in repair.stdout
    assert command("check").returncode == 0 and registry.production() == "v0001"
