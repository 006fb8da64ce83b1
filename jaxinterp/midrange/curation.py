"""MID curation: find the bias-conflicting (minority) samples from mid-range logits, without group labels.

The rule of O'Mahony, Nikolov and O'Sullivan (WACV 2025), ``rule="cross_class"`` (the default):
a model that learned a spurious cue for class ``c`` gives samples of *other* classes that carry
the cue a raised class-``c`` logit. For every class ``c``, bin the class-``c`` logit over the
samples of the other classes (``reference="others"``; or over the whole dataset,
``reference="all"``), over its whole range, with quantile bins; samples of class ``y != c`` whose
class-``c`` logit falls in the mid-to-high bins ``select = (first, stop)`` are the candidates.
The retraining set is the candidates plus a class-balanced draw of the other samples
(``rest_ratio`` times as many), and the last layer is retrained on it (``fit_last_layer``).
The default selection is the top decile of each class's logit over the other classes
(``n_bins=10, select=(9, 10)``): high for those samples, yet mid-range on the logit's whole
range, whose top is held by the class's own samples.

Curate on data the model did not fit: a network that reaches ~100 % training accuracy has
also fitted its minority samples, and their logits no longer show the cue (on the shapes
benchmark the top decile held 15 % minority samples on the fitted training set, where they are
5 % of the data: 3x, against 3.3x on held-out data, 55 % where they are 17 %).

The older rule, ``rule="own_class"`` (``midrange_mask``), keeps the samples whose *own*-class
logit lies between its class's ``low`` and ``high`` quantiles. It fails on spurious-correlation
benchmarks: minority samples are the ones the model finds hardest, so their own-class logit sits
in the *lowest* quantiles and the rule removes them (on the shapes benchmark it cut the minority
share from 5 % of the training set to 0.4 % of the curated set, and the retrained last layer was
no better than ERM). It is kept for comparison.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import (
    check_finite, check_key, check_nonempty, check_positive_int, check_rank, check_real, check_same_leading,
    float32_if_half, is_concrete,
)

RULES = ("cross_class", "own_class")
REFERENCES = ("others", "all")


class Curation(NamedTuple):
    """A curated retraining set.

    Attributes:
      indices: int ``[m]`` sorted indices of the retraining set (candidates and the balanced draw).
      candidates: bool ``[n]`` the samples the rule flagged (``cross_class``: carrying another
        class's cue; ``own_class``: own-class logit inside the quantile range).
      cue_class: int ``[n]`` for each candidate, the class ``c`` whose logit flagged it (the
        highest bin, ties to the larger logit); ``-1`` elsewhere and for ``own_class``.
      bins: int ``[n, n_classes]`` bin of the class-``c`` logit of every sample (``-1`` where the
        sample is of class ``c``); empty ``[n, 0]`` for ``own_class``.
      edges: ``[n_classes, n_bins + 1]`` quantile edges per class; empty for ``own_class``.
    """

    indices: np.ndarray
    candidates: np.ndarray
    cue_class: np.ndarray
    bins: np.ndarray
    edges: np.ndarray


def check_labels(labels, name: str = "labels", *, n_classes: int | None = None) -> None:
    """Raise unless ``labels`` is a 1-D array of non-negative integers (below ``n_classes`` when given).

    Float labels are refused even when integral: a float label (``y + 0.5``, NaN) is a bug
    upstream, and comparing it with class indices would silently select nothing.
    """
    check_rank(labels, name, 1)
    dtype = np.asarray(labels).dtype if is_concrete(labels) else labels.dtype
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"`{name}` must hold integer class ids; got dtype {dtype}. "
                        "Cast with `.astype(int)` if the values are whole numbers.")
    if not is_concrete(labels):
        return
    lab = np.asarray(labels)
    if lab.size and lab.min() < 0:
        raise ValueError(f"`{name}` must be non-negative class ids; got minimum {lab.min()}.")
    if n_classes is not None:
        if lab.size and lab.max() >= n_classes:
            raise ValueError(f"`{name}` must lie in [0, {n_classes}) (the logits' classes); "
                             f"got values in [{lab.min()}, {lab.max()}].")


def _check(logits, labels) -> int:
    check_rank(logits, "logits", 2)
    check_nonempty(logits, "logits")
    check_same_leading("logits", logits, "labels", labels)
    check_finite(logits, "logits")
    n_classes = int(np.shape(logits)[1])
    check_labels(labels, n_classes=n_classes)
    return n_classes


# ------------------------------------------------------------------------ own-class rule (old)

@functools.partial(jax.jit, static_argnames=("n_classes",))
def _class_quantiles(target, labels, levels, n_classes: int) -> jax.Array:
    def one(c):
        return jnp.nanquantile(jnp.where(labels == c, target, jnp.nan), levels)

    return jax.vmap(one)(jnp.arange(n_classes))


def _target_logits(logits, labels) -> jax.Array:
    return jnp.take_along_axis(jnp.asarray(logits), jnp.asarray(labels, jnp.int32)[:, None], axis=1)[:, 0]


def class_logit_quantiles(logits, labels, levels) -> jax.Array:
    """Quantiles ``[n_classes, len(levels)]`` of each class's own logit over its inputs (NaN if none)."""
    n_classes = _check(logits, labels)
    logits = float32_if_half(logits)
    levels = jnp.asarray(levels, jnp.float32)
    return _class_quantiles(_target_logits(logits, labels).astype(jnp.float32), jnp.asarray(labels),
                            levels, n_classes)


def midrange_mask(logits, labels, *, low: float = 0.25, high: float = 0.75) -> jax.Array:
    """Boolean ``[n]``: inputs whose own-class logit lies in its class's ``[low, high]`` quantiles.

    This is the ``own_class`` rule, kept for comparison; it removes the minority samples
    instead of finding them (see the module docstring). Use ``curate`` for the paper's rule.

    Args:
      logits: ``[n, n_classes]`` model outputs on the curation pool (e.g. the training set).
      labels: int ``[n]`` class labels (targets only; no group labels).
      low, high: quantile levels, ``0 <= low < high <= 1``; ``(0, 1)`` keeps every input.

    Returns:
      bool ``[n]`` selection mask.
    """
    low = check_real(low, "low", low=0.0, high=1.0)
    high = check_real(high, "high", low=0.0, high=1.0)
    if not low < high:
        raise ValueError(f"`low` must be below `high`; got low={low}, high={high}.")
    logits = float32_if_half(logits)  # half precision is compared in float32
    q = class_logit_quantiles(logits, labels, [low, high])
    target = _target_logits(logits, labels).astype(jnp.float32)
    bounds = q[jnp.asarray(labels, jnp.int32)]
    return (target >= bounds[:, 0]) & (target <= bounds[:, 1])


# ------------------------------------------------------------------------ cross-class rule (paper)

def cross_class_bins(logits, labels, *, n_bins: int = 10, reference: str = "others") -> tuple[np.ndarray, np.ndarray]:
    """Quantile bin of every class's logit on the samples of the other classes.

    Args:
      logits: ``[n, n_classes]`` model outputs.
      labels: int ``[n]`` class labels.
      n_bins: quantile bins per class logit.
      reference: ``"others"``: edges from the class-``c`` logit over samples of the other
        classes; ``"all"``: over every sample (the class-``c`` samples then fill the top bins).

    Returns:
      ``(bins, edges)``: int ``[n, n_classes]`` bins in ``[0, n_bins)`` (``-1`` where the sample
      is of class ``c``, as ``np.digitize(v, edges[c, 1:-1])``) and ``[n_classes, n_bins + 1]`` edges.
    """
    n_classes = _check(logits, labels)
    n_bins = check_positive_int(n_bins, "n_bins")
    if reference not in REFERENCES:
        raise ValueError(f"`reference` must be one of {REFERENCES}; got {reference!r}.")
    v = np.asarray(logits, np.float64)
    y = np.asarray(labels)
    bins = np.full(v.shape, -1, np.int32)
    edges = np.zeros((n_classes, n_bins + 1))
    for c in range(n_classes):
        pool = v[y != c, c] if reference == "others" else v[:, c]
        if pool.size < n_bins:
            raise ValueError(f"class {c}'s logit has {pool.size} reference sample(s), fewer than n_bins={n_bins}.")
        edges[c] = np.quantile(pool, np.linspace(0.0, 1.0, n_bins + 1))
        b = np.searchsorted(edges[c, 1:-1], v[:, c], side="right")
        bins[:, c] = np.where(y == c, -1, b)
    return bins, edges


def _check_select(select, n_bins: int) -> tuple[int, int]:
    if not (isinstance(select, (tuple, list)) and len(select) == 2):
        raise TypeError(f"`select` must be a pair (first, stop) of bin indices; got {select!r}.")
    first, stop = (int(s) for s in select)
    if not 0 <= first < stop <= n_bins:
        raise ValueError(f"`select` must satisfy 0 <= first < stop <= n_bins={n_bins}; got {tuple(select)}.")
    return first, stop


def midrange_candidates(logits, labels, *, n_bins: int = 10, select=(9, 10), reference: str = "others"):
    """Samples whose logit for another class lies in that logit's bins ``select``.

    Args:
      logits: ``[n, n_classes]`` model outputs on the curation pool.
      labels: int ``[n]`` class labels (no group labels).
      n_bins: quantile bins per class logit.
      select: ``(first, stop)``: bins ``first .. stop - 1`` are the mid-to-high range.
      reference: the pool the bins are computed over (see ``cross_class_bins``).

    Returns:
      ``(candidates, cue_class, bins, edges)``: bool ``[n]``, int ``[n]`` (the flagging class,
      ``-1`` if none), and ``cross_class_bins``' outputs.
    """
    bins, edges = cross_class_bins(logits, labels, n_bins=n_bins, reference=reference)
    first, stop = _check_select(select, n_bins)
    inside = (bins >= first) & (bins < stop)
    candidates = inside.any(axis=1)
    # the flagging class: the highest bin among the selected ones, ties broken by the larger logit
    score = np.where(inside, bins * 1e6 + np.argsort(np.argsort(np.asarray(logits), axis=1), axis=1), -1)
    cue = np.where(candidates, score.argmax(axis=1), -1).astype(np.int32)
    return candidates, cue, bins, edges


def balanced_draw(labels, pool, per_class: int, *, key: jax.Array, n_classes: int) -> np.ndarray:
    """Up to ``per_class`` indices of each class drawn uniformly from the samples where ``pool``.

    Returns:
      int ``[<= n_classes * per_class]`` sorted indices (a class with fewer samples gives them all).
    """
    y = np.asarray(labels)
    perm = np.asarray(jax.random.permutation(key, len(y)))
    take = [perm[(y[perm] == c) & np.asarray(pool)[perm]][:per_class] for c in range(n_classes)]
    return np.sort(np.concatenate(take)).astype(np.int64)


def curate(
    logits,
    labels,
    *,
    key: jax.Array,
    rule: str = "cross_class",
    n_bins: int = 10,
    select=(9, 10),
    reference: str = "others",
    rest_ratio: float = 1.0,
    low: float = 0.25,
    high: float = 0.75,
) -> Curation:
    """The MID retraining set: candidates from mid-range logits plus a class-balanced draw.

    Args:
      logits: ``[n, n_classes]`` ERM model outputs on the curation pool (the training set).
      labels: int ``[n]`` class labels; no group labels are used.
      key: PRNG key of the class-balanced draw.
      rule: ``"cross_class"`` (the paper's rule, default) or ``"own_class"`` (``midrange_mask``,
        kept for comparison; the draw is then not added).
      n_bins, select, reference: the cross-class binning (see ``midrange_candidates``).
      rest_ratio: the balanced draw from the non-candidates holds ``rest_ratio`` times as many
        samples as there are candidates, split equally over the classes (0: candidates only).
      low, high: quantile range of the ``own_class`` rule.

    Returns:
      A ``Curation``.

    Raises:
      TypeError: non-integer ``labels``, a raw uint32 ``key``, a non-numeric ``rest_ratio``.
      ValueError: empty or non-finite ``logits``, labels outside the logits' classes, lengths differ.
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}; got {rule!r}.")
    n_classes = _check(logits, labels)
    n = int(np.shape(labels)[0])
    if rule == "own_class":
        mask = np.asarray(midrange_mask(logits, labels, low=low, high=high))
        return Curation(np.flatnonzero(mask), mask, np.full(n, -1, np.int32), np.zeros((n, 0), np.int32),
                        np.zeros((0, n_bins + 1)))
    rest_ratio = check_real(rest_ratio, "rest_ratio", low=0.0, high=100.0)
    check_key(key)
    candidates, cue, bins, edges = midrange_candidates(logits, labels, n_bins=n_bins, select=select,
                                                       reference=reference)
    per_class = int(np.ceil(rest_ratio * candidates.sum() / n_classes))
    rest = (balanced_draw(labels, ~candidates, per_class, key=key, n_classes=n_classes) if per_class
            else np.zeros(0, int))
    indices = np.union1d(np.flatnonzero(candidates), rest)
    return Curation(indices, candidates, cue, bins, edges)
