"""Reduce activations over a dataset larger than memory, one fixed-size batch at a time.

``stream(fn, data, batch_size=...)`` applies ``fn`` (e.g. a captured model) to fixed-size
batches under ONE compiled program (the last batch is padded and masked) and folds each batch
into running per-unit statistics:

- moments: count, mean and variance (Chan et al.'s parallel update, numerically stable);
- range and a histogram sketch per unit, for quantiles (a second pass, since the bin edges
  need the range first; the error of a quantile is at most one bin width);
- the top-k and bottom-k values per unit with the dataset indices of their inputs.

Memory is bounded by the batch size, ``k`` and the number of bins, never by the dataset size.
Each activation ``[batch, *unit_shape]`` is treated as ``prod(unit_shape)`` units; results keep
``unit_shape``. Use ``reduce_spatial`` to turn conv feature maps into per-channel units first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._display import (array_summary, is_concrete, number, numbers_summary, summary_html, summary_repr,
                                summary_treescope)
from jaxinterp._validation import check_finite, check_nonempty, check_positive_int

Activations = Mapping[str, jax.Array]

__all__ = ["UnitStats", "stream", "apply_in_batches", "reduce_spatial"]


NAN_POLICIES = ("raise", "omit")


class UnitStats(NamedTuple):
    """Per-unit statistics of one activation; every field has shape ``[*unit_shape]`` or more.

    Attributes:
      count: number of inputs seen (scalar).
      mean: ``[*unit_shape]`` mean.
      var: ``[*unit_shape]`` population variance (float64: no overflow for large activations).
      min, max: ``[*unit_shape]`` range.
      top_values, top_indices: ``[*unit_shape, k]`` largest values (descending) and the dataset
        indices of the inputs that produced them.
      bottom_values, bottom_indices: ``[*unit_shape, k]`` smallest values (ascending) and indices.
      quantiles: ``[*unit_shape, len(levels)]`` quantile estimates (None unless requested).
      quantile_levels: the requested levels (None unless requested).
      n_valid: ``[*unit_shape]`` values that entered the statistics (``count`` unless
        ``nan_policy="omit"`` left non-finite values out); None for an empty summary.
    """

    count: int
    mean: np.ndarray
    var: np.ndarray
    min: np.ndarray
    max: np.ndarray
    top_values: np.ndarray | None
    top_indices: np.ndarray | None
    bottom_values: np.ndarray | None
    bottom_indices: np.ndarray | None
    quantiles: np.ndarray | None = None
    quantile_levels: tuple[float, ...] | None = None
    n_valid: np.ndarray | None = None

    @property
    def std(self) -> np.ndarray:
        """``[*unit_shape]`` population standard deviation."""
        return np.sqrt(self.var)

    def _summary(self) -> list[tuple[str, str | None]]:
        """Inputs seen, unit shape, top-k and quantile sizes, and the spread of means and ranges."""
        k = None if self.top_values is None else str(self.top_values.shape[-1])
        levels = None if self.quantile_levels is None else (
            "(" + ", ".join(number(v, "g") or array_summary(v) for v in self.quantile_levels) + ")")
        return [("count", number(self.count) or array_summary(self.count)),
                ("unit_shape", str(tuple(int(d) for d in np.shape(self.mean)))),
                ("means", numbers_summary(self.mean) or array_summary(self.mean)),
                ("min", _extreme(self.min, np.min)), ("max", _extreme(self.max, np.max)),
                ("top_k", k), ("quantile_levels", levels)]

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


def _extreme(x: Any, reduce: Callable) -> str | None:
    """The smallest (``np.min``) or largest (``np.max``) value over units, or its shape under ``jit``."""
    if x is None:
        return None
    if not is_concrete(x) or np.size(x) == 0:
        return array_summary(x)
    return number(reduce(np.asarray(x)))


class _Moments(NamedTuple):
    """Running moments per unit; the sum of squared deviations is kept as ``scale**2 * m2``."""

    count: jax.Array  # [units] values counted
    mean: jax.Array  # [units]
    m2: jax.Array  # [units] sum of squared deviations divided by scale**2 (bounded: no overflow)
    scale: jax.Array  # [units] largest |value| seen
    min: jax.Array
    max: jax.Array
    nonfinite: jax.Array  # scalar: non-finite values met among valid rows


class _TopK(NamedTuple):
    values: jax.Array  # [units, k]
    indices: jax.Array  # [units, k]


def reduce_spatial(acts: Activations, how: str = "mean", *, keep_rank: int = 2) -> dict[str, jax.Array]:
    """Turn feature maps into per-channel units by reducing their spatial axes.

    Args:
      acts: name -> ``[batch, *spatial, channels]`` (arrays of rank <= ``keep_rank`` pass through
        unchanged; the others must be non-empty and, when concrete, finite).
      how: ``"mean"``, ``"max"`` or ``"center"`` (the value at the spatial centre).
      keep_rank: arrays of this rank or lower are left unchanged (``[batch, units]`` by default).

    Returns:
      name -> ``[batch, channels]``.
    """
    if how not in ("mean", "max", "center"):
        raise ValueError(f"`how` must be 'mean', 'max' or 'center'; got {how!r}.")
    if not isinstance(acts, Mapping):
        raise TypeError(f"`acts` must be a dict name -> [batch, ...] array; got {type(acts).__name__}.")
    keep_rank = check_positive_int(keep_rank, "keep_rank")
    out = {}
    for name, a in acts.items():
        if not hasattr(a, "ndim") or not hasattr(a, "dtype"):
            raise TypeError(f"`acts[{name!r}]` must be an array [batch, ...]; got {type(a).__name__}.")
        if a.ndim > keep_rank:
            check_nonempty(a, f"acts[{name!r}]")
            check_finite(a, f"acts[{name!r}]")
        if a.ndim <= keep_rank:
            out[name] = a
            continue
        axes = tuple(range(1, a.ndim - 1))
        if how == "mean":
            out[name] = a.mean(axis=axes)
        elif how == "max":
            out[name] = a.max(axis=axes)
        else:
            centre = tuple(s // 2 for s in a.shape[1:-1])
            out[name] = a[(slice(None), *centre, slice(None))]
    return out


def _flat(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0], -1).astype(jnp.float32)


def _moments_init(units: int) -> _Moments:
    z = jnp.zeros((units,), jnp.float32)
    return _Moments(z, z, z, z, jnp.full((units,), jnp.inf, jnp.float32),
                    jnp.full((units,), -jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))


def _moments_update(s: _Moments, a: jax.Array, ok: jax.Array, nonfinite: jax.Array) -> _Moments:
    """Merge the values ``a [batch, units]`` where ``ok`` into ``s`` (Chan et al., on scaled values).

    Values are divided by the running largest magnitude per unit before any square is taken, so
    activations of 1e30 neither overflow float32 nor lose the variance.
    """
    w = ok.astype(jnp.float32)
    safe = jnp.where(ok, a, 0.0)
    scale = jnp.maximum(s.scale, jnp.max(jnp.abs(safe), axis=0))
    div = jnp.where(scale > 0, scale, 1.0)
    a_s = safe / div[None, :]
    n_b = w.sum(0)
    n = s.count + n_b
    mean_b_s = (a_s * w).sum(0) / jnp.maximum(n_b, 1.0)
    m2_b = (((a_s - mean_b_s[None, :]) ** 2) * w).sum(0)
    delta = mean_b_s - s.mean / div
    mean = s.mean + delta * div * n_b / jnp.maximum(n, 1.0)
    m2 = s.m2 * (s.scale / div) ** 2 + m2_b + delta**2 * s.count * n_b / jnp.maximum(n, 1.0)
    lo = jnp.where(ok, a, jnp.inf).min(0)
    hi = jnp.where(ok, a, -jnp.inf).max(0)
    return _Moments(n, mean, m2, scale, jnp.minimum(s.min, lo), jnp.maximum(s.max, hi), s.nonfinite + nonfinite)


def _topk_init(units: int, k: int) -> _TopK:
    return _TopK(jnp.full((units, k), -jnp.inf, jnp.float32), jnp.full((units, k), -1, jnp.int32))


def _topk_update(s: _TopK, a: jax.Array, idx: jax.Array, ok: jax.Array) -> _TopK:
    """Keep the k largest of (current top-k, this batch) per unit; ties keep the earlier index."""
    vals = jnp.where(ok, a, -jnp.inf).T  # [units, batch]
    idxs = jnp.broadcast_to(idx[None, :], vals.shape)
    all_v = jnp.concatenate([s.values, vals], axis=1)
    all_i = jnp.concatenate([s.indices, idxs], axis=1)
    top_v, pos = jax.lax.top_k(all_v, s.values.shape[1])
    return _TopK(top_v, jnp.take_along_axis(all_i, pos, axis=1))


def _histogram_update(hist: jax.Array, a: jax.Array, ok: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Add ``a [batch, units]`` (where ``ok``) to per-unit histograms ``hist [units, bins]`` over [lo, hi]."""
    bins = hist.shape[1]
    width = jnp.where(hi > lo, hi - lo, 1.0)[None, :]
    lo = lo[None, :]
    frac = jnp.where(ok, (jnp.where(ok, a, lo) - lo) / width, 0.0)  # in [0, 1]: no overflow for 1e30
    pos = jnp.clip((frac * bins).astype(jnp.int32), 0, bins - 1)  # [batch, units]
    onehot = jax.nn.one_hot(pos, bins, dtype=jnp.float32) * ok.astype(jnp.float32)[:, :, None]
    return hist + onehot.sum(0)


