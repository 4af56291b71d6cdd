"""The promotion gate, as TFX's Evaluator and ZenML's e2e example apply it: promote only when test
accuracy reaches the threshold AND the candidate is not worse than the production model on the same
test split (ties promote; with no production model the threshold alone decides)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scored:
    """A model's result on one test split: `correct` of `total` images right."""

    version: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def gate(candidate: Scored, champion: Scored | None, threshold: float) -> tuple[bool, str]:
    """(promote?, why). Both scores must come from the same test split."""
    if candidate.accuracy < threshold:
        return False, f"test accuracy {candidate.accuracy:.4f} is below the threshold {threshold:.4f}"
    if champion is None:
        return True, f"test accuracy {candidate.accuracy:.4f} reaches the threshold {threshold:.4f}; no production model yet"
    if candidate.correct < champion.correct:
        return False, (
            f"test accuracy {candidate.accuracy:.4f} is worse than production {champion.version}'s "
            f"{champion.accuracy:.4f} on the same test split"
        )
    return True, (
        f"test accuracy {candidate.accuracy:.4f} reaches the threshold {threshold:.4f} and is not worse "
        f"than production {champion.version}'s {champion.accuracy:.4f}"
    )
