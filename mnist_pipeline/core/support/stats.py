"""Statistics for accuracies measured on a finite test set: the Wilson interval of one model's
accuracy, and the exact McNemar test of two models scored on the same images."""

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


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided p-value of the exact McNemar test of two classifiers scored on the same images.

    Only the discordant images count: `only_first` that the first model gets right and the second
    wrong, `only_second` the other way round. If the models were equally accurate, each discordant
    image would fall either way with probability 1/2, so the smaller count is binomial(n, 1/2) with
    n = b + c: p = 2 * P(X <= min(b, c)), capped at 1 (1 when no image is discordant). Computed with
    exact integers, as the approximation by a chi-squared law is poor for the few discordant images
    two good models leave.
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("mcnemar_exact needs counts of images, not negative numbers")
    n = only_first + only_second
    term = tail = 1  # comb(n, 0); each next term from the last (exact), not comb(n, k) afresh for every k
    for k in range(min(only_first, only_second)):
        term = term * (n - k) // (k + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))  # 1 << n: 2**n as an int (mypy types int ** int as Any)
