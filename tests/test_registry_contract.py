"""What every registry does, whatever it is stored in: the same tests against a folder and against a
real S3-compatible server (moto's server mode; slow tier), through the `registry_kind` fixture.

Versions, the production pointer and the decision log; the gate at registration and on promotion;
each registration applied exactly once however it is retried, interrupted or raced; corrupt or
half-finished state found, named and repaired, never served silently. What only one backend does
(the lock; compare-and-swap races; the store failing mid-registration) is in test_registry_local.py
and test_registry_store.py.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mnist_pipeline.core.evaluation.gate import GateSettings, Scored, gate
from mnist_pipeline.core.evaluation.scoring import PREDICTIONS, read_predictions
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry import REPAIR_COMMAND, LocalBackend, Registry, RegistryError, open_registry
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.faults import FAIL_ONCE_ENV, InjectedFault
from support.training import BACKENDS, copy_run, register

pytestmark = pytest.mark.parametrize("registry_kind", BACKENDS, indirect=True)


@pytest.fixture
def empty_registry(registry_location) -> Registry:
    return open_registry(registry_location)


def register_lines(registry: Registry) -> list[tuple[str | None, str]]:
    return [(record.candidate, record.verdict) for record in registry.decisions() if record.action == "register"]


def state(registry: Registry) -> tuple:
    return registry.versions(), [record.to_json() for record in registry.decisions()], registry.production()


# Damage as a crash or a hand edit leaves it, in either backend ---------------------------------------


def write_pointer(registry: Registry, text: str) -> None:
    backend = registry.backend
    if isinstance(backend, LocalBackend):
        backend.root.mkdir(parents=True, exist_ok=True)
        backend.production_file.write_text(text)
    else:
        backend.store.write(backend.pointer_location, text.encode())


def remove_pointer(registry: Registry) -> None:
    backend = registry.backend
    if isinstance(backend, LocalBackend):
        backend.production_file.unlink()
    else:
        backend.store.delete(backend.pointer_location)


def keep_decisions(registry: Registry, count: int) -> None:
    """Forget every decision after the first `count`, as if the processes died before logging them."""
    backend = registry.backend
    if isinstance(backend, LocalBackend):
        lines = backend.decision_log.read_text().splitlines()
        backend.decision_log.write_text("".join(line + "\n" for line in lines[:count]))
    else:
        for url in backend._decision_urls()[count:]:
            backend.store.delete(url)
            backend._mirrored(url).unlink(missing_ok=True)


def cut_short_last_decision(registry: Registry) -> str:
    """The last decision loses its end; returns how an error names it."""
    backend = registry.backend
    if isinstance(backend, LocalBackend):
        text = backend.decision_log.read_text()
        backend.decision_log.write_text(text[:-40])
        return f"decisions.jsonl line {len(text.splitlines())}"
    url = backend._decision_urls()[-1]
    backend.store.write(url, backend.store.read(url)[:-40])
    backend._mirrored(url).unlink(missing_ok=True)
    return url


def kept_copies(registry: Registry) -> list[str]:
    """The damaged decisions `repair` set aside, as text."""
    backend = registry.backend
    if isinstance(backend, LocalBackend):
        return [backup.read_text() for backup in backend.root.glob("decisions.jsonl.damaged-*")]
    return [backend.store.read(url).decode() for url in backend.store.find(f"{backend.url}/damaged")]


def make_leftover(registry: Registry) -> str:
    """What a registration that died while publishing v0003 leaves; returns how `check` names it."""
    backend = registry.backend
    if isinstance(backend, LocalBackend):
        leftover = backend.versions_dir / ".staging-v0003-deadbeef"
        (leftover / "saved_model").mkdir(parents=True)
        return str(leftover)
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    backend.store.create(f"{backend.url}/versions/v0003/.claim", json.dumps({"time": an_hour_ago}).encode())
    return f"{backend.url}/versions/v0003"


# Registering ---------------------------------------------------------------------------------------


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
def test_gate(candidate, champion, promoted, reason, registry_kind):
    """The overall rule with the default settings, on models whose errors fall evenly on the classes
    (the gate is the registry's in either backend: run once a backend, it costs nothing)."""

    def scored(version: str, correct: int) -> Scored:
        labels = np.arange(10000) % 10
        predicted = np.where(np.arange(10000) < 10000 - correct, (labels + 1) % 10, labels)
        return Scored(version, labels, predicted)

    champion_score = scored("v0001", champion) if champion is not None else None
    verdict = gate(scored("candidate", candidate), champion_score, GateSettings.of(PipelineParameters().model_dump()))
    assert verdict.promoted is promoted
    assert reason in verdict.reason


def test_first_model_above_threshold_becomes_production(empty_registry, tiny_strong, synthetic_split):
    registry = empty_registry
    decision = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    assert decision.promoted and decision.candidate == "v0001" and decision.production_before is None
    assert "no production model yet" in decision.reason
    assert registry.production() == "v0001"
    version_dir = registry.version_dir("v0001")
    for name in (
        "model.keras",
        "metrics.json",
        "params.json",
        "history.json",
        "model_card.md",
        "version.json",
        "training_curves.png",
        "confusion_matrix.png",
        "saved_model",
    ):
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
    assert "MNIST (the official train/test split)" in (version_dir / "model_card.md").read_text()
    assert registry.check() == []


def test_registering_the_same_model_twice_adds_nothing(registry, tiny_strong, synthetic_split):
    before = state(registry)
    again = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    assert again == registry.decisions()[0] and again.candidate == "v0001" and again.promoted
    assert state(registry) == before


def test_the_same_model_from_another_run_is_unchanged_not_a_new_version(
    registry, tiny_strong, synthetic_split, tmp_path
):
    """Issue 12: a rerun that trains the same weights again (its .keras file's bytes differ) adds no
    version and does not move production; the decision says which version it is."""
    before = registry.decisions()
    rerun = copy_run(tiny_strong, tmp_path / "rerun", same_weights=True)
    decision = register(registry, rerun, synthetic_split, flow_run_id="run-3")
    assert (decision.action, decision.verdict, decision.candidate, decision.promoted) == (
        "unchanged",
        "unchanged",
        "v0001",
        False,
    )
    assert decision.reason.startswith("identical to v0001 (the same weights, trained on the same data)")
    assert registry.versions() == ["v0001", "v0002"] and registry.production() == "v0001"
    assert registry.decisions() == [*before, decision]
    again = register(registry, rerun, synthetic_split, flow_run_id="run-3")
    assert again == decision and len(registry.decisions()) == 3  # a retry of that registration logs nothing more
    assert registry.check() == []


def test_rejected_candidate_is_kept_and_production_stays(empty_registry, tiny_weak, synthetic_split):
    registry = empty_registry
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
    assert registry.statuses() == {"v0001": "promoted", "v0002": "rejected"}


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
    test_split = registry.read_json("v0001", "metrics.json")["test_split_sha256"]
    rescored = registry._champion(test_split, lambda: synthetic_split)
    labels, predicted = read_predictions(tiny_strong[1].predictions_path)
    assert np.array_equal(rescored.labels, labels) and np.array_equal(rescored.predicted, predicted)


def test_unreadable_stored_predictions_are_named(registry, synthetic_split):
    stored = registry.version_dir("v0001") / PREDICTIONS
    stored.write_bytes(stored.read_bytes()[:100])
    test_split = registry.read_json("v0001", "metrics.json")["test_split_sha256"]
    with pytest.raises(RegistryError, match=f"Predictions file {stored} is unreadable.*delete the file"):
        registry._champion(test_split, lambda: synthetic_split)


@pytest.mark.parametrize("name", ["../../etc", "v1", "latest", "v0001/../v0002"])
def test_version_names_cannot_escape_the_registry(empty_registry, name):
    with pytest.raises(RegistryError):
        empty_registry.version_dir(name)
    with pytest.raises(RegistryError):
        empty_registry.read_json(name, "version.json")


# Promoting and rolling back ------------------------------------------------------------------------


def test_promote_and_rollback_move_production_and_are_logged(registry):
    refused = registry.promote("v0002", "ana", "is it better?")
    assert not refused.promoted and "worse than production v0001" in refused.reason
    assert registry.production() == "v0001"
    forced = registry.promote("v0002", "ana", "try it", force=True)
    assert forced.promoted and forced.forced and registry.production() == "v0002"
    back = registry.rollback("ana", "try the old one")
    assert (back.action, back.candidate, back.production_before) == ("rollback", "v0001", "v0002")
    assert registry.production() == "v0001" and registry.production_history() == ["v0001"]
    assert registry.statuses() == {"v0001": "promoted", "v0002": "rolled back"}
    assert [record.action for record in registry.decisions()] == [
        "register",
        "register",
        "promote",
        "promote",
        "rollback",
    ]
    with pytest.raises(RegistryError, match="first production model"):
        registry.rollback("ana", "again")
    with pytest.raises(RegistryError, match="already the production model"):
        registry.promote("v0001", "ana", "x")
    assert registry.check() == []


# Exactly once: retries, interruptions, races -------------------------------------------------------


def test_a_failed_registration_is_completed_exactly_once_by_its_retry(
    registry, tiny_strong, synthetic_split, tmp_path, monkeypatch
):
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


def test_two_registrations_at_once_give_two_versions_and_production_is_the_better(
    registry_location, tiny_strong, tiny_weak, synthetic_split, monkeypatch, tmp_path
):
    start, results, errors = threading.Barrier(2), {}, []
    registries = {}
    for name in ("strong", "weak"):  # each its own lock file handle; in the store, its own mirror ("machine")
        monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / f"machine-{name}"))
        registries[name] = open_registry(registry_location)

    def offer(name, run):
        try:
            start.wait()
            results[name] = register(registries[name], run, synthetic_split, flow_run_id=name)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=offer, args=args) for args in (("strong", tiny_strong), ("weak", tiny_weak))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    registry = open_registry(registry_location)
    assert registry.versions() == ["v0001", "v0002"]
    assert sorted(results[name].candidate for name in results) == ["v0001", "v0002"]
    assert sorted(register_lines(registry)) == sorted((r.candidate, r.verdict) for r in results.values())
    assert len(registry.decisions()) == 2
    assert results["strong"].promoted and registry.production() == results["strong"].candidate
    assert registry.check() == []


