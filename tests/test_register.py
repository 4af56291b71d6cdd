"""Stage 5: the gate, and the registry's versions, production pointer and decision log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.register import Scored, champion_score, gate, register_candidate
from tasks.registry import Registry, RegistryError


@pytest.mark.parametrize(
    "candidate, champion, promoted, reason",
    [
        (9600, None, False, "below the threshold"),
        (9700, None, True, "no production model yet"),
        (9750, 9800, False, "worse than production v0001"),
        (9800, 9800, True, "not worse"),  # ties promote
        (9850, 9800, True, "not worse"),
        (9600, 9500, False, "below the threshold"),  # better than a weak champion is not enough
    ],
)
def test_gate(candidate, champion, promoted, reason):
    champion_score_ = Scored("v0001", champion, 10000) if champion is not None else None
    verdict, why = gate(Scored("candidate", candidate, 10000), champion_score_, threshold=0.97)
    assert verdict is promoted
    assert reason in why


def test_first_model_above_threshold_becomes_production(tmp_path, trained_mlp, mlp_evaluation, split_files):
    registry = Registry(tmp_path / "registry")
    decision = register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.9, {}, "run-1")
    assert decision.promoted and decision.candidate == "v0001" and decision.champion is None
    assert registry.production() == "v0001"
    version_dir = registry.version_dir("v0001")
    for name in ("model.keras", "metrics.json", "params.json", "history.json", "model_card.md",
                 "version.json", "training_curves.png", "confusion_matrix.png"):
        assert (version_dir / name).is_file(), name
    record = registry.read_version("v0001")
    assert record["status"] == "promoted" and record["versions"]["tensorflow"].startswith("2.21")
    [logged] = registry.decisions()
    assert logged["verdict"] == "promoted" and logged["flow_run_id"] == "run-1"
    assert logged["candidate_accuracy"] == mlp_evaluation.accuracy and logged["threshold"] == 0.9


def test_registering_the_same_model_twice_adds_nothing(tmp_path, trained_mlp, mlp_evaluation, split_files):
    registry = Registry(tmp_path / "registry")
    first = register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.9, {}, "run-1")
    again = register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.9, {}, "run-1")
    assert again == first
    assert registry.versions() == ["v0001"] and len(registry.decisions()) == 1


def test_rejected_candidate_is_kept_and_production_stays(tmp_path, trained_mlp, mlp_evaluation, split_files):
    registry = Registry(tmp_path / "registry")
    decision = register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.999, {}, None)
    assert not decision.promoted and "below the threshold" in decision.reason
    assert registry.production() is None
    assert registry.read_version("v0001")["status"] == "rejected"
    assert registry.decisions()[0]["verdict"] == "rejected"


def test_weaker_challenger_above_threshold_is_rejected(tmp_path, trained_mlp, mlp_evaluation, split_files,
                                                       weak_candidate):
    registry = Registry(tmp_path / "registry")
    register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.5, {}, None)
    weak_trained, weak_evaluation = weak_candidate
    assert 0.5 < weak_evaluation.accuracy < mlp_evaluation.accuracy
    decision = register_candidate(registry, weak_trained, weak_evaluation, split_files, 0.5, {}, None)
    assert not decision.promoted and "worse than production v0001" in decision.reason
    assert decision.champion == "v0001" and decision.champion_accuracy == mlp_evaluation.accuracy
    assert registry.production() == "v0001"
    assert [d["verdict"] for d in registry.decisions()] == ["promoted", "rejected"]


def test_champion_is_rescored_when_its_test_split_differs(tmp_path, trained_mlp, mlp_evaluation, split_files):
    registry = Registry(tmp_path / "registry")
    register_candidate(registry, trained_mlp, mlp_evaluation, split_files, 0.5, {}, None)
    metrics_file = registry.version_dir("v0001") / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics.update(test_split_sha256="from-another-split", correct=1, total=10000)
    metrics_file.write_text(json.dumps(metrics))
    test_split_sha256 = json.loads(Path(mlp_evaluation.metrics_path).read_text())["test_split_sha256"]
    rescored = champion_score(registry, split_files, test_split_sha256)
    assert rescored.correct == mlp_evaluation.correct  # measured again, not the recorded 1


def test_damaged_production_pointer_is_reported(tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.root.mkdir()
    registry.production_file.write_text("{trunc")
    with pytest.raises(RegistryError, match="production.json"):
        registry.production()
    registry.production_file.write_text(json.dumps({"version": "v0042"}))
    with pytest.raises(RegistryError, match="v0042"):
        registry.production()


@pytest.mark.parametrize("name", ["../../etc", "v1", "latest", "v0001/../v0002"])
def test_version_names_cannot_escape_the_registry(tmp_path, name):
    with pytest.raises(RegistryError):
        Registry(tmp_path).version_dir(name)
