"""The 95% Wilson interval that every accuracy is reported with, and the exact McNemar test the gate
compares a candidate with production by."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnist_pipeline.core.support.stats import Z_95, mcnemar_exact, wilson_interval


def test_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    low, high = wilson_interval(9700, 10000)
    assert (low, high) == (pytest.approx(0.9665, abs=1e-4), pytest.approx(0.9732, abs=1e-4))
    low, high = wilson_interval(9900, 10000)  # NOTES.md: about +-0.2 points at 0.99
    assert high - low == pytest.approx(0.0039, abs=2e-4)


@given(total=st.integers(1, 100_000), share=st.floats(0, 1))
def test_endpoints_solve_the_wilson_equation(total, share):
    correct = round(share * total)
    p_hat = correct / total
    low, high = wilson_interval(correct, total)
    assert 0 <= low <= p_hat <= high <= 1
    for p in (low, high):
        if 0 < p < 1:
            assert (p_hat - p) ** 2 == pytest.approx(Z_95**2 * p * (1 - p) / total, rel=1e-6, abs=1e-12)


def test_needs_trials():
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)


@pytest.mark.parametrize(
    "only_first, only_second, p_value",
    [
        (2, 0, 0.5),  # 2 * C(2,0) / 2^2: "+2 images" is no evidence at all
        (10, 2, 2 * (1 + 12 + 66) / 2**12),  # 2 * sum_{k<=2} C(12,k) / 2^12 = 0.03857...
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # two-sided: the same either way round
        (0, 5, 2 / 2**5),
        (6, 1, 2 * (1 + 7) / 2**7),
        (3, 3, 1.0),  # 2 * P(X <= 3) for n = 6 exceeds 1: capped
        (0, 0, 1.0),  # no discordant image: no evidence of any difference
    ],
)
def test_mcnemar_exact_p_values_computed_by_hand(only_first, only_second, p_value):
    assert mcnemar_exact(only_first, only_second) == pytest.approx(p_value, rel=1e-12)


def test_mcnemar_exact_agrees_with_the_chi_squared_approximation_for_many_discordant_images():
    # continuity-corrected chi-squared: (|120 - 80| - 1)^2 / 200 = 7.605, p = 0.00582 (1 degree of freedom)
    assert mcnemar_exact(120, 80) == pytest.approx(0.00582, abs=3e-4)
    assert 0 < mcnemar_exact(5000, 4000) < 1e-20  # exact integers: no overflow, no loss to 0 too early


@given(only_first=st.integers(0, 300), only_second=st.integers(0, 300))
def test_mcnemar_exact_is_a_p_value_symmetric_in_its_counts(only_first, only_second):
    p_value = mcnemar_exact(only_first, only_second)
    assert 0 < p_value <= 1 and p_value == mcnemar_exact(only_second, only_first)
    if only_first > only_second:  # one more image for the better model is never less evidence
        assert mcnemar_exact(only_first + 1, only_second) <= p_value


def test_mcnemar_exact_needs_counts():
    with pytest.raises(ValueError, match="counts of images"):
        mcnemar_exact(-1, 3)
