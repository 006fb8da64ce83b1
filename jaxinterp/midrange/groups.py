"""Group metrics for spurious-correlation benchmarks: per-group, worst-group and mean accuracy."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxinterp._validation import check_integer_labels, check_key, check_positive_int, check_same_leading
from jaxinterp.midrange.curation import check_labels


class GroupMetrics(NamedTuple):
    """Accuracy of one classifier on a grouped evaluation set.

    Attributes:
      per_group: ``[n_groups]`` accuracy of each group (NaN for groups absent from the set).
      counts: ``[n_groups]`` samples per group.
      worst_group: the lowest accuracy over the groups present.
      mean_accuracy: accuracy over all samples (on a group-balanced set, the mean over groups).
      mean_group_accuracy: unweighted mean of the per-group accuracies over the groups present.
    """

    per_group: np.ndarray
    counts: np.ndarray
    worst_group: float
    mean_accuracy: float
    mean_group_accuracy: float


def _check_groups(groups, n_groups: int | None) -> int:
    g = np.asarray(groups)
    if g.size and g.min() < 0:
        raise ValueError(f"`groups` must be non-negative group ids; got minimum {g.min()}.")
    n = int(g.max()) + 1 if g.size else 0
    if n_groups is None:
        return max(n, 1)
    n_groups = check_positive_int(n_groups, "n_groups")
    if n > n_groups:
        raise ValueError(f"`groups` holds id {n - 1}, outside [0, n_groups={n_groups}).")
    return n_groups


def group_metrics(predictions, labels, groups, n_groups: int | None = None) -> GroupMetrics:
    """Per-group, worst-group and mean accuracy of predicted classes.

    Args:
      predictions: int ``[n]`` predicted classes (e.g. ``logits.argmax(-1)``).
      labels: int ``[n]`` true classes.
      groups: int ``[n]`` group ids in ``[0, n_groups)``.
      n_groups: number of groups (default ``groups.max() + 1``).

    Returns:
      A ``GroupMetrics`` (numpy / Python floats).
    """
    for name, a in (("predictions", predictions), ("labels", labels), ("groups", groups)):
        check_labels(a, name)  # integer 1-D: a float or NaN prediction is refused, not compared
    check_same_leading("predictions", predictions, "labels", labels)
    check_same_leading("predictions", predictions, "groups", groups)
    if np.shape(labels)[0] == 0:
        raise ValueError("`labels` is empty: there is nothing to evaluate.")
    n_groups = _check_groups(groups, n_groups)
    correct = (np.asarray(predictions) == np.asarray(labels)).astype(np.float64)
    g = np.asarray(groups)
    counts = np.bincount(g, minlength=n_groups)
    hits = np.bincount(g, weights=correct, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_group = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    present = counts > 0
    return GroupMetrics(per_group, counts, float(np.min(per_group[present])), float(correct.mean()),
                        float(np.mean(per_group[present])))


def balanced_group_indices(groups, *, key: jax.Array, n_groups: int | None = None) -> np.ndarray:
    """Indices subsampling every present group to the size of the smallest one (DFR's balancing).

    Args:
      groups: int ``[n]`` group ids.
      key: PRNG key choosing the subsample.
      n_groups: number of groups (default ``groups.max() + 1``).

    Returns:
      int ``[n_present_groups * min_count]`` sorted indices.

    Raises:
      TypeError: non-integer ``groups``, a raw uint32 ``key``.
      ValueError: empty or negative ``groups``, ids beyond ``n_groups``.
    """
    check_integer_labels(groups, "groups")
    check_key(key)
    n_groups = _check_groups(groups, n_groups)
    g = np.asarray(groups)
    counts = np.bincount(g, minlength=n_groups)
    m = int(counts[counts > 0].min())
    perm = np.asarray(jax.random.permutation(key, len(g)))
    keep = [perm[g[perm] == k][:m] for k in range(n_groups) if counts[k] > 0]
    return np.sort(np.concatenate(keep))
