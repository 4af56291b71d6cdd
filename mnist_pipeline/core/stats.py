"""Confidence intervals for accuracies measured on a finite test set."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and behaves near 0 and 1.
    """
    if total <= 0:
        raise ValueError("wilson_interval needs at least one trial")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half_width)  # exact at the ends, where rounding
    high = 1.0 if correct == total else min(1.0, centre + half_width)  # could exclude p itself
    return low, high
