"""`mnist-pipeline registry list|show|promote|rollback` on a registry of two real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import promotion
from tasks.register import register_candidate
from tasks.registry import Decision, Registry, RegistryError, version_name
from tasks.report import render_report
from tools.main import EXIT_NOT_PROMOTED, main

THRESHOLD = 0.5


@pytest.fixture(scope="module")
def mlp_run(trained_mlp, mlp_evaluation):
    return trained_mlp, mlp_evaluation


@pytest.fixture(scope="module")
def weak_run(weak_candidate):
    return weak_candidate


@pytest.fixture
def artifacts(tmp_path, mlp_run, weak_run, split_files):
    """An artifacts folder whose registry holds v0001 (the mlp, production) and v0002 (weaker, rejected)."""
    registry = Registry(tmp_path / "registry")
    first = register_candidate(registry, *mlp_run, split_files, THRESHOLD, {"data_source": "bundle"}, "run-1")
    second = register_candidate(registry, *weak_run, split_files, THRESHOLD, {"data_source": "bundle"}, "run-2")
    assert first.promoted and not second.promoted and "worse than production v0001" in second.reason
    return tmp_path


def cli(artifacts: Path, *args: str) -> int:
    return main([*args, "--artifacts-dir", str(artifacts)])


def rows(output: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in output.splitlines()[1:]}


def test_list_shows_each_version_with_accuracy_interval_status_and_production(artifacts, mlp_run, weak_run, capsys):
    assert cli(artifacts, "registry", "list") == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0].split() == ["version", "created", "preset", "accuracy", "95%", "interval",
                                              "status", "production"]
    listed = rows(output)
    for version, (trained, evaluation), status in (("v0001", mlp_run, "promoted"), ("v0002", weak_run, "rejected")):
        low, high = evaluation.interval_95
        created = Registry(artifacts / "registry").read_version(version)["created"]
        assert listed[version][1:6] == [created, trained.config.preset, f"{evaluation.accuracy:.4f}",
                                        f"{low:.4f}-{high:.4f}", status]
    assert listed["v0001"][6:] == ["<-", "production"] and listed["v0002"][6:] == []


def test_show_gives_metrics_parameters_data_hash_files_and_model_card(artifacts, weak_run, split_files, capsys):
    trained, evaluation = weak_run
    assert cli(artifacts, "registry", "show", "2") == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0] == "v0002  (rejected)"
    assert f"test accuracy  : {evaluation.accuracy:.4f}" in output
    assert f"{evaluation.correct}/{evaluation.total}" in output
    assert f"data (split manifest) SHA-256 : {split_files.data_sha256}" in output
    for line in ("training.preset = seed-mlp", "training.epochs = 1", f"training.seed = {trained.config.seed}", "threshold = 0.5",
                 "saved_model/", "model.keras", "# Model card: MNIST digit classifier (seed-mlp)"):
        assert line in output, line
    assert "register v0002: rejected: test accuracy" in output


def test_promote_goes_through_the_gate_and_a_refusal_is_logged(artifacts, capsys):
    registry = Registry(artifacts / "registry")
    assert cli(artifacts, "registry", "promote", "v2", "--reason", "try the small one", "--who", "alice") == EXIT_NOT_PROMOTED
    assert "v0002 not promoted: test accuracy" in capsys.readouterr().out
    assert registry.production() == "v0001"
    logged = registry.decisions()[-1]
    assert logged["action"] == "promote" and logged["candidate"] == "v0002" and logged["verdict"] == "rejected"
    assert logged["who"] == "alice" and logged["why"] == "try the small one"
    assert logged["gate_passed"] is False and logged["forced"] is False and logged["previous"] == "v0001"
    assert "worse than production v0001" in logged["reason"]
    assert registry.statuses()["v0002"] == "rejected"


def test_forced_promotion_then_rollback(artifacts, capsys):
    registry = Registry(artifacts / "registry")
    assert cli(artifacts, "registry", "promote", "0002", "--force", "--reason", "smaller model", "--who", "alice") == 0
    assert "v0002 is now production (was v0001): forced past the gate" in capsys.readouterr().out
    assert registry.production() == "v0002"
    forced = registry.decisions()[-1]
    assert forced["verdict"] == "promoted" and forced["forced"] is True and forced["gate_passed"] is False
    assert cli(artifacts, "registry", "list") == 0
    assert rows(capsys.readouterr().out)["v0002"][5:] == ["promoted", "<-", "production"]

    assert cli(artifacts, "registry", "rollback", "--reason", "regressions", "--who", "bob") == 0
    assert "production rolled back from v0002 to v0001" in capsys.readouterr().out
    assert registry.production() == "v0001"
    rollback = registry.decisions()[-1]
    assert rollback["action"] == "rollback" and rollback["previous"] == "v0002" and rollback["candidate"] == "v0001"
    assert rollback["who"] == "bob" and rollback["why"] == "regressions"
    assert cli(artifacts, "registry", "list") == 0
    listed = rows(capsys.readouterr().out)
    assert listed["v0002"][5:] == ["rolled", "back"] and listed["v0001"][5:] == ["promoted", "<-", "production"]

    lines = len(registry.decisions())
    assert cli(artifacts, "registry", "rollback", "--reason", "again") == 1
    assert "v0001 is the first production model" in capsys.readouterr().err
    assert registry.production() == "v0001" and len(registry.decisions()) == lines


def test_rollback_returns_to_the_version_production_had_before(artifacts, capsys):
    registry = Registry(artifacts / "registry")
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "trial") == 0
    assert cli(artifacts, "registry", "promote", "1", "--reason", "trial over") == 0  # passes the gate
    passed = registry.decisions()[-1]
    assert passed["gate_passed"] is True and passed["forced"] is False and passed["verdict"] == "promoted"
    assert "not worse than production v0002" in passed["reason"]
    assert registry.production_history() == ["v0001", "v0002", "v0001"]
    assert cli(artifacts, "registry", "rollback", "--reason", "back to the trial") == 0
    assert registry.production() == "v0002"


def test_registration_retry_ignores_manual_lines_in_the_decision_log(artifacts, mlp_run, split_files):
    registry = Registry(artifacts / "registry")
    assert main(["registry", "promote", "2", "--force", "--reason", "x", "--artifacts-dir", str(artifacts)]) == 0
    assert main(["registry", "rollback", "--reason", "y", "--artifacts-dir", str(artifacts)]) == 0
    lines = registry.decisions()
    again = register_candidate(registry, *mlp_run, split_files, THRESHOLD, {"data_source": "bundle"}, "run-1")
    assert again.candidate == "v0001" and again.promoted
    assert registry.decisions() == lines and registry.production() == "v0001"


def test_promote_refuses_the_production_model_and_unknown_versions(artifacts, capsys):
    assert cli(artifacts, "registry", "promote", "1", "--reason", "x") == 1
    assert "v0001 is already the production model" in capsys.readouterr().err
    assert cli(artifacts, "registry", "promote", "7", "--reason", "x") == 1
    assert "No version v0007 in the registry" in capsys.readouterr().err
    assert cli(artifacts, "registry", "show", "7") == 1
    assert "No version v0007" in capsys.readouterr().err


def test_a_damaged_model_is_never_made_production(artifacts, capsys):
    registry = Registry(artifacts / "registry")
    model = registry.version_dir("v0002") / "model.keras"
    model.write_bytes(model.read_bytes()[:-10])
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "x") == 1
    assert "is not the one registered as v0002" in capsys.readouterr().err
    assert registry.production() == "v0001"


def test_manual_changes_first_complete_an_interrupted_registration(artifacts):
    registry = Registry(artifacts / "registry")
    lines = registry.decision_log.read_text().splitlines()
    registry.decision_log.write_text(lines[0] + "\n")  # v0002's registration died before logging its decision
    assert cli(artifacts, "registry", "promote", "2", "--force", "--reason", "x") == 0
    assert [(d["action"], d["candidate"]) for d in registry.decisions()] == [
        ("register", "v0001"), ("register", "v0002"), ("promote", "v0002")]


def test_promotion_re_tests_production_when_the_test_splits_differ(artifacts, split_files, session_artifacts):
    registry = Registry(artifacts / "registry")
    production_metrics = registry.version_dir("v0001") / "metrics.json"
    metrics = json.loads(production_metrics.read_text())
    production_metrics.write_text(json.dumps({**metrics, "test_split_sha256": "another split"}))

    with pytest.raises(RegistryError, match="different test splits.*--force"):
        promotion.promote(registry, "v0002", artifacts / "no-splits", None, False, "alice", "x")
    # with the candidate's split at hand, production is re-measured on it: still better, so refused
    refused = promotion.promote(registry, "v0002", session_artifacts.splits, None, False, "alice", "x")
    assert not refused["promoted"] and refused["champion_accuracy"] == metrics["accuracy"]
    forced = promotion.promote(registry, "v0002", artifacts / "no-splits", None, True, "alice", "x")
    assert forced["promoted"] and "the gate could not be applied" in forced["reason"]
    assert registry.production() == "v0002"


@pytest.mark.parametrize("text, name", [("2", "v0002"), ("v2", "v0002"), ("v0002", "v0002"), ("V12", "v0012"),
                                        ("10000", "v10000")])
def test_version_names_users_give(text, name):
    assert version_name(text) == name


@pytest.mark.parametrize("text", ["0", "v0", "../v0001", "v0001/..", "-1", "v1.5", "latest", ""])
def test_bad_version_names_are_refused(text, capsys):
    with pytest.raises(RegistryError, match="is not a version"):
        version_name(text)
    with pytest.raises(SystemExit) as exit_:
        main(["registry", "show", text])
    assert exit_.value.code == 2 and "is not a version" in capsys.readouterr().err


def test_report_links_the_plots_and_the_model_card(artifacts, mlp_run):
    registry = Registry(artifacts / "registry")
    decision = next(d for d in registry.decisions() if d["candidate"] == "v0001")
    report = render_report(Decision(**{k: decision[k] for k in Decision.__dataclass_fields__}),
                           json.loads(Path(mlp_run[1].metrics_path).read_text()), registry.version_dir("v0001"), "mlp")
    for title, name in (("Training curves", "training_curves.png"), ("Confusion matrix", "confusion_matrix.png"),
                        ("Model card", "model_card.md")):
        path = registry.version_dir("v0001") / name
        assert path.is_file()
        assert f"[{title}]({path.resolve().as_uri()})" in report