# Damaged or half-finished state: found, named, repaired -------------------------------------------


def test_damaged_production_pointer_is_reported(empty_registry):
    registry = empty_registry
    write_pointer(registry, "{trunc")
    with pytest.raises(RegistryError, match="production.json"):
        registry.production()
    write_pointer(registry, json.dumps({"version": "v0042"}))
    with pytest.raises(RegistryError, match="v0042"):
        registry.production()


def test_cut_short_decision_log_is_named_and_repaired(registry):
    before = registry.decisions()
    where = cut_short_last_decision(registry)
    with pytest.raises(RegistryError) as error:
        registry.decisions()
    assert where in str(error.value) and REPAIR_COMMAND in str(error.value)
    assert any(where in problem for problem in registry.check())
    done = registry.repair()
    assert "unreadable" in done[0] and done[1:] == ["applied the decision on v0002 (rejected)"]
    assert len(kept_copies(registry)) == 1
    # the rejected registration's decision, set aside, is applied again from its version.json
    assert registry.decisions() == before[:1] + [registry._stored_decision("v0002")]
    assert registry.check() == [] and registry.production() == "v0001"


@pytest.mark.parametrize("pointer", ['{"vers', '{"version": "v0009"}', '{"version": "../../x"}'])
def test_broken_production_pointer_is_named_and_rebuilt_from_the_log(registry, pointer):
    write_pointer(registry, pointer)
    with pytest.raises(RegistryError) as error:
        registry.production()
    assert registry.backend.pointer_location in str(error.value) and REPAIR_COMMAND in str(error.value)
    assert registry.repair() == ["production pointer set to v0001, as the decision log says"]
    assert registry.production() == "v0001" and registry.check() == []
    repaired = registry.decisions()[-1]
    assert repaired.action == "repair" and repaired.candidate == "v0001" and not repaired.moves_production


