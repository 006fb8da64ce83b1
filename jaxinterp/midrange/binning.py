"""Bins over the whole range of one activation (a unit, a direction or a logit) and exemplars.

Values are one number per input ``[n]``. Quantile bins hold (about) equally many inputs;
equal-width bins split ``[min, max]`` into equal intervals. A value ``v`` falls in bin ``b``
when ``edges[b] <= v < edges[b + 1]`` (the last bin also holds the maximum), exactly like
``np.digitize(v, edges[1:-1])``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import (
    check_finite, check_integer_labels, check_key, check_nonempty, check_positive_int, check_rank, check_same_leading,
    float32_if_half, is_concrete,
)

METHODS = ("quantile", "uniform")


def check_values(values, name: str = "values", *, n_bins: int | None = None) -> None:
    """Validate 1-D finite values with at least ``n_bins`` entries and a non-zero range."""
    check_rank(values, name, 1)
    check_finite(values, name)
    n = int(np.shape(values)[0])
    if n_bins is not None and n < n_bins:
        raise ValueError(f"`{name}` has {n} sample(s), fewer than n_bins={n_bins}; use fewer bins or more data.")
    if is_concrete(values) and n:
        arr = np.asarray(values)
        if arr.min() == arr.max():
            raise ValueError(f"`{name}` is constant (every value equals {arr.min()}); there is no range to bin.")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")


@functools.partial(jax.jit, static_argnames=("n_bins", "method"))
def _edges(values: jax.Array, n_bins: int, method: str) -> jax.Array:
    values = values.astype(jnp.promote_types(values.dtype, jnp.float32))
    if method == "quantile":
        return jnp.quantile(values, jnp.linspace(0.0, 1.0, n_bins + 1, dtype=values.dtype))
    return jnp.linspace(values.min(), values.max(), n_bins + 1, dtype=values.dtype)


def bin_edges(values, n_bins: int = 10, *, method: str = "quantile") -> jax.Array:
    """Edges ``[n_bins + 1]`` of quantile or equal-width bins over ``values``.

    Args:
      values: ``[n]`` activations of one unit, direction or logit over a dataset.
      n_bins: number of bins (at most ``n``).
      method: ``"quantile"`` (linear-interpolated quantiles, as ``np.quantile``) or ``"uniform"``.

    Half-precision values are binned in float32.

    Returns:
      Non-decreasing edges ``[n_bins + 1]`` from ``min(values)`` to ``max(values)``.

    Raises:
      ValueError: fewer samples than bins, constant or non-finite values, unknown method.
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    _check_method(method)
    check_values(values, n_bins=n_bins)
    return _edges(jnp.asarray(float32_if_half(values)), n_bins, method)


@jax.jit
def _assign(values: jax.Array, edges: jax.Array) -> jax.Array:
    return jnp.searchsorted(edges[1:-1], values, side="right").astype(jnp.int32)


def assign_bins(values, edges) -> jax.Array:
    """Bin index ``[n]`` in ``[0, len(edges) - 1)`` of every value (values outside are clipped).

    Args:
      values: ``[n]`` values.
      edges: ``[n_bins + 1]`` non-decreasing edges (from ``bin_edges`` or ``streaming.stream``).

    Returns:
      int32 ``[n]``; equals ``np.digitize(values, edges[1:-1])``.
    """
    check_rank(values, "values", 1)
    check_nonempty(values, "values")
    check_finite(values, "values")
    check_rank(edges, "edges", 1)
    check_finite(edges, "edges")
    if np.shape(edges)[0] < 2:
        raise ValueError(f"`edges` needs at least 2 entries (one bin); got shape {np.shape(edges)}.")
    if is_concrete(edges) and np.any(np.diff(np.asarray(edges)) < 0):
        raise ValueError("`edges` must be non-decreasing.")
    return _assign(jnp.asarray(float32_if_half(values)), jnp.asarray(float32_if_half(edges)))


