"""How a categorical attribute (label, concept, group) is distributed over activation bins.

Given bin indices ``[n]`` and attribute codes ``[n]``: the contingency table, the frequency of
each attribute value per bin, the mutual information between bin and attribute (nats, as
``sklearn.metrics.mutual_info_score``) and Pearson's chi-square test of independence (as
``scipy.stats.chi2_contingency`` on the table without its empty rows and columns). The same
scores for every unit of a layer at once (``unit_attribute_scores``), vmapped over units.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import (
    check_finite, check_nonempty, check_nonnegative, check_positive_int, check_rank,
    check_same_leading, float32_if_half, is_concrete,
)
from jaxinterp.midrange.binning import _assign, _check_method, _edges, check_attribute, check_bins


class ChiSquare(NamedTuple):
    """Pearson's chi-square test of independence: statistic, p-value, degrees of freedom."""

    statistic: jax.Array
    p_value: jax.Array
    dof: jax.Array


class AttributeStats(NamedTuple):
    """Distribution of one attribute over the bins.

    Attributes:
      values: ``[n_values]`` the distinct attribute values (numpy), in code order.
      table: ``[n_bins, n_values]`` counts (contingency table).
      frequencies: ``[n_bins, n_values]`` row-normalised counts (0 for empty bins).
      mutual_information: scalar, nats.
      chi2: a ``ChiSquare``.
    """

    values: np.ndarray
    table: jax.Array
    frequencies: jax.Array
    mutual_information: jax.Array
    chi2: ChiSquare


class UnitScores(NamedTuple):
    """Per-unit association between a unit's bins and an attribute, all ``[d]``.

    ``constant`` marks units with no range (e.g. dead ReLUs): they score 0 MI, chi-square 0, p 1.
    """

    mutual_information: jax.Array
    chi2: jax.Array
    p_value: jax.Array
    constant: jax.Array


def encode_attribute(attribute) -> tuple[np.ndarray, np.ndarray]:
    """``(values, codes)``: the distinct values ``[n_values]`` and codes ``[n]`` in ``[0, n_values)``."""
    check_rank(attribute, "attribute", 1)
    values, codes = np.unique(np.asarray(attribute), return_inverse=True)
    return values, codes.astype(np.int32)


@functools.partial(jax.jit, static_argnames=("n_bins", "n_values"))
def _table(bins, codes, n_bins: int, n_values: int) -> jax.Array:
    return jnp.zeros((n_bins, n_values), jnp.float32).at[bins, codes].add(1.0)


