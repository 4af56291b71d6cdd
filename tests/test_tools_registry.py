"""`mnist-pipeline registry list|show|promote|rollback` on a registry of two models: v0001 (strong,
production) and v0002 (weak, rejected as worse than production)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mnist_pipeline.cli.main import EXIT_NOT_PROMOTED, main
from mnist_pipeline.core.registry import RegistryError, open_registry, version_name
from mnist_pipeline.core.registry.report import render_report
from support.training import register


@pytest.fixture
def artifacts(two_versions) -> Path:
    return two_versions


def cli(artifacts: Path, *args: str) -> int:
    return main([*args, "--artifacts-dir", str(artifacts)])


def rows(output: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in output.splitlines()[1:]}


def test_list_shows_each_version_with_accuracy_interval_status_and_production(
    artifacts, tiny_strong, tiny_weak, capsys
):
    assert cli(artifacts, "registry", "list") == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0].split() == [
        "version",
        "created",
        "preset",
        "accuracy",
        "95%",
        "interval",
        "status",
        "production",
    ]
    listed = rows(output)
    assert list(listed) == ["v0001", "v0002"]
    for version, (trained, evaluation), status in (
        ("v0001", tiny_strong, "promoted"),
        ("v0002", tiny_weak, "rejected"),
    ):
        low, high = evaluation.interval_95
        created = open_registry(artifacts / "registry").read_version(version)["created"]
        assert listed[version][1:6] == [
            created,
            trained.config.preset,
            f"{evaluation.accuracy:.4f}",
            f"{low:.4f}-{high:.4f}",
            status,
        ]
    assert listed["v0001"][6:] == ["<-", "production"] and listed["v0002"][6:] == []


def test_show_gives_metrics_parameters_data_hash_files_and_model_card(artifacts, tiny_weak, synthetic_split, capsys):
    trained, evaluation = tiny_weak
    assert cli(artifacts, "registry", "show", "2") == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0] == "v0002  (rejected)"
    assert f"test accuracy  : {evaluation.accuracy:.4f}" in output
    assert f"{evaluation.correct}/{evaluation.total}" in output
    assert f"data (split manifest) SHA-256 : {synthetic_split.data_sha256}" in output
    for line in (
        "training.preset = seed-mlp",
        "training.epochs = 1",
        f"training.seed = {trained.config.seed}",
        "threshold = 0.3",
        "data_source = bundle",
        "saved_model/",
        "model.keras",
        "# Model card: MNIST digit classifier (seed-mlp)",
    ):
        assert line in output, line
    assert "register v0002: rejected: test accuracy" in output


def test_promote_goes_through_the_gate_and_a_refusal_is_logged(artifacts, capsys):
    registry = open_registry(artifacts / "registry")
    assert (
        cli(artifacts, "registry", "promote", "v2", "--reason", "try the small one", "--who", "alice")
        == EXIT_NOT_PROMOTED
    )
    assert "v0002 not promoted: test accuracy" in capsys.readouterr().out
    assert registry.production() == "v0001"
    logged = registry.decisions()[-1]
    assert logged.action == "promote" and logged.candidate == "v0002" and logged.verdict == "rejected"
    assert logged.who == "alice" and logged.why == "try the small one"
    assert logged.promoted is False and logged.forced is False and logged.production_before == "v0001"
    assert logged.threshold == 0.3  # the one v0002 was registered with
    assert "worse than production v0001" in logged.reason
    assert registry.statuses()["v0002"] == "rejected"


def test_forced_promotion_then_rollback(artifacts, capsys):
    registry = open_registry(artifacts / "registry")
    assert cli(artifacts, "registry", "promote", "0002", "--force", "--reason", "smaller model", "--who", "alice") == 0
    assert "v0002 is now production (was v0001): forced past the gate" in capsys.readouterr().out
    assert registry.production() == "v0002"
    forced = registry.decisions()[-1]
    assert forced.verdict == "promoted" and forced.promoted and forced.forced is True  # promoted, the gate refused
    assert forced.production_before == "v0001"
    assert cli(artifacts, "registry", "list") == 0
    assert rows(capsys.readouterr().out)["v0002"][5:] == ["promoted", "<-", "production"]

    assert cli(artifacts, "registry", "rollback", "--reason", "regressions", "--who", "bob") == 0
    assert "production rolled back from v0002 to v0001" in capsys.readouterr().out
    assert registry.production() == "v0001"
    rollback = registry.decisions()[-1]
    assert rollback.action == "rollback" and rollback.production_before == "v0002" and rollback.candidate == "v0001"
    assert rollback.who == "bob" and rollback.why == "regressions" and rollback.verdict == "rolled back"
    assert cli(artifacts, "registry", "list") == 0
    listed = rows(capsys.readouterr().out)
    assert listed["v0002"][5:] == ["rolled", "back"] and listed["v0001"][5:] == ["promoted", "<-", "production"]

    lines = len(registry.decisions())
    assert cli(artifacts, "registry", "rollback", "--reason", "again") == 1
    assert "v0001 is the first production model" in capsys.readouterr().err
    assert registry.production() == "v0001" and len(registry.decisions()) == lines


def test_rollback_returns_to_the_version_production_had_before(artifacts, capsys):
    registry = open_registry(artifacts / "registry")
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "trial") == 0
    assert cli(artifacts, "registry", "promote", "1", "--reason", "trial over") == 0  # passes the gate
    passed = registry.decisions()[-1]
    assert passed.promoted and not passed.forced and passed.verdict == "promoted"
    assert "not worse than production v0002" in passed.reason
    assert registry.production_history() == ["v0001", "v0002", "v0001"]
    assert cli(artifacts, "registry", "rollback", "--reason", "back to the trial") == 0
    assert registry.production() == "v0002"


def test_registration_retry_ignores_manual_lines_in_the_decision_log(artifacts, tiny_strong, synthetic_split):
    registry = open_registry(artifacts / "registry")
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "x") == 0
    assert cli(artifacts, "registry", "rollback", "--reason", "y") == 0
    lines = registry.backend.decision_log.read_text()
    again = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    assert again.candidate == "v0001" and again.promoted and again.action == "register"
    assert registry.backend.decision_log.read_text() == lines and registry.production() == "v0001"


def test_promote_refuses_the_production_model_and_unknown_versions(artifacts, capsys):
    log = (artifacts / "registry" / "decisions.jsonl").read_text()
    assert cli(artifacts, "registry", "promote", "1", "--reason", "x") == 1
    assert "v0001 is already the production model" in capsys.readouterr().err
    assert cli(artifacts, "registry", "promote", "7", "--reason", "x") == 1
    assert "No version v0007 in the registry" in capsys.readouterr().err
    assert cli(artifacts, "registry", "show", "7") == 1
    assert "No version v0007" in capsys.readouterr().err
    assert (artifacts / "registry" / "decisions.jsonl").read_text() == log


def test_a_damaged_model_is_never_made_production(artifacts, capsys):
    registry = open_registry(artifacts / "registry")
    model = registry.version_dir("v0002") / "model.keras"
    model.write_bytes(model.read_bytes()[:-10])
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "x") == 1
    assert "is not the one registered as v0002" in capsys.readouterr().err
    assert registry.production() == "v0001" and len(registry.decisions()) == 2


def test_manual_changes_first_complete_an_interrupted_registration(artifacts):
    registry = open_registry(artifacts / "registry")
    lines = registry.backend.decision_log.read_text().splitlines()
    registry.backend.decision_log.write_text(lines[0] + "\n")  # v0002's registration died before logging its decision
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "x") == 0
    assert [(d.action, d.candidate) for d in registry.decisions()] == [
        ("register", "v0001"),
        ("register", "v0002"),
        ("promote", "v0002"),
    ]


def test_promotion_re_tests_production_when_the_test_splits_differ(artifacts, tiny_strong, capsys):
    production_metrics = artifacts / "registry" / "versions" / "v0001" / "metrics.json"
    metrics = json.loads(production_metrics.read_text())
    # as if measured on another test split, where it got a single image right
    production_metrics.write_text(json.dumps({**metrics, "test_split_sha256": "another split", "correct": 1}))
    without_splits = open_registry(artifacts / "registry", splits_dir=artifacts / "no-splits")

    with pytest.raises(RegistryError, match="different test splits.*--force"):
        without_splits.promote("v0002", "alice", "x")
    # the command finds v0002's split under artifacts/splits and re-measures production on it: still
    # better than v0002, so refused
    assert cli(artifacts, "registry", "promote", "2", "--reason", "x") == EXIT_NOT_PROMOTED
    assert "worse than production v0001" in capsys.readouterr().out
    refused = without_splits.decisions()[-1]
    assert not refused.promoted and refused.champion_accuracy == tiny_strong[1].accuracy
    forced = without_splits.promote("v0002", "alice", "x", force=True)
    assert forced.promoted and forced.forced and "the gate could not be applied" in forced.reason
    assert without_splits.production() == "v0002"


@pytest.mark.parametrize(
    "text, name", [("2", "v0002"), ("v2", "v0002"), ("v0002", "v0002"), ("V12", "v0012"), ("10000", "v10000")]
)
def test_version_names_users_give(text, name):
    assert version_name(text) == name


@pytest.mark.parametrize("text", ["0", "v0", "../v0001", "v0001/..", "-1", "v1.5", "latest", ""])
def test_bad_version_names_are_refused(text, capsys):
    with pytest.raises(RegistryError, match="is not a version"):
        version_name(text)
    with pytest.raises(SystemExit) as exit_:
        main(["registry", "show", text])
    assert exit_.value.code == 2 and "is not a version" in capsys.readouterr().err


def test_report_embeds_the_plots_and_the_model_card(artifacts):
    """The Prefect UI cannot open files on the worker: plots travel inside the report as data URIs."""
    registry = open_registry(artifacts / "registry")
    version_dir = registry.version_dir("v0002")
    decision = next(d for d in registry.decisions() if d.candidate == "v0002")
    report = render_report(decision, registry.read_json("v0002", "metrics.json"), version_dir, "seed-mlp")
    assert "## Gate decision: **REJECTED**" in report
    assert f"| production before | v0001 ({decision.champion_accuracy:.4f}) |" in report
    for name in ("training_curves.png", "confusion_matrix.png"):
        encoded = base64.b64encode((version_dir / name).read_bytes()).decode()
        assert f"](data:image/png;base64,{encoded})" in report
    assert "file://" not in report and "| |" not in report
    card = (version_dir / "model_card.md").read_text()
    assert "## Model card: MNIST digit classifier (seed-mlp)" in report and card.splitlines()[2] in report
    metrics = registry.read_json("v0002", "metrics.json")
    first = metrics["per_class"][0]
    assert "| class | images | correct | accuracy |" in report
    assert f"| 0 | {first['count']} | {first['correct']} | {first['accuracy']:.4f} |" in report
