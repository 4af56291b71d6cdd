"""Corrupt or half-finished registry state: found, named, repaired; never served silently."""

from __future__ import annotations

import json

import pytest

from support.commands import run_cli
from mnist_pipeline.core.registry.registry import REPAIR_COMMAND, Registry, RegistryError


@pytest.fixture
def registry(two_versions) -> Registry:
    """v0001 (strong, production) and v0002 (weak, rejected), consistent."""
    registry = Registry(two_versions / "registry", splits_dir=two_versions / "splits")
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
    assert [backup.read_text() for backup in registry.root.glob("decisions.jsonl.damaged-*")] == [text[:-40]]
    assert [(d.action, d.candidate) for d in registry.decisions()] == [("register", "v0001"), ("register", "v0002")]
    assert registry.check() == [] and registry.production() == "v0001"


@pytest.mark.parametrize("pointer", ["{\"vers", "{\"version\": \"v0009\"}", "{\"version\": \"../../x\"}"])
def test_broken_production_pointer_is_named_and_rebuilt_from_the_log(registry, pointer):
    registry.production_file.write_text(pointer)
    with pytest.raises(RegistryError) as error:
        registry.production()
    assert str(registry.production_file) in str(error.value) and REPAIR_COMMAND in str(error.value)
    assert registry.repair() == ["production pointer set to v0001, as the decision log says"]
    assert registry.production() == "v0001" and registry.check() == []
    repaired = registry.decisions()[-1]
    assert repaired.action == "repair" and repaired.candidate == "v0001" and not repaired.moves_production


def test_pointer_edited_to_a_rejected_version_disagrees_with_the_log(registry):
    registry.production_file.write_text(json.dumps({"version": "v0002"}))
    assert any("decision log says v0001" in problem for problem in registry.check())
    registry.repair()
    assert registry.production() == "v0001" and registry.check() == []


def test_tampered_model_is_never_served(registry, synthetic_split):
    model = registry.version_dir("v0001") / "model.keras"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(RegistryError, match="will not be served"):
        registry.model_path("v0001")
    assert any("model.keras" in problem and "v0001" in problem for problem in registry.check())
    # re-scoring production for a candidate measured on another test split refuses the damaged file
    with pytest.raises(RegistryError, match="will not be served"):
        registry._champion("sha256-of-another-test-split", lambda: synthetic_split)


def test_a_model_is_served_only_while_it_matches_its_registered_checksum(registry):
    assert registry.model_path("v0001") == registry.version_dir("v0001") / "model.keras"
    record = registry.version_dir("v0001") / "version.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "model_sha256": "0" * 64}))
    with pytest.raises(RegistryError, match="will not be served"):  # the file no longer matches its record
        registry.model_path("v0001")


def test_registration_interrupted_before_logging_is_completed(registry):
    lines = registry.decision_log.read_text().splitlines()
    registry.decision_log.write_text(lines[0] + "\n")  # as if the process died before logging v0002
    assert any("v0002" in problem and "never applied" in problem for problem in registry.check())
    assert registry.repair() == ["applied the decision on v0002 (rejected)"]
    assert registry.check() == [] and registry.decision_log.read_text().splitlines() == lines
    assert registry.production() == "v0001"


def test_interrupted_promoting_registration_moves_production_when_completed(registry):
    lines = registry.decision_log.read_text().splitlines()
    registry.decision_log.unlink()  # the first registration died after adding v0001: nothing moved or logged
    registry.production_file.unlink()
    assert registry.repair() == ["applied the decision on v0001 (promoted)", "applied the decision on v0002 (rejected)"]
    assert registry.decision_log.read_text().splitlines() == lines and registry.production() == "v0001"


def test_leftover_of_an_interrupted_version_folder_is_removed(registry):
    leftover = registry.versions_dir / ".staging-v0003-deadbeef"
    (leftover / "saved_model").mkdir(parents=True)
    assert any(str(leftover) in problem for problem in registry.check())
    assert registry.repair() == [f"removed {leftover}"]
    assert not leftover.exists() and registry.check() == [] and registry.versions() == ["v0001", "v0002"]


def test_check_and_repair_commands(registry):
    artifacts = ["--artifacts-dir", str(registry.root.parent)]
    registry.production_file.write_text("{\"vers")
    check = run_cli("registry", "check", *artifacts)
    assert check.returncode == 1, check.stderr
    assert str(registry.production_file) in check.stdout and REPAIR_COMMAND in check.stdout
    repair = run_cli("registry", "repair", *artifacts)  # exits 0 only if `check` then finds nothing
    assert repair.returncode == 0 and "production pointer set to v0001" in repair.stdout, repair.stderr
    assert registry.production() == "v0001" and registry.check() == []
