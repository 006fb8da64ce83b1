"""The reproduction scorecard: each published number or claim a study checks, with a verdict
computed by a rule stated here, never typed in.

A study's ``claims(result)`` returns a list of ``Claim``; the CLI writes them to the study's JSON
under ``"claims"`` and the report opens with all of them in one table.

Rules:
- ``within``: a measured number against a published one; holds when
  ``|ours - paper| <= tolerance`` (the tolerance is the paper's own spread or a stated margin).
- ``ordering``: "A is larger than B" over seeds or samples; holds when a one-sided
  Mann-Whitney U test gives ``p < alpha`` (default 0.05) and the medians are in the claimed order.
- ``paired_ordering``: the same claim over paired samples (one A and one B per seed), one-sided
  Wilcoxon signed-rank test.
- Both orderings are ``INCONCLUSIVE`` (not "does not hold") when the samples are too few for the
  test ever to reach ``p < alpha``: the smallest attainable p (the same test on perfectly ordered
  samples of the same sizes, e.g. ``1 / C(n_a + n_b, n_a)`` for the exact Mann-Whitney test and
  ``2^-n`` for the exact signed-rank test) is at least ``alpha``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxinterp._validation import check_real

__all__ = ["Claim", "HOLDS", "FAILS", "INCONCLUSIVE", "within", "ordering", "paired_ordering", "smallest_p"]

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the scorecard.

    Attributes:
      claim: what the paper says, in one sentence.
      paper_value: the published number (or a short description of the qualitative claim).
      ours: our measured number (a float, or a short string for a qualitative result).
      spread: the run-to-run spread of ``ours`` (standard deviation over seeds), or None.
      verdict: ``HOLDS``, ``FAILS`` or ``INCONCLUSIVE``, computed by ``rule``.
      rule: how the verdict was computed (shown in the report).
      figure: file name of the figure that shows it, or None.
    """

    claim: str
    paper_value: Any
    ours: Any
    spread: float | None
    verdict: str
    rule: str
    figure: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The claim as a plain dict (the ``claims`` entries of a study's JSON)."""
        return dataclasses.asdict(self)


def _finite(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` as a flat float64 array of at least one number (NaN and inf kept: they make the
    verdict INCONCLUSIVE)."""
    if values is None or isinstance(values, (str, bytes)):
        raise TypeError(f"`{name}` must be a number or a sequence of numbers; got {type(values).__name__}.")
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a number or a sequence of numbers; got {values!r:.80}.") from err
    if arr.size == 0:
        raise ValueError(f"`{name}` must hold at least one value.")
    return arr


def within(claim: str, paper_value: float, ours: float | Sequence[float], *, tolerance: float,
           figure: str | None = None) -> Claim:
    """A measured number against a published one.

    Args:
      claim: the paper's statement.
      paper_value: the published number.
      ours: our number, or our numbers over seeds, any shape (their mean is compared; their
        standard deviation is reported as the spread).
      tolerance: the largest ``|ours - paper_value|`` that still reproduces it (finite, >= 0).
      figure: the figure showing it.

    Returns:
      A ``Claim``; its verdict is ``INCONCLUSIVE`` when ``ours`` is not finite (a failed run
      shows in the scorecard instead of stopping it).
    """
    tolerance = check_real(tolerance, "tolerance", low=0.0)
    check_real(paper_value, "paper_value")
    values = _finite(ours, "ours")
    mean = float(values.mean())
    spread = float(values.std(ddof=1)) if values.size > 1 else None
    rule = f"|ours - paper| <= {tolerance:g}"
    if not np.isfinite(mean):
        verdict = INCONCLUSIVE
    else:
        verdict = HOLDS if abs(mean - float(paper_value)) <= tolerance else FAILS
    return Claim(claim, paper_value, mean, spread, verdict, rule, figure)


def _order_verdict(p: float, ordered: bool, alpha: float, n: int, p_min: float) -> str:
    """``INCONCLUSIVE`` without a p-value or when even ``p_min`` (the smallest p these sample sizes
    allow) is not below ``alpha``; otherwise ``HOLDS`` iff ``p < alpha`` and ``ordered``."""
    if n < 2 or not np.isfinite(p) or not p_min < alpha:
        return INCONCLUSIVE
    return HOLDS if (p < alpha and ordered) else FAILS


def smallest_p(n_larger: int, n_smaller: int | None = None) -> float:
    """The smallest one-sided p-value the ordering tests can give for these sample sizes.

    The test is run on perfectly ordered, tie-free samples: Mann-Whitney U for independent
    samples of sizes ``n_larger`` and ``n_smaller`` (``1 / C(n_a + n_b, n_a)`` where scipy uses
    the exact distribution), Wilcoxon signed-rank for ``n_larger`` pairs when ``n_smaller`` is
    None (``2^-n`` where exact). NaN below two samples.
    """
    from scipy.stats import mannwhitneyu, wilcoxon

    from jaxinterp._validation import check_positive_int

    check_positive_int(n_larger, "n_larger")
    if n_smaller is not None:
        check_positive_int(n_smaller, "n_smaller")
    if n_smaller is None:
        return float(wilcoxon(np.arange(1.0, n_larger + 1), alternative="greater").pvalue) if n_larger > 1 \
            else float("nan")
    if min(n_larger, n_smaller) < 2:
        return float("nan")
    return float(mannwhitneyu(np.arange(n_larger) + n_smaller + 1.0, np.arange(float(n_smaller)),
                              alternative="greater").pvalue)


def ordering(claim: str, larger: Sequence[float], smaller: Sequence[float], *, alpha: float = 0.05,
             paper_value: Any = "A > B", figure: str | None = None) -> Claim:
    """"``larger`` exceeds ``smaller``" over independent samples (one-sided Mann-Whitney U).

    ``ours`` is the difference of the medians; ``spread`` the pooled standard deviation. Samples
    of any shape are pooled; a NaN or infinite sample makes the verdict ``INCONCLUSIVE``; ``alpha``
    lies in (0, 1].
    """
    from scipy.stats import mannwhitneyu

    alpha = check_real(alpha, "alpha", low=0.0, high=1.0, open_low=True)
    a, b = _finite(larger, "larger"), _finite(smaller, "smaller")
    usable = min(a.size, b.size) > 1 and np.isfinite(a).all() and np.isfinite(b).all()
    p = float(mannwhitneyu(a, b, alternative="greater").pvalue) if usable else float("nan")
    diff = float(np.median(a) - np.median(b))
    spread = float(np.sqrt((a.var() + b.var()) / 2))
    p_min = smallest_p(a.size, b.size)
    rule = (f"one-sided Mann-Whitney U p < {alpha:g} (p = {p:.3g}) and median(A) > median(B); "
            f"inconclusive if the smallest attainable p ({p_min:.3g}) is not < {alpha:g}")
    return Claim(claim, paper_value, diff, spread, _order_verdict(p, diff > 0, alpha, min(a.size, b.size), p_min),
                 rule, figure)


def paired_ordering(claim: str, larger: Sequence[float], smaller: Sequence[float], *, alpha: float = 0.05,
                    paper_value: Any = "A > B", figure: str | None = None) -> Claim:
    """"``larger`` exceeds ``smaller``" over paired samples (one-sided Wilcoxon signed-rank).

    ``ours`` is the mean paired difference; ``spread`` its standard deviation. Samples of any
    shape are flattened in order; a NaN or infinite sample makes the verdict ``INCONCLUSIVE``;
    ``alpha`` lies in (0, 1].
    """
    from scipy.stats import wilcoxon

    alpha = check_real(alpha, "alpha", low=0.0, high=1.0, open_low=True)
    a, b = _finite(larger, "larger"), _finite(smaller, "smaller")
    if a.shape != b.shape:
        raise ValueError(f"`larger` and `smaller` must be paired (same length); got {a.size} and {b.size}.")
    d = a - b
    if d.size > 1 and np.any(d != 0) and np.isfinite(d).all():
        p = float(wilcoxon(d, alternative="greater").pvalue)
    else:
        p = float("nan")
    spread = float(d.std(ddof=1)) if d.size > 1 else None
    p_min = smallest_p(d.size)
    rule = (f"one-sided Wilcoxon signed-rank p < {alpha:g} (p = {p:.3g}) and mean(A - B) > 0; "
            f"inconclusive if the smallest attainable p ({p_min:.3g}) is not < {alpha:g}")
    return Claim(claim, paper_value, float(d.mean()), spread,
                 _order_verdict(p, float(d.mean()) > 0, alpha, d.size, p_min), rule, figure)
