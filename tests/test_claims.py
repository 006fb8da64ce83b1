"""Scorecard verdicts follow their stated rules."""

import numpy as np
import pytest

from jaxinterp.studies.claims import FAILS, HOLDS, INCONCLUSIVE, ordering, paired_ordering, within


def test_within_compares_the_mean_to_the_paper():
    c = within("count at m=256", 72.0, [70.0, 74.0, 71.0], tolerance=5.0)
    assert c.verdict == HOLDS and c.ours == pytest.approx(71.6667, abs=1e-3)
    assert c.spread == pytest.approx(np.std([70, 74, 71], ddof=1))
    assert within("x", 72.0, 60.0, tolerance=5.0).verdict == FAILS
    assert within("x", 72.0, float("nan"), tolerance=5.0).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="tolerance"):
        within("x", 1.0, 1.0, tolerance=-1.0)


def test_ordering_uses_a_one_sided_test():
    rng = np.random.default_rng(0)
    hi, lo = rng.normal(1.0, 0.1, 20), rng.normal(0.0, 0.1, 20)
    assert ordering("A > B", hi, lo).verdict == HOLDS
    assert ordering("A > B", lo, hi).verdict == FAILS
    assert ordering("A > B", [1.0], [0.0]).verdict == INCONCLUSIVE


def test_paired_ordering_needs_pairs():
    a = np.arange(10.0) + 1.0
    assert paired_ordering("A > B", a, a - 0.5 - 0.01 * np.arange(10)).verdict == HOLDS
    assert paired_ordering("A > B", a, a).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="paired"):
        paired_ordering("A > B", a, a[:5])
