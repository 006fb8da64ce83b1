"""One call for the whole-range view of an activation: bins, exemplars and attribute statistics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinterp._validation import check_finite, check_key, check_positive_int, check_rank, float32_if_half
from jaxinterp.midrange.binning import (
    assign_bins, bin_counts, bin_edges, bin_exemplars, check_attribute, check_values,
)
from jaxinterp.midrange.stats import AttributeStats, attribute_stats


class RangeAnalysis(NamedTuple):
    """The whole range of one activation over a dataset.

    Attributes:
      edges: ``[n_bins + 1]`` bin edges.
      bins: int32 ``[n]`` bin of every input.
      counts: ``[n_bins]`` inputs per bin.
      exemplars: int32 ``[n_bins, k]`` dataset indices sampled from every bin (``-1`` pads).
      attributes: ``{name: AttributeStats}`` for every attribute supplied.
      method: ``"quantile"`` or ``"uniform"`` (or ``"given"`` for user edges).
    """

    edges: np.ndarray
    bins: np.ndarray
    counts: np.ndarray
    exemplars: np.ndarray
    attributes: dict[str, AttributeStats]
    method: str


def range_analysis(
    values,
    attributes: Mapping[str, Any] | None = None,
    *,
    n_bins: int = 10,
    method: str = "quantile",
    edges=None,
    n_exemplars: int = 8,
    key: jax.Array,
) -> RangeAnalysis:
    """Bin ``values`` over its whole range, draw exemplars from every bin, tabulate attributes.

    Args:
      values: ``[n]`` activations of a unit, a direction (``direction_values``) or a logit.
      attributes: ``{name: [n] categorical values}`` to tabulate against the bins (labels,
        known concepts, groups).
      n_bins: number of bins (at most ``n``).
      method: ``"quantile"`` or ``"uniform"`` bins (ignored when ``edges`` is given).
      edges: optional ``[n_bins + 1]`` precomputed edges, e.g. quantiles from
        ``jaxinterp.stream(..., quantiles=...)`` over a dataset too large to hold; values
        outside them fall in the first or last bin. ``None`` (the default): edges from ``values``.
      n_exemplars: inputs sampled per bin.
      key: PRNG key for the exemplars.

    Returns:
      A ``RangeAnalysis`` (numpy arrays).

    Raises:
      ValueError: fewer samples than bins, constant or non-finite values, an attribute of the
        wrong length, non-finite or decreasing edges.
      TypeError: a raw uint32 ``key``.
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    check_key(key)
    values = float32_if_half(values)  # half precision is binned in float32
    check_values(values, n_bins=n_bins)
    attributes = dict(attributes or {})
    for name, attr in attributes.items():
        check_attribute(attr, values, name=f"attributes[{name!r}]")
    n_exemplars = check_positive_int(n_exemplars, "n_exemplars")
    if edges is None:
        edges = bin_edges(values, n_bins, method=method)
    else:
        check_rank(edges, "edges", 1)
        check_finite(edges, "edges")
        if np.shape(edges)[0] != n_bins + 1:
            raise ValueError(f"`edges` must have shape ({n_bins + 1},) for n_bins={n_bins}; got {np.shape(edges)}.")
        method = "given"
    bins = assign_bins(values, edges)
    k = min(n_exemplars, int(np.shape(values)[0]))
    stats = {name: attribute_stats(bins, attr, n_bins) for name, attr in attributes.items()}
    return RangeAnalysis(
        edges=np.asarray(edges), bins=np.asarray(bins), counts=np.asarray(bin_counts(bins, n_bins)),
        exemplars=np.asarray(bin_exemplars(bins, n_bins, k, key=key)), attributes=stats, method=method,
    )
