"""The decision record: one typed, versioned line of the registry's decision log, and the lines
the registry wrote before it had a schema number (schema 1) or before it recorded the gate's
criteria (schema 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mnist_pipeline.core.registry import RegistryError, open_registry
from mnist_pipeline.core.registry.decisions import SCHEMA, DecisionRecord
from support.training import register

# What `Registry.decisions` and `repair` catch as "not a decision record".
NOT_A_RECORD = (ValueError, KeyError, TypeError)


def record(**changes) -> DecisionRecord:
    """A manual promotion with every field set."""
    fields = dict(
        action="promote",
        candidate="v0002",
        production_before="v0001",
        promoted=True,
        reason="forced past the gate: worse",
        time="2026-11-29T13:00:00+00:00",
        candidate_accuracy=0.54,
        champion_accuracy=0.99,
        threshold=0.3,
        forced=True,
        flow_run_id="run-2",
        who="alice",
        why="smaller model",
        criteria=[
            {"name": "threshold", "value": 0.54, "limit": 0.3, "passed": True, "text": "reaches"},
            {"name": "not worse than production", "value": 0.54, "limit": 0.99, "passed": False, "text": "worse"},
        ],
        comparison={
            "production": "v0001",
            "total": 100,
            "candidate_correct": 54,
            "production_correct": 99,
            "only_candidate": 0,
            "only_production": 45,
            "p_value": 5.7e-14,
        },
    )
    return DecisionRecord(**{**fields, **changes})


def test_a_record_reads_back_from_its_line_unchanged():
    original = record()
    line = original.to_json()
    assert "\n" not in line
    assert DecisionRecord.from_json(line) == original
    written = json.loads(line)
    assert written["schema"] == SCHEMA == 3 and written["verdict"] == "promoted"
    assert set(written) == {field.name for field in dataclasses.fields(DecisionRecord)} | {"verdict"}


def test_defaults_read_back_too():
    minimal = DecisionRecord(
        action="repair",
        candidate=None,
        production_before="v0003",
        promoted=False,
        reason="production pointer removed",
        time="t",
    )
    assert DecisionRecord.from_json(minimal.to_json()) == minimal
    assert minimal.schema == SCHEMA and minimal.forced is False and minimal.who is None


@pytest.mark.parametrize(
    "action, promoted, verdict, moves_production",
    [
        ("register", True, "promoted", True),
        ("register", False, "rejected", False),
        ("promote", True, "promoted", True),
        ("promote", False, "rejected", False),  # a refused manual promotion
        ("rollback", True, "rolled back", True),
        ("repair", False, "repaired", False),
        ("repair", True, "repaired", False),  # a repair follows the log; it is never a move of its own
    ],
)
def test_verdict_words(action, promoted, verdict, moves_production):
    decided = record(action=action, promoted=promoted)
    assert decided.verdict == verdict and decided.to_dict()["verdict"] == verdict
    assert decided.moves_production is moves_production


# Schema 1: the lines written before the record had a schema number --------------------------------

OLDEST_REGISTER = {  # before manual promotions existed: no "action"
    "candidate": "v0001",
    "candidate_accuracy": 0.98,
    "champion": None,
    "champion_accuracy": None,
    "threshold": 0.97,
    "promoted": True,
    "reason": "no production model yet",
    "time": "t1",
    "flow_run_id": "run-1",
    "verdict": "promoted",
}
OLD_REGISTER = {
    "action": "register",
    "candidate": "v0002",
    "candidate_accuracy": 0.97,
    "champion": "v0001",
    "champion_accuracy": 0.98,
    "threshold": 0.97,
    "promoted": False,
    "reason": "worse than production v0001",
    "time": "t2",
    "flow_run_id": "run-2",
    "verdict": "rejected",
}
OLD_PROMOTE = {
    "action": "promote",
    "candidate": "v0002",
    "previous": "v0001",
    "candidate_accuracy": 0.97,
    "champion_accuracy": 0.98,
    "threshold": 0.97,
    "gate_passed": False,
    "forced": True,
    "promoted": True,
    "reason": "forced past the gate: worse",
    "verdict": "promoted",
    "who": "alice",
    "why": "smaller",
    "time": "t3",
}
OLD_ROLLBACK = {
    "action": "rollback",
    "candidate": "v0001",
    "previous": "v0002",
    "promoted": True,
    "verdict": "rolled back",
    "reason": "production rolled back from v0002 to v0001",
    "who": "bob",
    "why": "regressions",
    "time": "t4",
}


@pytest.mark.parametrize(
    "line, action, candidate, production_before",
    [
        (OLDEST_REGISTER, "register", "v0001", None),
        (OLD_REGISTER, "register", "v0002", "v0001"),  # "champion" is production before
        (OLD_PROMOTE, "promote", "v0002", "v0001"),  # "previous" is production before
        (OLD_ROLLBACK, "rollback", "v0001", "v0002"),
    ],
)
def test_schema_1_lines_are_read(line, action, candidate, production_before):
    read = DecisionRecord.from_json(json.dumps(line))
    assert (read.action, read.candidate, read.production_before) == (action, candidate, production_before)
    assert read.promoted == line["promoted"] and read.reason == line["reason"] and read.time == line["time"]
    assert read.verdict == line["verdict"]
    assert read.who == line.get("who") and read.forced == line.get("forced", False)


def test_schema_2_lines_are_read_without_the_gate_criteria():
    line = {key: value for key, value in record().to_dict().items() if key not in ("criteria", "comparison")}
    read = DecisionRecord.from_json(json.dumps({**line, "schema": 2}))
    assert read == dataclasses.replace(record(), criteria=None, comparison=None)
    assert read.schema == SCHEMA and json.loads(read.to_json())["schema"] == SCHEMA  # written back as schema 3


def test_a_schema_1_record_is_written_back_as_the_current_schema():
    read = DecisionRecord.from_json(json.dumps(OLD_REGISTER))
    assert read.schema == SCHEMA
    assert DecisionRecord.from_json(read.to_json()) == read


@pytest.mark.parametrize(
    "line",
    [
        json.dumps(OLD_REGISTER)[:-30],  # cut short
        "",
        "[1, 2]",
        "3",
        "null",
        '"register"',
        json.dumps({key: value for key, value in record().to_dict().items() if key != "reason"}),  # a field missing
        json.dumps({"schema": 2}),
    ],
)
def test_a_bad_line_is_not_a_record(line):
    with pytest.raises(NOT_A_RECORD):
        DecisionRecord.from_json(line)


def test_a_bad_line_in_the_log_is_named_by_its_number(two_versions):
    registry = open_registry(two_versions / "registry")
    with registry.backend.decision_log.open("a") as log:
        log.write('{"schema": 2, "action": "promote"}\n')
    with pytest.raises(RegistryError, match="decisions.jsonl line 3 is not a decision record"):
        registry.decisions()


def as_schema_1(line: dict) -> dict:
    """A register line as the registry wrote it before decision records had a schema."""
    old = {
        key: value for key, value in line.items() if key not in ("schema", "production_before", "forced", "who", "why")
    }
    return {**old, "champion": line["production_before"]}


def test_a_registry_with_a_schema_1_log_keeps_working(two_versions, tiny_strong, synthetic_split):
    registry = open_registry(two_versions / "registry")
    first, second = (json.loads(line) for line in registry.backend.decision_log.read_text().splitlines())
    oldest = {key: value for key, value in as_schema_1(first).items() if key != "action"}
    promote = {**OLD_PROMOTE, "time": second["time"]}
    rollback = {**OLD_ROLLBACK, "time": second["time"]}
    registry.backend.decision_log.write_text(
        "".join(json.dumps(line) + "\n" for line in (oldest, as_schema_1(second), promote, rollback))
    )
    assert registry.check() == []
    assert registry.production_history() == ["v0001"]
    assert registry.statuses() == {"v0001": "promoted", "v0002": "rolled back"}
    assert register(registry, tiny_strong, synthetic_split, flow_run_id="run-1").candidate == "v0001"
    assert len(registry.decisions()) == 4  # its old register line counts as logged

    registry.promote("v0002", "carol", "again", force=True)
    assert registry.production_history() == ["v0001", "v0002"]
    assert json.loads(registry.backend.decision_log.read_text().splitlines()[-1])["schema"] == SCHEMA


def test_a_registration_interrupted_under_schema_1_is_completed(two_versions):
    registry = open_registry(two_versions / "registry")
    lines = registry.backend.decision_log.read_text().splitlines()
    registry.backend.decision_log.write_text(lines[0] + "\n")  # v0002's registration died before logging its decision
    version_file = registry.version_dir("v0002") / "version.json"
    version = json.loads(version_file.read_text())
    stored = {
        key: value
        for key, value in as_schema_1(version["decision"]).items()  # stored without its version
        if key not in ("action", "candidate", "verdict")
    }
    version_file.write_text(json.dumps({**version, "decision": stored}))

    assert any("v0002" in problem and "never applied" in problem for problem in registry.check())
    assert registry.repair() == ["applied the decision on v0002 (rejected)"]
    completed = registry.decisions()[-1]
    assert (completed.action, completed.candidate, completed.production_before) == ("register", "v0002", "v0001")
    assert completed.verdict == "rejected" and completed.schema == SCHEMA
    assert registry.check() == [] and registry.production() == "v0001"
