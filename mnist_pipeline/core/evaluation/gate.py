"""The promotion gate, after TFX's Evaluator: a value threshold, per-class thresholds and a comparison
with the production model (the baseline) on the same test images.

A candidate is promoted only if every criterion holds:
- its test accuracy reaches the threshold;
- every class's test accuracy reaches the per-class floor (an overall 0.98 can hide one class at 0.90);
- with a production model: no class is more than the per-class margin below production's accuracy on
  it, and the candidate is not worse than production in images right (ties promote). With
  `require_significant`, it must moreover be significantly better: an exact McNemar test on the
  images only one of the two gets right, p below `significance_alpha`.

The McNemar counts and p-value are reported whatever the settings, so that "+2 images out of 10,000"
reads as what it is: no evidence of a better model. Every criterion is evaluated, passed or not, so
the decision record shows each one's value and verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.support.stats import mcnemar_exact

FLOAT_SLACK = 1e-9  # accuracies are ratios of counts: a drop of exactly the margin must pass


@dataclass(frozen=True)
class GateSettings:
    """The gate's settings: flow parameters of the same names (core/modelling/parameters.py), stored with each
    version in its params.json."""

    threshold: float
    per_class_floor: float
    per_class_margin: float
    require_significant: bool
    significance_alpha: float

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> GateSettings:
        """The settings among `values` (a run's parameters, or a version's params.json)."""
        return cls(**{field.name: values[field.name] for field in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Scored:
    """A model's predicted class for each image of one test split, beside the images' true labels."""

    version: str
    labels: np.ndarray
    predicted: np.ndarray

    @property
    def right(self) -> np.ndarray:
        right: np.ndarray = self.predicted == self.labels
        return right

    @property
    def correct(self) -> int:
        return int(self.right.sum())

    @property
    def total(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def class_accuracies(self) -> dict[int, float]:
        """{class: test accuracy on its images}, for the classes the test split has."""
        counts = np.bincount(self.labels, minlength=NUM_CLASSES)
        right = np.bincount(self.labels[self.right], minlength=NUM_CLASSES)
        return {c: int(right[c]) / int(counts[c]) for c in range(NUM_CLASSES) if counts[c]}


@dataclass(frozen=True)
class Criterion:
    """One criterion's measured `value`, the `limit` it is held against, its verdict, and a sentence
    saying both (the gate's reason is made of these)."""

    name: str
    value: float
    limit: float
    passed: bool
    text: str


@dataclass(frozen=True)
class Comparison:
    """Candidate and production on the same test images: how many each gets right, and the
    discordant images (right by one, wrong by the other) with the exact McNemar p-value."""

    production: str
    total: int
    candidate_correct: int
    production_correct: int
    only_candidate: int
    only_production: int
    p_value: float

    def counts(self) -> str:
        return (
            f"{self.candidate_correct} vs {self.production_correct} of {self.total} right; "
            f"{self.only_candidate} images only the candidate gets right, {self.only_production} only "
            f"{self.production}; exact McNemar p = {self.p_value:.4g}"
        )


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str
    criteria: tuple[Criterion, ...]
    comparison: Comparison | None

    def record_fields(self) -> dict[str, Any]:
        """The decision record's fields `criteria` and `comparison` (core/registry/decisions.py)."""
        return {
            "criteria": [asdict(criterion) for criterion in self.criteria],
            "comparison": asdict(self.comparison) if self.comparison else None,
        }


def compare(candidate: Scored, production: Scored) -> Comparison:
    """The two models' results on the same images (their labels must be the same array)."""
    if not np.array_equal(candidate.labels, production.labels):
        raise ValueError("candidate and production were not scored on the same test images")
    only_candidate = int((candidate.right & ~production.right).sum())
    only_production = int((production.right & ~candidate.right).sum())
    return Comparison(
        production.version,
        candidate.total,
        candidate.correct,
        production.correct,
        only_candidate,
        only_production,
        mcnemar_exact(only_candidate, only_production),
    )


def gate(candidate: Scored, production: Scored | None, settings: GateSettings) -> Verdict:
    """Apply every criterion; promoted if all pass. The reason names the failed criteria, or all of
    them when the candidate is promoted. Both scores must come from the same test split."""
    criteria = [_threshold(candidate, settings.threshold), _floor(candidate, settings.per_class_floor)]
    comparison = None
    if production is not None:
        comparison = compare(candidate, production)
        criteria += [
            _margin(candidate, production, settings.per_class_margin),
            _not_worse(candidate, production, comparison, settings.significance_alpha),
        ]
        if settings.require_significant:
            criteria.append(_significant(comparison, settings.significance_alpha))
    failed = [criterion for criterion in criteria if not criterion.passed]
    texts = [criterion.text for criterion in failed or criteria]
    if not failed and production is None:
        texts.insert(1, "no production model yet")
    return Verdict(not failed, "; ".join(texts), tuple(criteria), comparison)


def _threshold(candidate: Scored, threshold: float) -> Criterion:
    passed = candidate.accuracy >= threshold
    verb = "reaches" if passed else "is below"
    return Criterion(
        "threshold",
        candidate.accuracy,
        threshold,
        passed,
        f"test accuracy {candidate.accuracy:.4f} {verb} the threshold {threshold:.4f}",
    )


def _floor(candidate: Scored, floor: float) -> Criterion:
    accuracies = candidate.class_accuracies()
    lowest = min(accuracies, key=accuracies.__getitem__)
    below = [c for c, accuracy in accuracies.items() if accuracy < floor]
    if below:
        text = (
            f"test accuracy of class{'es' if len(below) > 1 else ''} "
            f"{', '.join(f'{c} ({accuracies[c]:.4f})' for c in below)} is below the per-class floor {floor:.4f}"
        )
    else:
        text = f"every class reaches the per-class floor {floor:.4f} (lowest: class {lowest}, {accuracies[lowest]:.4f})"
    return Criterion("per-class floor", accuracies[lowest], floor, not below, text)


def _margin(candidate: Scored, production: Scored, margin: float) -> Criterion:
    mine, theirs = candidate.class_accuracies(), production.class_accuracies()
    drops = {c: theirs[c] - mine[c] for c in mine}
    largest = max(drops, key=drops.__getitem__)
    over = [c for c, drop in drops.items() if drop > margin + FLOAT_SLACK]
    if over:
        text = (
            f"test accuracy of class{'es' if len(over) > 1 else ''} "
            f"{', '.join(f'{c} ({mine[c]:.4f} vs {theirs[c]:.4f})' for c in over)} is more than the per-class "
            f"margin {margin:.4f} below production {production.version}'s"
        )
    else:
        worst = f"largest drop: class {largest}, {drops[largest]:.4f}" if drops[largest] > 0 else "none is below it"
        text = (
            f"no class is more than the per-class margin {margin:.4f} below production {production.version}'s ({worst})"
        )
    return Criterion("per-class margin", drops[largest], margin, not over, text)


def _not_worse(candidate: Scored, production: Scored, comparison: Comparison, alpha: float) -> Criterion:
    passed = candidate.correct >= production.correct
    significant = comparison.p_value < alpha and comparison.only_candidate != comparison.only_production
    meaning = "a significant difference" if significant else "not a significant difference"
    text = (
        f"test accuracy {candidate.accuracy:.4f} is {'not worse' if passed else 'worse'} than production "
        f"{production.version}'s {production.accuracy:.4f} on the same test split "
        f"({comparison.counts()}: {meaning} at {alpha:g})"
    )
    return Criterion("not worse than production", candidate.accuracy, production.accuracy, passed, text)


def _significant(comparison: Comparison, alpha: float) -> Criterion:
    passed = comparison.only_candidate > comparison.only_production and comparison.p_value < alpha
    text = (
        f"{'significantly' if passed else 'not significantly'} better than production {comparison.production} "
        f"(exact McNemar p = {comparison.p_value:.4g}, required below {alpha:g}; {comparison.only_candidate} "
        f"images only the candidate gets right, {comparison.only_production} only {comparison.production})"
    )
    return Criterion("significantly better", comparison.p_value, alpha, passed, text)