def _histogram_quantiles(hist: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles ``[units, len(levels)]`` by linear interpolation of the histogram CDF."""
    units, bins = hist.shape
    cdf = np.cumsum(hist, axis=1)
    total = cdf[:, -1:]
    out = np.empty((units, len(levels)), np.float64)
    edges = lo[:, None] + (hi - lo)[:, None] * np.arange(bins + 1)[None, :] / bins
    for j, q in enumerate(levels):
        target = q * total[:, 0]
        b = np.minimum((cdf < target[:, None]).sum(1), bins - 1)
        before = np.where(b > 0, cdf[np.arange(units), b - 1], 0.0)
        inbin = np.maximum(hist[np.arange(units), b], 1e-12)
        frac = np.clip((target - before) / inbin, 0.0, 1.0)
        out[:, j] = edges[np.arange(units), b] + frac * (edges[np.arange(units), b + 1] - edges[np.arange(units), b])
    return out


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(batch_size, n - start)


def _padded(data: Any, start: int, size: int, batch_size: int) -> Any:
    """Rows ``start:start+size`` of every leaf of ``data``, zero-padded to ``batch_size``."""

    def take(leaf):
        block = np.asarray(leaf[start : start + size])
        if size < batch_size:
            pad = np.zeros((batch_size - size, *block.shape[1:]), block.dtype)
            block = np.concatenate([block, pad], axis=0)
        return block

    return jax.tree_util.tree_map(take, data)


def _check_data(data: Any) -> int:
    """Number of rows of ``data`` (an array or pytree of arrays ``[n, ...]``); errors name the problem."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("`data` is empty: expected an array or a pytree of arrays [n, ...].")
    if any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("`data` must hold arrays with a leading axis of rows [n, ...]; got a scalar.")
    n = int(np.shape(leaves[0])[0])
    if any(int(np.shape(leaf)[0]) != n for leaf in leaves):
        raise ValueError("every array in `data` must have the same length along axis 0.")
    if n == 0:
        raise ValueError("`data` has 0 rows; there is nothing to compute.")
    return n


def _activation_shapes(fn: Callable, data: Any, batch_size: int) -> dict[str, Any]:
    shapes = jax.eval_shape(fn, _padded(data, 0, batch_size, batch_size))
    if not isinstance(shapes, Mapping) or not shapes:
        raise ValueError("`fn` must return a non-empty dict {name: activations [batch, ...]}.")
    for name, s in shapes.items():
        if not s.shape or s.shape[0] != batch_size:
            raise ValueError(f"activation {name!r} has shape {s.shape}; expected a leading batch axis of "
                             f"{batch_size} (the batch size).")
    return dict(shapes)


def _run_pass(step_fn: Callable, state: Any, data: Any, n: int, batch_size: int, progress: bool, desc: str) -> Any:
    it = _batches(n, batch_size)
    if progress:
        from jaxinterp._progress import progress_bar  # tqdm is imported on use: it is slow to import

        it = progress_bar(list(it), desc=desc, leave=False)
    for start, size in it:
        batch = _padded(data, start, size, batch_size)
        idx = jnp.arange(start, start + batch_size, dtype=jnp.int32)
        valid = jnp.arange(batch_size) < size
        state = step_fn(state, batch, idx, valid)
    return state


def _usable(a: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(ok [batch, units], non-finite count)``: valid rows' finite values, and how many were not."""
    finite = jnp.isfinite(a)
    return valid[:, None] & finite, jnp.sum(valid[:, None] & ~finite, dtype=jnp.int32)


def _raise_nonfinite(state: dict) -> None:
    bad = {name: int(s["m"].nonfinite) for name, s in state.items()}
    bad = {name: k for name, k in bad.items() if k}
    if bad:
        raise ValueError(f"stream: non-finite activations (NaN or inf), count per activation: {bad}; pass "
                         "nan_policy='omit' to leave them out of the statistics.")


def _unit_stats(s: dict, shape: tuple[int, ...], n: int, top_k: int, hist, quantiles) -> UnitStats:
    m = jax.device_get(s["m"])
    valid = np.asarray(m.count, np.float64)
    scale = np.where(np.asarray(m.scale) > 0, np.asarray(m.scale, np.float64), 1.0)
    var = scale**2 * np.asarray(m.m2, np.float64) / np.maximum(valid, 1.0)
    fields: dict[str, Any] = dict(
        count=n, mean=np.where(valid > 0, np.asarray(m.mean), np.nan).reshape(shape), var=var.reshape(shape),
        min=np.asarray(m.min).reshape(shape), max=np.asarray(m.max).reshape(shape),
        top_values=None, top_indices=None, bottom_values=None, bottom_indices=None,
        n_valid=valid.astype(np.int64).reshape(shape),
    )
    if top_k:
        t, b = jax.device_get(s["top"]), jax.device_get(s["bottom"])
        fields.update(top_values=np.asarray(t.values).reshape(*shape, top_k),
                      top_indices=np.asarray(t.indices).reshape(*shape, top_k),
                      bottom_values=(-np.asarray(b.values)).reshape(*shape, top_k),
                      bottom_indices=np.asarray(b.indices).reshape(*shape, top_k))
    if hist is not None:
        lo = np.where(valid > 0, np.asarray(m.min, np.float64), 0.0)
        hi = np.where(valid > 0, np.asarray(m.max, np.float64), 0.0)
        q = _histogram_quantiles(np.asarray(hist, np.float64), lo, hi, quantiles)
        q = np.where(valid[:, None] > 0, q, np.nan)  # a unit without finite values has no quantiles
        fields.update(quantiles=q.reshape(*shape, len(quantiles)), quantile_levels=quantiles)
    return UnitStats(**fields)


def stream(
    fn: Callable[[Any], Activations],
    data: Any,
    *,
    batch_size: int = 256,
    top_k: int = 0,
    quantiles: Sequence[float] | None = None,
    bins: int = 512,
    progress: bool = False,
    nan_policy: str = "raise",
) -> dict[str, UnitStats]:
    """Per-unit statistics of ``fn``'s activations over ``data``, in bounded memory.

    Args:
      fn: maps a batch (a pytree of arrays ``[batch, ...]``) to ``{name: [batch, *unit_shape]}``,
        e.g. ``lambda x: capture(model.apply)(params, x)[1]``. It is jitted once.
      data: an array (or pytree of arrays) ``[n, ...]`` indexable by slices, ``n >= 1``; a numpy
        memmap works, so the dataset never has to be in memory.
      batch_size: rows per batch; the last batch is padded and masked.
      top_k: keep the ``top_k`` largest and smallest values per unit with their indices (0: off).
      quantiles: levels in [0, 1] to estimate from a ``bins``-bin histogram (second pass).
      bins: histogram resolution for quantiles.
      progress: show a tqdm bar.
      nan_policy: ``"raise"`` (a ValueError after the pass when any activation is NaN or
        infinite) or ``"omit"`` (non-finite values are left out of every statistic of their unit;
        ``UnitStats.n_valid`` counts the values kept, and a unit with none has NaN mean).

    Returns:
      ``{name: UnitStats}``.
    """
    n = _check_data(data)
    batch_size = min(check_positive_int(batch_size, "batch_size"), n)
    if isinstance(top_k, bool) or not (isinstance(top_k, (int, np.integer)) and top_k == 0):
        top_k = check_positive_int(top_k, "top_k", maximum=n, maximum_name="number of inputs in `data`")
    if quantiles is not None:
        quantiles = tuple(float(q) for q in quantiles)
        if any(not 0.0 <= q <= 1.0 for q in quantiles):
            raise ValueError(f"`quantiles` must lie in [0, 1]; got {quantiles}.")
        check_positive_int(bins, "bins")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"`nan_policy` must be one of {NAN_POLICIES}; got {nan_policy!r}.")
    shapes = _activation_shapes(fn, data, batch_size)
    units = {name: int(np.prod(s.shape[1:], dtype=np.int64)) for name, s in shapes.items()}
    init = {name: {"m": _moments_init(u), **({"top": _topk_init(u, top_k), "bottom": _topk_init(u, top_k)}
                                             if top_k else {})} for name, u in units.items()}

    @jax.jit
    def step(state, batch, idx, valid):
        new = {}
        for name, a in fn(batch).items():
            a = _flat(a)
            ok, bad = _usable(a, valid)
            new[name] = dict(m=_moments_update(state[name]["m"], a, ok, bad))
            if top_k:
                new[name]["top"] = _topk_update(state[name]["top"], a, idx, ok)
                new[name]["bottom"] = _topk_update(state[name]["bottom"], -a, idx, ok)
        return new

    state = _run_pass(step, init, data, n, batch_size, progress, "streaming statistics")
    if nan_policy == "raise":
        _raise_nonfinite(state)
    hists = {name: None for name in units}
    if quantiles is not None:
        lo = {name: state[name]["m"].min for name in units}
        hi = {name: state[name]["m"].max for name in units}

        @jax.jit
        def hist_step(h, batch, idx, valid):
            return {name: _histogram_update(h[name], _flat(a), _usable(_flat(a), valid)[0], lo[name], hi[name])
                    for name, a in fn(batch).items()}

        hists = _run_pass(hist_step, {name: jnp.zeros((u, bins), jnp.float32) for name, u in units.items()},
                          data, n, batch_size, progress, "quantile sketch")
    return {name: _unit_stats(s, tuple(shapes[name].shape[1:]), n, top_k, hists[name], quantiles)
            for name, s in state.items()}


def apply_in_batches(fn: Callable[[Any], Any], data: Any, *, batch_size: int = 256) -> Any:
    """Apply ``fn`` to ``data [n, ...]`` in fixed-size padded batches (one compilation).

    Returns ``fn``'s outputs for all ``n`` rows (``n >= 1``), concatenated as numpy arrays; use
    ``stream`` when the outputs themselves do not fit in memory.
    """
    n = _check_data(data)
    batch_size = min(check_positive_int(batch_size, "batch_size"), n)
    jitted = jax.jit(fn)
    parts = []
    for start, size in _batches(n, batch_size):
        out = jitted(_padded(data, start, size, batch_size))
        parts.append(jax.tree_util.tree_map(lambda a, size=size: np.asarray(a[:size]), out))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *parts)