def test_pointer_edited_to_a_rejected_version_disagrees_with_the_log(registry):
    write_pointer(registry, json.dumps({"version": "v0002"}))
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
    before = registry.decisions()
    keep_decisions(registry, 1)  # as if the process died before logging v0002
    assert any("v0002" in problem and "never applied" in problem for problem in registry.check())
    assert registry.repair() == ["applied the decision on v0002 (rejected)"]
    assert registry.check() == [] and registry.decisions() == before
    assert registry.production() == "v0001"


def test_interrupted_promoting_registration_moves_production_when_completed(registry):
    before = registry.decisions()
    keep_decisions(registry, 0)  # the first registration died after adding v0001: nothing moved or logged
    remove_pointer(registry)
    assert registry.repair() == ["applied the decision on v0001 (promoted)", "applied the decision on v0002 (rejected)"]
    assert registry.decisions() == before and registry.production() == "v0001"


def test_leftover_of_an_interrupted_registration_is_removed(registry):
    leftover = make_leftover(registry)
    assert any(problem.startswith(f"{leftover}:") for problem in registry.check())
    assert registry.repair() == [f"removed {leftover}"]
    assert registry.check() == [] and registry.versions() == ["v0001", "v0002"]
    assert make_leftover(registry) == leftover  # the number was given back
