"""The 95% Wilson interval that every accuracy is reported with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnist_pipeline.core.stats import Z_95, wilson_interval


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