def check_bins(bins, n_bins: int, name: str = "bins"):
    """Raise unless ``bins`` holds integer bin ids in ``[0, n_bins)`` ``[n]`` (only the rank and
    dtype of a tracer are checked)."""
    if not is_concrete(bins):
        check_rank(bins, name, 1)
        if not jnp.issubdtype(bins.dtype, jnp.integer):
            raise TypeError(f"`{name}` must hold integer bin ids; got dtype {bins.dtype}.")
        return bins
    arr = check_integer_labels(bins, name)
    if arr.max() >= n_bins:
        raise ValueError(f"`{name}` must lie in [0, n_bins={n_bins}); got maximum {arr.max()}.")
    return arr


def bin_counts(bins, n_bins: int) -> jax.Array:
    """Number of inputs ``[n_bins]`` in each bin."""
    check_bins(bins, check_positive_int(n_bins, "n_bins"))
    return jnp.bincount(jnp.asarray(bins), length=check_positive_int(n_bins, "n_bins"))


@functools.partial(jax.jit, static_argnames=("n_bins", "k"))
def _exemplars(bins: jax.Array, key: jax.Array, n_bins: int, k: int) -> jax.Array:
    priority = jax.random.uniform(key, bins.shape)

    def one(b):
        order = jnp.argsort(jnp.where(bins == b, priority, jnp.inf))
        take = order[:k]
        return jnp.where(bins[take] == b, take, -1)

    return jax.vmap(one)(jnp.arange(n_bins))


def bin_exemplars(bins, n_bins: int, k: int = 8, *, key: jax.Array) -> jax.Array:
    """Indices of ``k`` inputs drawn at random (without replacement) from every bin.

    Args:
      bins: int ``[n]`` bin index of every input.
      n_bins: number of bins.
      k: exemplars per bin (at most ``n``).
      key: PRNG key; the same key gives the same exemplars.

    Returns:
      int32 ``[n_bins, k]`` dataset indices; ``-1`` pads bins holding fewer than ``k`` inputs.

    Raises:
      TypeError: non-integer ``bins``, a raw uint32 ``key``.
      ValueError: empty ``bins``, ids outside ``[0, n_bins)``, ``k`` outside ``[1, n]``.
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    check_bins(bins, n_bins)
    k = check_positive_int(k, "k", maximum=int(np.shape(bins)[0]), maximum_name="number of inputs")
    check_key(key)
    return _exemplars(jnp.asarray(bins, jnp.int32), key, n_bins, k).astype(jnp.int32)


def direction_values(features, direction, *, normalize: bool = True) -> jax.Array:
    """Projection ``[n]`` of features ``[n, d]`` on a direction ``[d]`` (unit-normalised by default)."""
    check_rank(features, "features", 2)
    check_nonempty(features, "features")
    check_finite(features, "features")
    check_rank(direction, "direction", 1)
    check_finite(direction, "direction")
    if np.shape(direction)[0] != np.shape(features)[1]:
        raise ValueError(f"`direction` must have shape ({np.shape(features)[1]},) to match `features` "
                         f"{tuple(np.shape(features))}; got {tuple(np.shape(direction))}.")
    d = jnp.asarray(direction, jnp.float32)
    if normalize:
        norm = jnp.linalg.norm(d)
        if is_concrete(norm) and float(norm) == 0.0:
            raise ValueError("`direction` is the zero vector; it has no direction to project on.")
        d = d / norm
    return jnp.asarray(features).astype(d.dtype) @ d


def check_attribute(attribute, values, name: str = "attribute", values_name: str = "values") -> None:
    """Raise unless ``attribute`` is 1-D categorical values, one per entry of ``values``, without NaN.

    Any categorical values are accepted (ints, negative ints, floats, strings, bools); NaN is
    refused (it is no category: each NaN would count as its own value).
    """
    if attribute is None or isinstance(attribute, str):
        raise TypeError(f"`{name}` must be an array of categorical values [n]; got {type(attribute).__name__}.")
    check_rank(attribute, name, 1)
    check_same_leading(values_name, values, name, attribute)
    check_nonempty(attribute, name)
    check_finite(attribute, name)