def contingency_table(bins, codes, n_bins: int, n_values: int) -> jax.Array:
    """Counts ``[n_bins, n_values]`` of inputs per (bin, attribute code).

    Args:
      bins: int ``[n]`` bin indices in ``[0, n_bins)``.
      codes: int ``[n]`` attribute codes in ``[0, n_values)`` (see ``encode_attribute``).
      n_bins, n_values: table shape.

    Raises:
      TypeError: non-integer ``bins`` or ``codes``.
      ValueError: empty inputs, ids outside the table, different lengths.
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    n_values = check_positive_int(n_values, "n_values")
    check_bins(bins, n_bins)
    check_bins(codes, n_values, "codes")
    check_same_leading("bins", bins, "codes", codes)
    return _table(jnp.asarray(bins), jnp.asarray(codes), n_bins, n_values)


def _check_table(table) -> None:
    check_rank(table, "table", 2)
    check_nonempty(table, "table")
    check_finite(table, "table")
    check_nonnegative(table, "table")
    if is_concrete(table) and not np.sum(np.asarray(table, np.float64)) > 0:
        raise ValueError("`table` holds no counts (its sum is 0); there is nothing to test.")


@jax.jit
def _mutual_information(table: jax.Array) -> jax.Array:
    table = table.astype(jnp.float32)
    n = table.sum()
    p = table / n
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    safe = jnp.where(p > 0, p / jnp.where(outer > 0, outer, 1.0), 1.0)
    return jnp.maximum(jnp.sum(jnp.where(p > 0, p * jnp.log(safe), 0.0)), 0.0)


def mutual_information(table) -> jax.Array:
    """Mutual information (nats) between the row and column variables of a contingency table.

    Args:
      table: ``[r, c]`` non-negative finite counts with a positive total (any scale).

    Raises:
      ValueError: an empty, all-zero, negative or non-finite table.
    """
    _check_table(table)
    return _mutual_information(jnp.asarray(float32_if_half(table)))


@functools.partial(jax.jit, static_argnames=("correction",))
def _chi_square(table: jax.Array, correction: bool) -> ChiSquare:
    table = table.astype(jnp.float32)
    n = table.sum()
    safe_n = jnp.where(n > 0, n, 1.0)
    rows, cols = table.sum(1), table.sum(0)
    # in proportions of the total (p = counts / n): the statistic n * sum((p - e)^2 / e) does not
    # overflow float32 for large counts, where (counts - expected)^2 would
    expected = (rows / safe_n)[:, None] * (cols / safe_n)[None, :]
    dof = (jnp.sum(rows > 0) - 1) * (jnp.sum(cols > 0) - 1)
    dof = jnp.maximum(dof, 0)
    observed = table / safe_n
    if correction:  # Yates' continuity correction (half a count), applied (as scipy does) only when dof == 1
        diff = expected - observed
        adjusted = observed + jnp.sign(diff) * jnp.minimum(0.5 / safe_n, jnp.abs(diff))
        observed = jnp.where(dof == 1, adjusted, observed)
    terms = jnp.where(expected > 0, (observed - expected) ** 2 / jnp.where(expected > 0, expected, 1.0), 0.0)
    stat = jnp.where(dof > 0, n * terms.sum(), 0.0)
    p = jnp.where(dof > 0, jax.scipy.stats.chi2.sf(stat, jnp.maximum(dof, 1).astype(stat.dtype)), 1.0)
    return ChiSquare(stat, p, dof)


def chi_square(table, *, correction: bool = True) -> ChiSquare:
    """Pearson's chi-square test of independence on a contingency table ``[r, c]``.

    Empty rows and columns are ignored (``dof = (non-empty rows - 1) * (non-empty cols - 1)``);
    with ``correction`` Yates' correction is applied when ``dof == 1``, as in
    ``scipy.stats.chi2_contingency``. A table with ``dof == 0`` gives statistic 0 and p-value 1.
    Counts may have any scale (the statistic is computed from proportions times the total, so
    it stays finite for totals up to float32's range).

    Raises:
      ValueError: an empty, all-zero, negative or non-finite ``table``.
    """
    _check_table(table)
    return _chi_square(jnp.asarray(float32_if_half(table)), bool(correction))


def bin_frequencies(table) -> jax.Array:
    """Row-normalised table ``[n_bins, n_values]``: the attribute's distribution in each bin."""
    _check_table(table)
    t = jnp.asarray(table, jnp.float32)
    rows = t.sum(1, keepdims=True)
    return jnp.where(rows > 0, t / jnp.where(rows > 0, rows, 1.0), 0.0)


def attribute_stats(bins, attribute, n_bins: int, *, correction: bool = True) -> AttributeStats:
    """Contingency table, per-bin frequencies, mutual information and chi-square of one attribute.

    Args:
      bins: int ``[n]`` bin index of every input.
      attribute: ``[n]`` any categorical values (ints, negative ints, floats, strings, bools; not NaN).
      n_bins: number of bins.
      correction: Yates' correction when the table has one degree of freedom.

    Raises:
      TypeError: non-integer ``bins``; ``attribute`` not an array.
      ValueError: empty inputs, bins outside ``[0, n_bins)``, NaN attribute values, lengths differ.
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    check_bins(bins, n_bins)
    check_attribute(attribute, bins, values_name="bins")
    values, codes = encode_attribute(attribute)
    table = contingency_table(bins, codes, n_bins, len(values))
    return AttributeStats(values, table, bin_frequencies(table), _mutual_information(table),
                          _chi_square(table, bool(correction)))


@functools.partial(jax.jit, static_argnames=("n_bins", "n_values", "method"))
def _unit_scores(features, codes, n_bins: int, n_values: int, method: str) -> UnitScores:
    def one(v):
        table = _table(_assign(v, _edges(v, n_bins, method)), codes, n_bins, n_values)
        chi = _chi_square(table, False)
        return _mutual_information(table), chi.statistic, chi.p_value

    mi, stat, p = jax.vmap(one, in_axes=1)(features)
    constant = features.max(0) == features.min(0)
    return UnitScores(jnp.where(constant, 0.0, mi), jnp.where(constant, 0.0, stat),
                      jnp.where(constant, 1.0, p), constant)


def unit_attribute_scores(features, attribute, *, n_bins: int = 10, method: str = "quantile") -> UnitScores:
    """Bin every unit of a layer and score how much its bins tell about an attribute.

    Args:
      features: ``[n, d]`` activations of ``d`` units (e.g. the penultimate layer) over a dataset.
      attribute: ``[n]`` categorical values (any, as in ``attribute_stats``; not NaN).
      n_bins: bins per unit (at most ``n``).
      method: ``"quantile"`` or ``"uniform"`` binning, per unit.

    Returns:
      ``UnitScores`` with ``[d]`` mutual information (nats), chi-square statistics (no
      continuity correction) and p-values; constant units are marked and score zero.
    """
    check_rank(features, "features", 2)
    check_nonempty(features, "features")
    check_finite(features, "features")
    check_attribute(attribute, features, values_name="features")
    n_bins = check_positive_int(n_bins, "n_bins")
    _check_method(method)
    if np.shape(features)[0] < n_bins:
        raise ValueError(f"`features` has {np.shape(features)[0]} sample(s), fewer than n_bins={n_bins}.")
    values, codes = encode_attribute(attribute)
    return _unit_scores(jnp.asarray(features, jnp.float32), jnp.asarray(codes), n_bins, len(values), method)
