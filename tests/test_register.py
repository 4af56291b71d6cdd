"""The gate, and `Registry.register`: versions, the production pointer and the decision log, each
registration applied exactly once however it is retried, interrupted or raced."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from filelock import FileLock, Timeout

from support.training import copy_run, register
from mnist_pipeline.core.support.faults import FAIL_ONCE_ENV, InjectedFault
from mnist_pipeline.core.evaluation.gate import GateSettings, Scored, gate
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry.registry import Registry, RegistryError
from mnist_pipeline.core.evaluation.scoring import PREDICTIONS, read_predictions


@pytest.fixture
def registry(two_versions) -> Registry:
    """v0001 (strong, production) and v0002 (weak, rejected as worse than production)."""
    return Registry(two_versions / "registry", splits_dir=two_versions / "splits")


def register_lines(registry: Registry) -> list[tuple[str, str]]:
    return [(record.candidate, record.verdict) for record in registry.decisions() if record.action == "register"]


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
    """The overall rule with the default settings, on models whose errors fall evenly on the classes."""
    def scored(version: str, correct: int) -> Scored:
        labels = np.arange(10000) % 10
        predicted = np.where(np.arange(10000) < 10000 - correct, (labels + 1) % 10, labels)
        return Scored(version, labels, predicted)

    champion_score = scored("v0001", champion) if champion is not None else None
    verdict = gate(scored("candidate", candidate), champion_score, GateSettings.of(PipelineParameters().model_dump()))
    assert verdict.promoted is promoted
    assert reason in verdict.reason


def test_first_model_above_threshold_becomes_production(tmp_path, tiny_strong, synthetic_split):
    registry = Registry(tmp_path / "registry")
    decision = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    assert decision.promoted and decision.candidate == "v0001" and decision.production_before is None
    assert "no production model yet" in decision.reason
    assert registry.production() == "v0001"
    version_dir = registry.version_dir("v0001")
    for name in ("model.keras", "metrics.json", "params.json", "history.json", "model_card.md",
                 "version.json", "training_curves.png", "confusion_matrix.png", "saved_model"):
        assert (version_dir / name).exists(), name
    record = registry.read_version("v0001")
    assert record["status"] == "promoted" and record["versions"]["tensorflow"].startswith("2.21")
    assert registry.decisions() == [decision]
    assert decision.verdict == "promoted" and decision.flow_run_id == "run-1" and decision.action == "register"
    assert decision.candidate_accuracy == tiny_strong[1].accuracy and decision.threshold == 0.3
    labels, predicted = read_predictions(version_dir / PREDICTIONS)  # kept for the gate's later comparisons
    assert int((labels == predicted).sum()) == tiny_strong[1].correct and len(labels) == tiny_strong[1].total
    assert [criterion["name"] for criterion in decision.criteria] == ["threshold", "per-class floor"]
    assert decision.comparison is None


def test_registering_the_same_model_twice_adds_nothing(registry, tiny_strong, synthetic_split):
    log = registry.decision_log.read_text()
    again = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    assert again == registry.decisions()[0] and again.candidate == "v0001" and again.promoted
    assert registry.versions() == ["v0001", "v0002"] and registry.decision_log.read_text() == log
    assert registry.production() == "v0001"


def test_the_same_model_from_another_run_is_unchanged_not_a_new_version(registry, tiny_strong, synthetic_split,
                                                                       tmp_path):
    """Issue 12: a rerun that trains the same weights again (its .keras file's bytes differ) adds no
    version and does not move production; the decision says which version it is."""
    before = registry.decision_log.read_text()
    rerun = copy_run(tiny_strong, tmp_path / "rerun", same_weights=True)
    decision = register(registry, rerun, synthetic_split, flow_run_id="run-3")
    assert (decision.action, decision.verdict, decision.candidate, decision.promoted) == (
        "unchanged", "unchanged", "v0001", False)
    assert decision.reason.startswith("identical to v0001 (the same weights, trained on the same data)")
    assert registry.versions() == ["v0001", "v0002"] and registry.production() == "v0001"
    assert registry.decision_log.read_text().startswith(before)
    again = register(registry, rerun, synthetic_split, flow_run_id="run-3")
    assert again == decision and len(registry.decisions()) == 3  # a retry of that registration logs nothing more
    assert registry.check() == []


def test_rejected_candidate_is_kept_and_production_stays(tmp_path, tiny_weak, synthetic_split):
    registry = Registry(tmp_path / "registry")
    decision = register(registry, tiny_weak, synthetic_split, threshold=0.9)
    assert not decision.promoted and "below the threshold" in decision.reason
    assert registry.production() is None and registry.versions() == ["v0001"]
    assert registry.read_version("v0001")["status"] == "rejected"
    assert registry.model_path("v0001").is_file()
    assert [logged.verdict for logged in registry.decisions()] == ["rejected"]


def test_weaker_challenger_above_threshold_is_rejected(registry, tiny_strong, tiny_weak):
    strong, weak = tiny_strong[1], tiny_weak[1]
    assert 0.3 < weak.accuracy < strong.accuracy
    first, second = registry.decisions()
    assert second.candidate == "v0002" and not second.promoted and "worse than production v0001" in second.reason
    assert second.production_before == "v0001" and second.champion_accuracy == strong.accuracy
    assert second.candidate_accuracy == weak.accuracy
    assert registry.production() == "v0001" and registry.read_version("v0002")["status"] == "rejected"
    assert [first.verdict, second.verdict] == ["promoted", "rejected"]


def test_champion_is_rescored_when_its_test_split_differs(registry, tiny_strong, synthetic_split):
    metrics_file = registry.version_dir("v0001") / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**metrics, "test_split_sha256": "from-another-split"}))
    labels, _ = read_predictions(registry.version_dir("v0001") / PREDICTIONS)
    np.savez(registry.version_dir("v0001") / PREDICTIONS, label=labels, predicted=(labels + 1) % 10)  # all wrong
    rescored = registry._champion(metrics["test_split_sha256"], lambda: synthetic_split)
    assert rescored.version == "v0001"
    assert rescored.correct == tiny_strong[1].correct  # measured again, not the stored predictions
    recorded = registry._champion("from-another-split", lambda: pytest.fail("production was re-measured"))
    assert recorded.correct == 0  # on the split it was measured on, the stored predictions are used


def test_a_production_version_without_stored_predictions_is_rescored(registry, tiny_strong, synthetic_split):
    """Versions registered before predictions were kept have none: production is re-tested."""
    (registry.version_dir("v0001") / PREDICTIONS).unlink()
    test_split = json.loads((registry.version_dir("v0001") / "metrics.json").read_text())["test_split_sha256"]
    rescored = registry._champion(test_split, lambda: synthetic_split)
    labels, predicted = read_predictions(tiny_strong[1].predictions_path)
    assert np.array_equal(rescored.labels, labels) and np.array_equal(rescored.predicted, predicted)


def test_unreadable_stored_predictions_are_named(registry, synthetic_split):
    stored = registry.version_dir("v0001") / PREDICTIONS
    stored.write_bytes(stored.read_bytes()[:100])
    test_split = json.loads((registry.version_dir("v0001") / "metrics.json").read_text())["test_split_sha256"]
    with pytest.raises(RegistryError, match=f"Predictions file {stored} is unreadable.*delete the file"):
        registry._champion(test_split, lambda: synthetic_split)


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


# Exactly once: the lock, retries, interruptions, races ---------------------------------------------

def state(registry: Registry) -> tuple:
    return (registry.versions(), registry.decision_log.read_text(), registry.production_file.read_text())


@pytest.mark.parametrize("operation", ["register", "promote", "rollback", "repair"])
def test_every_change_waits_for_the_registry_lock(registry, tiny_weak, synthetic_split, tmp_path, operation):
    changes = {
        "register": lambda: register(registry, copy_run(tiny_weak, tmp_path / "rerun"), synthetic_split),
        "promote": lambda: registry.promote("v0001", "alice", "x"),
        "rollback": lambda: registry.rollback("alice", "x"),
        "repair": registry.repair,
    }
    registry.promote("v0002", "alice", "so that a rollback has somewhere to go", force=True)
    registry.lock = FileLock(registry.lock.lock_file, timeout=0.2)
    before = state(registry)
    with FileLock(registry.root / ".lock"):  # held by another registry user (another fd, as another process)
        with pytest.raises(Timeout):
            changes[operation]()
    assert state(registry) == before


def test_a_failed_registration_is_completed_exactly_once_by_its_retry(registry, tiny_strong, synthetic_split,
                                                                    tmp_path, monkeypatch):
    rerun = copy_run(tiny_strong, tmp_path / "rerun")
    monkeypatch.setenv(FAIL_ONCE_ENV, "register")
    with pytest.raises(InjectedFault):
        register(registry, rerun, synthetic_split, attempt=1)
    assert registry.versions() == ["v0001", "v0002", "v0003"]  # added, but its decision neither applied nor logged
    assert registry.production() == "v0001" and len(registry.decisions()) == 2
    assert any("v0003" in problem and "never applied" in problem for problem in registry.check())

    retried = register(registry, rerun, synthetic_split, attempt=2)
    assert retried.candidate == "v0003" and retried.promoted and registry.production() == "v0003"
    assert register(registry, rerun, synthetic_split, attempt=3) == retried
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    assert register_lines(registry) == [("v0001", "promoted"), ("v0002", "rejected"), ("v0003", "promoted")]
    assert registry.check() == []


def test_an_interrupted_registration_is_completed_before_the_next_is_added(registry, tiny_weak, synthetic_split,
                                                                         tmp_path):
    first_line = registry.decision_log.read_text().splitlines()[0]
    registry.decision_log.write_text(first_line + "\n")  # the process registering v0002 died before logging
    decision = register(registry, copy_run(tiny_weak, tmp_path / "rerun"), synthetic_split)
    assert decision.candidate == "v0003" and not decision.promoted
    assert register_lines(registry) == [("v0001", "promoted"), ("v0002", "rejected"), ("v0003", "rejected")]
    assert registry.check() == [] and registry.production() == "v0001"


def test_two_registrations_at_once_give_two_versions_and_production_is_the_better(tmp_path, tiny_strong, tiny_weak,
                                                                                 synthetic_split):
    root = tmp_path / "registry"
    start, results, errors = threading.Barrier(2), {}, []

    def offer(name, run):
        try:
            start.wait()
            results[name] = register(Registry(root), run, synthetic_split)  # each its own lock file handle
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=offer, args=args) for args in (("strong", tiny_strong), ("weak", tiny_weak))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    registry = Registry(root)
    assert registry.versions() == ["v0001", "v0002"]
    assert sorted(results[name].candidate for name in results) == ["v0001", "v0002"]
    assert sorted(register_lines(registry)) == sorted((r.candidate, r.verdict) for r in results.values())
    assert len(registry.decisions()) == 2
    assert results["strong"].promoted and registry.production() == results["strong"].candidate
    assert registry.check() == []
