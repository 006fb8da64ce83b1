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


def test_non_finite_samples_are_inconclusive_and_bad_arguments_are_named():
    big = [5.0, 6.0, 7.0, 8.0, 9.0]
    small = [1.0, 2.0, 3.0, 4.0, 0.5]
    assert ordering("a > b", big, small).verdict == HOLDS
    assert ordering("a > b", big[:-1] + [np.inf], small).verdict == INCONCLUSIVE
    assert paired_ordering("a > b", big[:-1] + [np.nan], small).verdict == INCONCLUSIVE
    assert within("c", 1.0, [np.nan, 1.0], tolerance=0.5).verdict == INCONCLUSIVE
    with pytest.raises(TypeError, match="tolerance"):
        within("c", 1.0, [1.0], tolerance="0.1")
    with pytest.raises(ValueError, match="paper_value"):
        within("c", float("nan"), [1.0], tolerance=0.1)
    with pytest.raises(TypeError, match="larger"):
        ordering("a > b", "abc", small)
    with pytest.raises(ValueError, match="alpha"):
        ordering("a > b", big, small, alpha=0.0)


def test_orderings_are_inconclusive_when_too_few_samples_can_reach_alpha():
    from math import comb

    from jaxinterp.studies.claims import smallest_p

    # closed forms of the exact tests: 1 / C(n_a + n_b, n_a) (Mann-Whitney), 2^-n (signed-rank)
    for n_a, n_b in ((3, 3), (4, 4), (2, 5)):
        assert smallest_p(n_a, n_b) == pytest.approx(1 / comb(n_a + n_b, n_a), rel=1e-9)
    for n in (3, 4, 5, 8):
        assert smallest_p(n) == pytest.approx(2.0**-n, rel=1e-9)
    # 3 vs 3 perfectly separated: p = 1/20 = 0.05 is the best possible, so not "does not hold"
    assert ordering("A > B", [4.0, 5.0, 6.0], [1.0, 2.0, 3.0]).verdict == INCONCLUSIVE
    assert ordering("A > B", [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).verdict == INCONCLUSIVE
    assert ordering("A > B", [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0]).verdict == HOLDS  # 1/70
    assert ordering("A > B", [1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]).verdict == FAILS
    # 4 pairs: 1/16 >= 0.05 at best; 5 pairs: 1/32 < 0.05
    assert paired_ordering("A > B", np.arange(4.0) + 1, np.zeros(4)).verdict == INCONCLUSIVE
    assert paired_ordering("A > B", np.arange(5.0) + 1, np.zeros(5)).verdict == HOLDS
    assert paired_ordering("A > B", np.zeros(5), np.arange(5.0) + 1).verdict == FAILS
    assert ordering("A > B", [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0], alpha=0.01).verdict == INCONCLUSIVE
