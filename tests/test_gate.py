"""The stricter gate: per-class floor and margin, the exact McNemar comparison with production, each
criterion's value and verdict in the decision record and the report; on constructed predictions, on
the registry, and end to end with a model whose training labels of one class were shuffled."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mnist_pipeline.cli.main import EXIT_NOT_PROMOTED, main
from mnist_pipeline.core.evaluation.gate import GateSettings, Scored, compare, gate
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.registry.report import render_report
from mnist_pipeline.core.support.stats import mcnemar_exact
from support.data import split_with_shuffled_labels
from support.training import copy_run, register, train_and_evaluate

DEFAULTS = GateSettings.of(PipelineParameters().model_dump())
LABELS = np.arange(10_000) % 10  # 1,000 test images of each class


def scored(version: str, wrong) -> Scored:
    """A model that gets the images of indices `wrong` wrong (predicting the next class) and the
    others right."""
    predicted = LABELS.copy()
    predicted[list(wrong)] = (LABELS[list(wrong)] + 1) % 10
    return Scored(version, LABELS, predicted)


def of_class(digit: int, count: int) -> list[int]:
    """The first `count` test images of class `digit`."""
    return list(range(digit, 10 * count, 10))


PRODUCTION = scored("v0001", range(100))  # 0.99, 10 errors in every class


def criterion(verdict, name: str):
    [found] = [c for c in verdict.criteria if c.name == name]
    return found


def spread(count_per_class: int) -> list[int]:
    """`count_per_class` wrong images in every class."""
    return [index for digit in range(10) for index in of_class(digit, count_per_class)]


@pytest.mark.parametrize(
    "wrong, production, promoted, failed",
    [
        (spread(30), None, True, None),  # 0.970 overall and in every class
        (spread(31), None, False, "threshold"),  # 0.969
        (of_class(3, 50), None, True, None),  # class 3 at 0.950
        (of_class(3, 51), None, False, "per-class floor"),  # class 3 at 0.949, 0.995 overall
        (of_class(3, 19), PRODUCTION, True, None),  # class 3 0.9 points below production's
        (of_class(3, 21), PRODUCTION, False, "per-class margin"),  # 1.1 points below
        (spread(9), PRODUCTION, True, None),  # better than production, far from significantly
    ],
    ids=[
        "97% everywhere",
        "96.9%",
        "a class at 95%",
        "a class at 94.9%",
        "a class 0.9 points down",
        "a class 1.1 points down",
        "not significantly better",
    ],
)
def test_the_default_gate_wants_97_percent_95_in_each_class_and_no_class_a_point_down(
    wrong, production, promoted, failed
):
    """The gate of a run given no gate settings (the flow's defaults): the issue's 97% overall, 95% in
    every class, no class more than one point below production's, significance not required."""
    verdict = gate(scored("candidate", wrong), production, DEFAULTS)
    assert verdict.promoted == promoted, verdict.reason
    assert [c.name for c in verdict.criteria if not c.passed] == ([failed] if failed else [])


# Per-class floor and margin -----------------------------------------------------------------------


def test_a_class_below_the_floor_rejects_a_model_above_the_threshold():
    candidate = scored("candidate", of_class(3, 60))  # 0.994 overall, class 3 at 0.94
    verdict = gate(candidate, None, DEFAULTS)
    assert candidate.accuracy == 0.994 and not verdict.promoted
    assert verdict.reason == "test accuracy of class 3 (0.9400) is below the per-class floor 0.9500"
    floor = criterion(verdict, "per-class floor")
    assert (floor.value, floor.limit, floor.passed) == (0.94, 0.95, False)
    assert criterion(verdict, "threshold").passed


def test_every_class_below_the_floor_is_named_and_the_floor_itself_passes():
    verdict = gate(scored("candidate", of_class(3, 60) + of_class(8, 70)), None, DEFAULTS)
    assert "classes 3 (0.9400), 8 (0.9300) is below the per-class floor 0.9500" in verdict.reason
    at_floor = gate(scored("candidate", of_class(3, 50)), None, DEFAULTS)  # exactly 0.95
    assert at_floor.promoted, at_floor.reason
    assert "every class reaches the per-class floor 0.9500 (lowest: class 3, 0.9500)" in at_floor.reason
    assert "no production model yet" in at_floor.reason


def test_a_class_that_falls_more_than_the_margin_below_production_rejects_a_better_model():
    # production gets 10 of each class wrong; the candidate fixes all but class 5, where it gets 30 wrong
    candidate = scored("candidate", of_class(5, 30))
    verdict = gate(candidate, PRODUCTION, DEFAULTS)
    assert candidate.correct > PRODUCTION.correct and not verdict.promoted
    assert verdict.reason == (
        "test accuracy of class 5 (0.9700 vs 0.9900) is more than the per-class margin 0.0100 below production v0001's"
    )
    margin = criterion(verdict, "per-class margin")
    assert margin.value == pytest.approx(0.02) and margin.limit == 0.01 and not margin.passed
    assert criterion(verdict, "not worse than production").passed and criterion(verdict, "per-class floor").passed


def test_a_drop_of_exactly_the_margin_passes():
    verdict = gate(scored("candidate", of_class(5, 20)), PRODUCTION, DEFAULTS)  # class 5: 0.98 vs 0.99
    assert verdict.promoted, verdict.reason
    assert "largest drop: class 5, 0.0100" in criterion(verdict, "per-class margin").text
    better_everywhere = gate(scored("candidate", []), PRODUCTION, DEFAULTS)
    assert criterion(better_everywhere, "per-class margin").value == pytest.approx(-0.01)
    assert "0.0100 below production v0001's (none is below it)" in better_everywhere.reason


# The comparison with production on the same images ------------------------------------------------


def test_two_more_images_right_promote_by_default_but_are_reported_as_no_evidence():
    candidate = scored("candidate", range(2, 100))  # right on images 0 and 1, where production is wrong
    verdict = gate(candidate, PRODUCTION, DEFAULTS)
    assert verdict.promoted
    comparison = verdict.comparison
    assert (comparison.only_candidate, comparison.only_production, comparison.p_value) == (2, 0, 0.5)
    assert (comparison.candidate_correct, comparison.production_correct, comparison.total) == (9902, 9900, 10000)
    assert (
        "9902 vs 9900 of 10000 right; 2 images only the candidate gets right, 0 only v0001; exact McNemar "
        "p = 0.5: not a significant difference at 0.05"
    ) in verdict.reason
    assert [c.name for c in verdict.criteria] == [
        "threshold",
        "per-class floor",
        "per-class margin",
        "not worse than production",
    ]


def test_with_require_significant_two_more_images_are_not_enough():
    verdict = gate(scored("candidate", range(2, 100)), PRODUCTION, replace(DEFAULTS, require_significant=True))
    assert not verdict.promoted
    significant = criterion(verdict, "significantly better")
    assert (significant.value, significant.limit, significant.passed) == (0.5, 0.05, False)
    assert verdict.reason == (
        "not significantly better than production v0001 (exact McNemar p = 0.5, required below "
        "0.05; 2 images only the candidate gets right, 0 only v0001)"
    )


def test_with_require_significant_ten_against_two_promotes_at_5_percent_not_at_1_percent():
    # candidate: right on 0-9 where production is wrong, wrong on 100 and 101 where production is right
    candidate = scored("candidate", [*range(10, 100), 100, 101])
    strict = replace(DEFAULTS, require_significant=True)
    verdict = gate(candidate, PRODUCTION, strict)
    assert (verdict.comparison.only_candidate, verdict.comparison.only_production) == (10, 2)
    assert verdict.comparison.p_value == pytest.approx(0.0385742, abs=1e-7)
    assert verdict.promoted, verdict.reason
    assert "significantly better than production v0001 (exact McNemar p = 0.03857" in verdict.reason
    assert "a significant difference at 0.05" in verdict.reason
    stricter = gate(candidate, PRODUCTION, replace(strict, significance_alpha=0.01))
    assert not stricter.promoted and "not significantly better" in stricter.reason


def test_a_tie_promotes_by_default_and_never_when_significance_is_required():
    assert gate(scored("candidate", range(100)), PRODUCTION, DEFAULTS).promoted
    verdict = gate(scored("candidate", range(100)), PRODUCTION, replace(DEFAULTS, require_significant=True))
    assert not verdict.promoted and verdict.comparison.p_value == 1.0


def test_more_images_wrong_is_worse_however_the_discordant_images_fall():
    verdict = gate(scored("candidate", range(1, 102)), PRODUCTION, DEFAULTS)  # b = 1, c = 2
    assert not verdict.promoted
    assert "test accuracy 0.9899 is worse than production v0001's 0.9900 on the same test split" in verdict.reason
    assert verdict.comparison.p_value == mcnemar_exact(1, 2) == 1.0


def test_every_criterion_is_evaluated_even_after_one_failed():
    verdict = gate(scored("candidate", range(600)), PRODUCTION, replace(DEFAULTS, require_significant=True))
    assert [c.name for c in verdict.criteria] == [
        "threshold",
        "per-class floor",
        "per-class margin",
        "not worse than production",
        "significantly better",
    ]
    assert [c.passed for c in verdict.criteria] == [False, False, False, False, False]
    assert verdict.reason.startswith("test accuracy 0.9400 is below the threshold 0.9700; test accuracy of classes")


def test_the_first_model_needs_no_comparison():
    verdict = gate(scored("candidate", range(100)), None, replace(DEFAULTS, require_significant=True))
    assert verdict.promoted and verdict.comparison is None
    assert [c.name for c in verdict.criteria] == ["threshold", "per-class floor"]


def test_models_scored_on_different_images_are_not_compared():
    other = Scored("v0001", np.roll(LABELS, 1), LABELS)
    with pytest.raises(ValueError, match="not scored on the same test images"):
        compare(scored("candidate", []), other)


# In the registry: the decision record, the report, promote -----------------------------------------


def test_the_decision_record_carries_every_criterion_and_the_mcnemar_counts(registry, tiny_strong, tiny_weak):
    decision = registry.decisions()[1]
    comparison = decision.comparison
    assert comparison["production"] == "v0001" and comparison["total"] == tiny_weak[1].total
    assert (comparison["candidate_correct"], comparison["production_correct"]) == (
        tiny_weak[1].correct,
        tiny_strong[1].correct,
    )
    assert comparison["only_candidate"] - comparison["only_production"] == tiny_weak[1].correct - tiny_strong[1].correct
    assert comparison["p_value"] == mcnemar_exact(comparison["only_candidate"], comparison["only_production"])
    assert decision.champion_accuracy == tiny_strong[1].accuracy
    names = [c["name"] for c in decision.criteria]
    assert names == ["threshold", "per-class floor", "per-class margin", "not worse than production"]
    worse = decision.criteria[3]
    assert (worse["value"], worse["limit"], worse["passed"]) == (tiny_weak[1].accuracy, tiny_strong[1].accuracy, False)
    assert registry.read_version("v0002")["decision"]["criteria"] == decision.criteria  # stored, then logged


def test_the_report_and_the_model_card_show_the_gate(registry):
    decision = registry.decisions()[1]
    report = render_report(
        decision, registry.read_json("v0002", "metrics.json"), registry.version_dir("v0002"), "seed-mlp"
    )
    comparison = decision.comparison
    assert "| criterion | value | limit | verdict | detail |" in report
    assert f"| threshold | {decision.candidate_accuracy:.4f} | 0.3 | pass |" in report
    worse = f"| not worse than production | {decision.candidate_accuracy:.4f} | {decision.champion_accuracy:.4g} |"
    assert f"{worse} **fail** |" in report
    assert f"| right by the candidate only | {comparison['only_candidate']} |" in report
    assert f"| right by v0001 only | {comparison['only_production']} |" in report
    assert f"| exact McNemar p-value (two-sided) | {comparison['p_value']:.4g} |" in report
    card = (registry.version_dir("v0002") / "model_card.md").read_text()
    assert "- not worse than production: " in card and ": fail" in card


def test_a_rerun_of_production_is_rejected_when_significance_is_required(
    registry, tiny_strong, synthetic_split, tmp_path, capsys
):
    decision = register(registry, copy_run(tiny_strong, tmp_path / "rerun"), synthetic_split, require_significant=True)
    assert not decision.promoted and decision.candidate == "v0003"
    assert decision.comparison["only_candidate"] == decision.comparison["only_production"] == 0
    assert "not significantly better than production v0001 (exact McNemar p = 1" in decision.reason
    assert registry.read_json("v0003", "params.json")["require_significant"] is True

    artifacts = ["--artifacts-dir", str(registry.backend.root.parent)]
    # promote applies the settings v0003 was registered with, unless told otherwise
    assert main(["registry", "promote", "3", "--reason", "same model", *artifacts]) == EXIT_NOT_PROMOTED
    assert "not significantly better" in capsys.readouterr().out
    assert main(["registry", "promote", "3", "--no-require-significant", "--reason", "same model", *artifacts]) == 0
    promoted = registry.decisions()[-1]
    assert promoted.promoted and not promoted.forced and "not worse than production v0001" in promoted.reason
    assert registry.production() == "v0003"


def test_promote_takes_the_gate_settings_as_options(tmp_path, tiny_weak, synthetic_split, capsys):
    registry = open_registry(tmp_path / "registry")
    assert not register(registry, tiny_weak, synthetic_split, threshold=0.9).promoted  # no production model
    per_class = registry.read_json("v0001", "metrics.json")["per_class"]
    lowest = min(row["accuracy"] for row in per_class)
    weakest = [row["class"] for row in per_class if row["accuracy"] == lowest]
    promote = ["registry", "promote", "1", "--threshold", "0.3", "--reason", "x", "--artifacts-dir", str(tmp_path)]

    assert main([*promote, "--per-class-floor", str(lowest + 0.001)]) == EXIT_NOT_PROMOTED
    assert f"{weakest[0]} ({lowest:.4f})" in capsys.readouterr().out and registry.production() is None
    refused = registry.decisions()[-1]
    assert refused.threshold == 0.3 and refused.criteria[1]["limit"] == lowest + 0.001
    assert main([*promote, "--per-class-floor", str(lowest)]) == 0
    assert registry.production() == "v0001"


# End to end: one class's training labels shuffled ----------------------------------------------------


def test_a_model_trained_with_one_class_shuffled_is_rejected_by_the_per_class_floor(
    synthetic_split, tiny_strong, tmp_path
):
    """The same training as `tiny_strong`, on a copy of its split whose train images of class 3 carry
    random labels: the overall accuracy still passes the (fast tier's) threshold, class 3 does not pass
    the default floor, which the unsabotaged model passes."""
    sabotaged_split = split_with_shuffled_labels(synthetic_split, 3, tmp_path / "splits")
    sabotaged = train_and_evaluate(sabotaged_split, tmp_path / "sabotaged", "seed-mlp", seed=1, epochs=3, batch_size=32)
    settings = {"threshold": 0.3, "per_class_floor": DEFAULTS.per_class_floor}
    honest = register(open_registry(tmp_path / "control"), tiny_strong, synthetic_split, **settings)
    assert honest.promoted, honest.reason  # the unsabotaged model passes the same floor

    decision = register(open_registry(tmp_path / "registry"), sabotaged, sabotaged_split, **settings)
    assert not decision.promoted
    assert decision.reason.startswith("test accuracy of class 3 (")
    assert decision.reason.endswith(") is below the per-class floor 0.9500")  # class 3 alone, and nothing else
    assert [c["name"] for c in decision.criteria if not c["passed"]] == ["per-class floor"]
    assert sabotaged[1].accuracy >= 0.3
