"""Exemplars of units and directions: top-k, bottom-k, inputs at any quantile, 2AFC stimuli.

Two ways in, same answers:

- in memory, from a response matrix ``acts [n_inputs, n_units]`` (jitted, vectorised over units);
- streamed over a dataset in bounded memory, from ``response_fn(batch) -> [batch, n_units]``
  (a captured layer, or ``directions.encode`` of it), built on ``jaxinterp.streaming``.

Ranks break ties by dataset index (the earlier input first), so results are deterministic and
invariant to any strictly increasing rescaling of a unit's responses.
"""

from __future__ import annotations

import functools

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._display import array_summary, numbers_summary, summary_html, summary_repr, summary_treescope
from jaxinterp._validation import (
    check_finite,
    check_floating,
    check_in_range,
    check_nonempty,
    check_positive_int,
    check_real,
    check_rank,
    is_concrete,
)
from jaxinterp.interpretability.similarity import bucket_size
from jaxinterp.streaming import _batches, _padded, _topk_init, _topk_update, stream

Array = jax.Array
ResponseFn = Callable[[Any], Array]

#: The in-silico 2AFC of Zimmermann et al. (2023): 20 trials, 9 references per side.
N_TRIALS = 20
N_REFS = 9
#: Klindt et al.'s code: difficulty quantiles, in the order their query shuffles are drawn, and seed.
PAPER_QUANTILES = (0.0, 0.25)
PAPER_SEED = 42
#: How the 2AFC trials are built: the authors' construction, or the unshuffled ranked variant.
PROTOCOLS = ("paper", "ranked")


class Exemplars(NamedTuple):
    """Top-k and bottom-k inputs of every unit.

    Attributes:
      top_indices, top_values: ``[units, k]`` dataset indices and responses, descending.
      bottom_indices, bottom_values: ``[units, k]`` dataset indices and responses, ascending.
    """

    top_indices: np.ndarray
    top_values: np.ndarray
    bottom_indices: np.ndarray
    bottom_values: np.ndarray

    def _summary(self) -> list[tuple[str, str | None]]:
        units, k = (np.shape(self.top_indices) + (None, None))[:2]
        return [("units", str(units)), ("k", str(k)),
                ("top_values", numbers_summary(self.top_values) or array_summary(self.top_values)),
                ("bottom_values", numbers_summary(self.bottom_values) or array_summary(self.bottom_values))]

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


class TwoAFCStimuli(NamedTuple):
    """Queries and references of the 2AFC task, for every unit.

    Attributes:
      queries: ``[units, 2, trials]`` dataset indices; ``[:, 0]`` the top (most activating)
        query of each trial, ``[:, 1]`` the bottom one.
      references: ``[units, 2, trials, refs]``; ``[:, 0]`` the top references (ranks
        ``trials + trials*j + t`` from the top), ``[:, 1]`` the bottom ones (same ranks from
        the bottom).
      lower, upper: ``[units]`` the response range kept (the ``q`` and ``1-q`` quantiles).

    With the paper protocol the queries are shuffled: ``queries[:, s, t]`` is the query of trial
    ``t`` (not necessarily the one of rank ``t``); references are never shuffled.
    """

    queries: np.ndarray
    references: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def _summary(self) -> list[tuple[str, str | None]]:
        units, _, trials, refs = (np.shape(self.references) + (None,) * 4)[:4]
        return [("units", str(units)), ("trials", str(trials)), ("refs", str(refs)),
                ("queries", array_summary(self.queries)), ("references", array_summary(self.references))]

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


def as_float_array(x, name: str, dtype=np.float32) -> np.ndarray:
    """``x`` as a numpy array of ``dtype``, accepting every floating dtype including the half ones.

    float16 and bfloat16 inputs are computed in float32 (and the results returned in float32):
    the policy of this subpackage. Raises TypeError for a non-floating ``x``.
    """
    arr = np.asarray(x)
    if arr.dtype.name != "bfloat16":  # ml_dtypes' bfloat16 is not a numpy floating subtype
        check_floating(arr, name)
    return arr.astype(dtype)


def as_compute_array(x, name: str):
    """A floating array for the jitted scoring kernels: half precision cast to float32, finite if concrete.

    Works on tracers too (then only the dtype is checked and cast). Raises TypeError for a
    non-floating ``x`` and ValueError (naming ``name``) for NaN or infinite values.
    """
    half = ("float16", "bfloat16")
    if is_concrete(x):
        arr = np.asarray(x)
        arr = as_float_array(arr, name, np.float32 if arr.dtype.name in half else arr.dtype)
        check_finite(arr, name)
        return arr
    if x.dtype.name in half:
        return x.astype(jnp.float32)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating dtype; got {x.dtype}.")
    return x


def check_acts(acts, name: str = "acts", *, min_inputs: int = 1, dtype=np.float32) -> np.ndarray:
    """Validate a response matrix ``[n_inputs, n_units]`` and return it as a numpy array of ``dtype``.

    Half-precision inputs (float16, bfloat16) are accepted and converted. Raises ValueError for a
    wrong rank, too few inputs, NaN or infinite values, or units whose response is constant over
    the inputs (they have no exemplars to rank), naming those units; TypeError for a non-floating
    dtype.
    """
    check_rank(acts, name, 2)
    a = as_float_array(acts, name, dtype)
    check_finite(a, name)
    n = int(a.shape[0])
    if n < min_inputs:
        raise ValueError(f"`{name}` has {n} inputs (rows); at least {min_inputs} are needed.")
    check_unit_ranges(a.min(0), a.max(0), name)
    return a


def check_unit_ranges(lo, hi, name: str = "acts") -> None:
    """Raise ValueError naming the units whose range is not finite (NaN/inf responses) or empty (constant)."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    bad = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"`{name}`: {bad.size} unit(s) have NaN or infinite responses: units [{shown}]; clean the "
                         f"inputs (or the response function) first.")
    const = np.flatnonzero(hi <= lo)
    if const.size:
        shown = ", ".join(str(i) for i in const[:10]) + (" ..." if const.size > 10 else "")
        raise ValueError(f"`{name}`: {const.size} unit(s) have a constant response (no variance), so their "
                         f"exemplars cannot be ranked: units [{shown}]. Drop them first (see "
                         f"`varying_units`).")


def varying_units(acts, *, tol: float = 0.0) -> np.ndarray:
    """Indices of units of ``acts [n, units]`` (finite, n >= 1) whose response range exceeds ``tol >= 0``."""
    check_rank(acts, "acts", 2)
    check_nonempty(acts, "acts")
    a = as_float_array(acts, "acts")
    check_finite(a, "acts")
    tol = check_real(tol, "tol", low=0.0)
    return np.flatnonzero(a.max(0) - a.min(0) > tol)


def _select(acts: Array, k: int, lower: Array, upper: Array) -> tuple[Array, Array, Array, Array]:
    """Masked top-k / bottom-k of every column of ``acts`` (one batch of the streamed version)."""
    units = acts.shape[1]
    idx = jnp.arange(acts.shape[0], dtype=jnp.int32)
    valid = jnp.ones((acts.shape[0], 1), bool)  # [batch, 1]: every row is real
    inside = (acts >= lower[None, :]) & (acts <= upper[None, :])
    top = _topk_update(_topk_init(units, k), jnp.where(inside, acts, -jnp.inf), idx, valid)
    bottom = _topk_update(_topk_init(units, k), jnp.where(inside, -acts, -jnp.inf), idx, valid)
    return top.indices, top.values, bottom.indices, -bottom.values


_select_jit = jax.jit(_select, static_argnums=1)


def _pad_columns(a: np.ndarray) -> np.ndarray:
    """Pad the units axis to ``bucket_size`` (repeating unit 0) so few shapes get compiled."""
    m = bucket_size(a.shape[1])
    return a if m == a.shape[1] else np.concatenate([a, np.repeat(a[:, :1], m - a.shape[1], axis=1)], axis=1)


def _select_units(a: np.ndarray, k: int, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, ...]:
    """``_select`` on column-padded numpy inputs; returns numpy ``[units, k]`` arrays."""
    units = a.shape[1]
    out = jax.device_get(_select_jit(_pad_columns(a), k, _pad_columns(lower[None])[0], _pad_columns(upper[None])[0]))
    return tuple(np.asarray(o)[:units] for o in out)


def top_bottom_exemplars(acts, k: int) -> Exemplars:
    """The ``k`` most and ``k`` least activating inputs of every unit (in memory).

    Args:
      acts: ``[n_inputs, n_units]`` responses (no constant units).
      k: exemplars per side, ``1 <= k <= n_inputs``.

    Returns:
      ``Exemplars`` with ``[n_units, k]`` fields.
    """
    a = check_acts(acts)
    k = check_positive_int(k, "k", maximum=a.shape[0], maximum_name="number of inputs in `acts`")
    inf = np.full((a.shape[1],), np.inf, np.float32)
    return Exemplars(*_select_units(a, k, -inf, inf))


def paper_top_indices(acts, k: int) -> np.ndarray:
    """The ``k`` most activating inputs of every unit, ranked as in the authors' code.

    Klindt et al. take ``np.argsort(y)[::-1][:k]``: the ascending order reversed, so tied
    responses go to the later input first (with numpy's stable sort; ``top_bottom_exemplars``
    puts the earlier input first). Without ties both agree.

    Args:
      acts: ``[n_inputs, n_units]`` responses (no constant units).
      k: exemplars, ``1 <= k <= n_inputs``.

    Returns:
      ``[n_units, k]`` int dataset indices, most activating first.
    """
    a = check_acts(acts)
    k = check_positive_int(k, "k", maximum=a.shape[0], maximum_name="number of inputs in `acts`")
    return _smallest(-np.ascontiguousarray(a.T), k, later_first=True)


def _bounds(acts: Array, q: float) -> tuple[Array, Array, Array]:
    """Per-unit ``q`` and ``1-q`` quantiles (linear interpolation) and how many inputs lie between."""
    if q == 0.0:
        lo, hi = acts.min(0), acts.max(0)
    else:
        lo, hi = jnp.quantile(acts, jnp.asarray([q, 1.0 - q], jnp.float32), axis=0)
    return lo, hi, ((acts >= lo[None, :]) & (acts <= hi[None, :])).sum(0)


_bounds_jit = jax.jit(_bounds, static_argnums=1)


def _stimuli(top_i, bottom_i, lo, hi, n_trials: int, n_refs: int) -> TwoAFCStimuli:
    """Split ranked indices ``[units, trials*(1+refs)]`` into 2AFC queries and references."""
    units = top_i.shape[0]
    ranked = np.stack([top_i, bottom_i], axis=1)  # [units, 2, trials*(1+refs)]
    queries = ranked[:, :, :n_trials]
    # rank trials + trials*j + t  ->  [units, 2, refs(j), trials(t)]  ->  [units, 2, trials, refs]
    refs = ranked[:, :, n_trials:].reshape(units, 2, n_refs, n_trials).transpose(0, 1, 3, 2)
    return TwoAFCStimuli(queries, refs, np.asarray(lo), np.asarray(hi))


def _check_2afc_args(q, n_trials, n_refs):
    q = check_real(q, "q", low=0.0, high=0.5)
    if q == 0.5:
        raise ValueError("`q` must be < 0.5 so that the kept range [q, 1-q] is not a single value.")
    return q, check_positive_int(n_trials, "n_trials"), check_positive_int(n_refs, "n_refs")


def query_orders(n_trials: int = N_TRIALS, seed: int = PAPER_SEED, draw: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seeded query shuffles of the authors' 2AFC: ``(top order [T], bottom order [T])``.

    Klindt et al.'s code seeds numpy's legacy generator with ``seed`` for every unit and, for each
    difficulty quantile in turn, draws one permutation of the ``T`` top queries and then one of
    the ``T`` bottom queries. ``draw`` selects the pair: 0 for the first quantile (``q = 0``),
    1 for the second (``q = 0.25``).

    Args:
      n_trials: number of trials ``T``.
      seed: the generator's seed (the authors use 42).
      draw: how many pairs of permutations to skip.

    Returns:
      Two int arrays ``[T]``: trial ``t`` uses the top query of rank ``top[t]`` and the bottom
      query of rank ``bottom[t]``.
    """
    n_trials = check_positive_int(n_trials, "n_trials")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an int in [0, 2**32); got {seed!r}.")
    if isinstance(draw, bool) or not isinstance(draw, (int, np.integer)) or draw < 0:
        raise ValueError(f"`draw` must be an int >= 0; got {draw!r}.")
    rs = np.random.RandomState(seed)
    for _ in range(2 * int(draw)):
        rs.permutation(n_trials)
    return rs.permutation(n_trials), rs.permutation(n_trials)


def _paper_draw(q: float, draw: int | None) -> int:
    """The authors' draw index for quantile ``q``: its position in ``PAPER_QUANTILES`` (else 0)."""
    if draw is not None:
        return draw
    return PAPER_QUANTILES.index(q) if q in PAPER_QUANTILES else 0


def _smallest(keys: np.ndarray, need: int, later_first: bool) -> np.ndarray:
    """Indices ``[rows, need]`` of the ``need`` smallest ``keys [rows, n]`` of each row, in order.

    Ties go to the earlier index (``later_first=False``: numpy's stable argsort) or to the later
    one (the stable argsort of the reversed row). A partial partition finds them; rows with ties
    at the cut are ranked in full, so the result equals the full sort's first ``need``.
    """
    part = np.argpartition(keys, need - 1, axis=1)[:, :need]
    vals = np.take_along_axis(keys, part, axis=1)
    out = np.take_along_axis(part, np.lexsort((-part if later_first else part, vals), axis=-1), axis=1)
    n = keys.shape[1]
    for r in np.flatnonzero((keys <= vals.max(axis=1, keepdims=True)).sum(axis=1) > need):
        row = keys[r]
        out[r] = (n - 1 - np.argsort(row[::-1], kind="stable")[:need]) if later_first else \
            np.argsort(row, kind="stable")[:need]
    return out


def _ranked_paper(a: np.ndarray, q: float, need: int) -> tuple[np.ndarray, ...]:
    """The authors' ranking of every column of ``a [n, units]`` (float64).

    Keeps inputs between the float64 ``q`` and ``1-q`` quantiles (linear interpolation); the
    bottom ranks are the stable ascending order, the top ranks that order reversed (so ties go
    to the earlier input at the bottom and to the later input at the top).
    Returns ``(top [units, need], bottom [units, need], lower [units], upper [units], kept [units])``.
    """
    t = np.ascontiguousarray(a.T)  # [units, n]: rows are contiguous
    lo, hi = np.quantile(t, q, axis=1), np.quantile(t, 1.0 - q, axis=1)
    keep = (t >= lo[:, None]) & (t <= hi[:, None])
    bottom = _smallest(np.where(keep, t, np.inf), need, later_first=False)
    top = _smallest(np.where(keep, -t, np.inf), need, later_first=True)
    return top, bottom, lo, hi, keep.sum(1)


def two_afc_stimuli(acts, q: float = 0.0, *, n_trials: int = N_TRIALS, n_refs: int = N_REFS,
                    protocol: str = "paper", seed: int = PAPER_SEED, draw: int | None = None) -> TwoAFCStimuli:
    """Queries and references of the in-silico 2AFC task for every unit (in memory).

    Inputs whose response lies between the unit's ``q`` and ``1-q`` quantiles are kept and
    sorted; the ``n_trials`` most and least activating are the queries, and trial ``t`` uses the
    inputs at ranks ``n_trials + n_trials*j + t`` (``j < n_refs``) from each end as references.

    ``protocol="paper"`` (default) builds the task as Klindt et al.'s code does: quantiles in
    float64; more than ``4 * n_trials * (1 + n_refs)`` inputs (800) must lie in the range
    ("twice as many as needed"); ranks from numpy's ascending argsort, reversed for the top;
    and the queries shuffled with a fixed seed (``query_orders(n_trials, seed, draw)``), so
    trial ``t`` pairs the top query of rank ``top[t]`` and the bottom query of rank
    ``bottom[t]`` with the references of trial ``t``. ``draw=None`` takes the authors' draw for
    ``q`` (0 for ``q = 0``, 1 for ``q = 0.25``).

    ``protocol="ranked"`` is the unshuffled variant: trial ``t`` uses the ``t``-th query of each
    side, float32 quantiles, ties broken by the earlier input at both ends, and at least
    ``2 * n_trials * (1 + n_refs)`` inputs (400) in the range (the streamed version builds it).

    Args:
      acts: ``[n_inputs, n_units]`` responses (no constant units; float16/bfloat16 accepted).
      q: difficulty quantile in ``[0, 0.5)`` (Zimmermann et al.: 0 and 0.25).
      n_trials: trials (queries per side).
      n_refs: references per side and trial.
      protocol: ``"paper"`` or ``"ranked"``.
      seed, draw: the query shuffle of the paper protocol (ignored by ``"ranked"``).

    Returns:
      ``TwoAFCStimuli``. Raises ValueError when a unit keeps too few inputs.
    """
    q, n_trials, n_refs = _check_2afc_args(q, n_trials, n_refs)
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}.")
    need = n_trials * (1 + n_refs)
    if protocol == "paper":
        a = check_acts(acts, min_inputs=4 * need + 1, dtype=np.float64)
        ti, bi, lo, hi, kept = _ranked_paper(a, q, need)
        _check_kept(kept, 4 * need + 1, q)
        stim = _stimuli(ti, bi, lo, hi, n_trials, n_refs)
        top_order, bottom_order = query_orders(n_trials, seed, _paper_draw(q, draw))
        queries = np.stack([stim.queries[:, 0, top_order], stim.queries[:, 1, bottom_order]], axis=1)
        return stim._replace(queries=queries)
    a = check_acts(acts, min_inputs=2 * need)
    units = a.shape[1]
    lo, hi, kept = (np.asarray(v)[:units] for v in jax.device_get(_bounds_jit(_pad_columns(a), q)))
    _check_kept(kept, 2 * need, q)
    ti, _, bi, _ = _select_units(a, need, lo, hi)
    return _stimuli(ti, bi, lo, hi, n_trials, n_refs)


def _check_kept(kept: np.ndarray, need: int, q: float) -> None:
    short = np.flatnonzero(kept < need)
    if short.size:
        shown = ", ".join(str(i) for i in short[:10]) + (" ..." if short.size > 10 else "")
        raise ValueError(f"{short.size} unit(s) keep fewer than {need} inputs between their {q} and {1 - q} "
                         f"quantiles (the paper protocol needs more than 4 * n_trials * (1 + n_refs), the ranked "
                         f"one 2 * n_trials * (1 + n_refs)): units [{shown}]; use more inputs.")


def _nearest_scores(a: Array, targets: Array) -> Array:
    """``-|a[:, u] - targets[u, l]|`` as ``[batch, units * levels]`` (unit-major slots)."""
    levels = targets.shape[1]
    return -jnp.abs(jnp.repeat(a, levels, axis=1) - targets.reshape(1, -1))


@jax.jit
def _quantile_targets(a: Array, levels: Array) -> Array:
    return jnp.quantile(a, levels, axis=0).T  # [units, levels]


def quantile_exemplars(acts, levels: Sequence[float], n: int = 1, *, targets=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` inputs of each unit whose responses are nearest to each of its quantiles (in memory).

    Args:
      acts: ``[n_inputs, n_units]`` responses.
      levels: quantile levels in ``[0, 1]`` (linear interpolation, as ``numpy.quantile``).
      n: inputs per level, nearest first (ties: the earlier input).
      targets: optional ``[n_units, len(levels)]`` response values to use instead of the quantiles.

    Returns:
      ``(indices [n_units, len(levels), n], responses [n_units, len(levels), n])``.
    """
    a = check_acts(acts)
    levels = _check_levels(levels)
    m, units = a.shape
    n = check_positive_int(n, "n", maximum=m, maximum_name="number of inputs in `acts`")
    t = _quantile_targets(a, jnp.asarray(levels, jnp.float32)) if targets is None else _check_targets(
        targets, units, len(levels))
    top = _topk_update(_topk_init(units * len(levels), n), _nearest_scores(a, t),
                       jnp.arange(m, dtype=jnp.int32), jnp.ones((m, 1), bool))
    idx = np.asarray(top.indices).reshape(units, len(levels), n)
    resp = np.asarray(a).T[np.arange(units)[:, None, None], idx]
    return idx, resp


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    levels = tuple(check_in_range(p, "levels", 0.0, 1.0) for p in levels)
    if not levels:
        raise ValueError("`levels` must hold at least one quantile level.")
    return levels


def _check_targets(targets, units: int, n_levels: int) -> Array:
    t = np.asarray(targets, np.float32)
    if t.shape != (units, n_levels):
        raise ValueError(f"`targets` must have shape ({units}, {n_levels}); got {t.shape}.")
    return jnp.asarray(t)


# -- streamed versions ------------------------------------------------------------------------------


def _stream_units(response_fn: ResponseFn, data: Any, batch_size: int):
    """Number of inputs, number of units and the batch size actually used (checks ``data``)."""
    n = _check_data(data)
    batch_size = min(check_positive_int(batch_size, "batch_size"), n)
    shape = jax.eval_shape(response_fn, _padded(data, 0, batch_size, batch_size)).shape
    if len(shape) != 2 or shape[0] != batch_size:
        raise ValueError(f"`response_fn(data)` must map a batch of `data` to responses [batch, units]; got shape "
                         f"{shape} for a batch of {batch_size}.")
    return n, shape[1], batch_size


def _check_data(data: Any) -> int:
    """The number of inputs of ``data`` (an array or pytree of arrays ``[n, ...]`` of numbers, n >= 1)."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or any(isinstance(x, (str, bytes)) or not hasattr(x, "shape") or len(x.shape) == 0
                         for x in leaves):
        raise TypeError(f"`data` must be an array [n, ...] (or a pytree of them); got {type(data).__name__}.")
    lengths = {int(x.shape[0]) for x in leaves}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"`data` must hold n >= 1 rows, the same number in every leaf; got {sorted(lengths)}.")
    return lengths.pop()


def stream_exemplars(response_fn: ResponseFn, data: Any, k: int, *, batch_size: int = 256,
                     progress: bool = False) -> Exemplars:
    """Top-k and bottom-k exemplars of every unit, streamed over ``data`` in bounded memory.

    Args:
      response_fn: ``batch [b, ...] -> responses [b, units]`` (jittable).
      data: ``[n, ...]`` array (or pytree of arrays) indexable by slices (a memmap works).
      k: exemplars per side.
      batch_size: rows per jitted batch.
      progress: show a progress bar.

    Returns:
      ``Exemplars`` identical to ``top_bottom_exemplars(response_fn(data), k)``.
    """
    n, _, batch_size = _stream_units(response_fn, data, batch_size)
    k = check_positive_int(k, "k", maximum=n, maximum_name="number of inputs in `data`")
    stats = stream(lambda b: {"u": response_fn(b)}, data, batch_size=batch_size, top_k=k, progress=progress)["u"]
    check_unit_ranges(stats.min, stats.max, "response_fn(data)")
    return Exemplars(stats.top_indices, stats.top_values, stats.bottom_indices, stats.bottom_values)


def _range_scores(a: Array, bounds: tuple[Array, Array]) -> Array:
    """``[batch, 2 * units]``: responses (then negated responses) inside ``bounds``, else -inf."""
    lo, hi = bounds
    inside = (a >= lo[None, :]) & (a <= hi[None, :])
    return jnp.concatenate([jnp.where(inside, a, -jnp.inf), jnp.where(inside, -a, -jnp.inf)], axis=1)


@functools.lru_cache(maxsize=32)
def _select_step(response_fn: ResponseFn, score_fn: Callable[[Array, Any], Array]) -> Callable:
    """One jitted streaming step, cached per (response function, score function)."""

    @jax.jit
    def step(state, batch, idx, valid, params):
        top, count, lo, hi = state
        a = response_fn(batch).astype(jnp.float32)
        scores = score_fn(a, params)
        count = count + (jnp.isfinite(scores) & valid[:, None]).sum(0)
        lo = jnp.minimum(lo, jnp.where(valid[:, None], a, jnp.inf).min(0))
        hi = jnp.maximum(hi, jnp.where(valid[:, None], a, -jnp.inf).max(0))
        return _topk_update(top, scores, idx, valid[:, None]), count, lo, hi

    return step


def _stream_select(response_fn: ResponseFn, data: Any, n: int, batch_size: int, k: int,
                   score_fn: Callable[[Array, Any], Array], params: Any, progress: bool = False,
                   reverse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streamed top-k inputs per slot of ``score_fn(responses [b, units], params) -> [b, slots]``.

    Scores of ``-inf`` mark inputs excluded from a slot; ties keep the earlier input (``reverse``:
    the later one, by streaming the rows last to first). Raises ValueError for constant units.
    Returns ``(indices [slots, k], scores [slots, k], counts [slots])`` where ``counts`` is the
    number of non-excluded inputs (indices are -1 where fewer than ``k`` exist).
    """
    first = _padded(data, 0, batch_size, batch_size)
    units = jax.eval_shape(response_fn, first).shape[1]
    slots = jax.eval_shape(lambda b: score_fn(response_fn(b).astype(jnp.float32), params), first).shape[1]
    step = _select_step(response_fn, score_fn)
    state = (_topk_init(slots, k), jnp.zeros((slots,), jnp.int32), jnp.full((units,), jnp.inf),
             jnp.full((units,), -jnp.inf))
    it = list(_batches(n, batch_size))[:: -1 if reverse else 1]
    if progress:
        from jaxinterp._progress import progress_bar

        it = progress_bar(it, desc="exemplars", leave=False)
    flip = (lambda x: x[::-1]) if reverse else (lambda x: x)
    for start, size in it:
        batch = jax.tree_util.tree_map(flip, _padded(data, start, size, batch_size))
        state = step(state, batch, flip(jnp.arange(start, start + batch_size, dtype=jnp.int32)),
                     flip(jnp.arange(batch_size) < size), params)
    top, count, lo, hi = jax.device_get(state)
    check_unit_ranges(lo, hi, "response_fn(data)")
    return np.asarray(top.indices), np.asarray(top.values), np.asarray(count)


def _float32_inside(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds keeping exactly the float32 values inside the float64 ``[lo, hi]``
    (``lo`` rounded up, ``hi`` rounded down)."""
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    lo32, hi32 = lo64.astype(np.float32), hi64.astype(np.float32)
    lo32 = np.where(lo32 < lo64, np.nextafter(lo32, np.float32(np.inf)), lo32)
    hi32 = np.where(hi32 > hi64, np.nextafter(hi32, np.float32(-np.inf)), hi32)
    return lo32.astype(np.float32), hi32.astype(np.float32)


def stream_two_afc_stimuli(response_fn: ResponseFn, data: Any, q: float = 0.0, *, n_trials: int = N_TRIALS,
                           n_refs: int = N_REFS, bounds: tuple[Any, Any] | None = None, batch_size: int = 256,
                           bins: int = 4096, progress: bool = False, protocol: str = "ranked",
                           seed: int = PAPER_SEED, draw: int | None = None) -> TwoAFCStimuli:
    """``two_afc_stimuli`` streamed over ``data`` in bounded memory.

    ``protocol="ranked"`` (default here): for ``q > 0`` a first pass
    (``jaxinterp.streaming.stream``) estimates each unit's ``q`` and ``1-q`` quantiles from a
    ``bins``-bin histogram (error about one bin width); pass ``bounds=(lower [units], upper
    [units])`` to use exact or precomputed ones instead. The selection pass keeps the
    ``n_trials * (1 + n_refs)`` top and bottom inputs inside the range (with ``q = 0`` it is the
    only pass; ``lower``/``upper`` are then -inf/inf).

    ``protocol="paper"``: the same stimuli as ``two_afc_stimuli(response_fn(data), q,
    protocol="paper", seed=seed, draw=draw)``: more than ``4 * n_trials * (1 + n_refs)`` inputs in
    range, ties at the top to the later input (a second pass streams the rows last to first),
    seeded query shuffles. ``q > 0`` needs the exact float64 quantiles as ``bounds`` (a histogram
    would change which inputs are kept).
    The jitted step is cached per ``response_fn``: pass the same function object to reuse it.
    """
    q, n_trials, n_refs = _check_2afc_args(q, n_trials, n_refs)
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}.")
    need = n_trials * (1 + n_refs)
    min_kept = 4 * need + 1 if protocol == "paper" else 2 * need
    n, units, batch_size = _stream_units(response_fn, data, batch_size)
    if n < min_kept:
        raise ValueError(f"`data` has {n} inputs; the {protocol} 2AFC task needs at least {min_kept}.")
    if bounds is not None:
        if protocol == "paper":
            lo, hi = _float32_inside(*(np.asarray(b, np.float64).reshape(units) for b in bounds))
        else:
            lo, hi = (np.asarray(b, np.float32).reshape(units) for b in bounds)
    elif q == 0.0:  # keep everything: one pass
        lo, hi = np.full(units, -np.inf, np.float32), np.full(units, np.inf, np.float32)
    elif protocol == "paper":
        raise ValueError("`bounds`: the paper protocol with q > 0 needs the exact float64 quantiles "
                         "(np.quantile(acts, [q, 1 - q], axis=0)) as bounds=(lower, upper).")
    else:
        stats = stream(lambda b: {"u": response_fn(b)}, data, batch_size=batch_size, quantiles=(q, 1.0 - q),
                       bins=bins, progress=progress)["u"]
        check_unit_ranges(stats.min, stats.max, "response_fn(data)")
        lo, hi = stats.quantiles[:, 0].astype(np.float32), stats.quantiles[:, 1].astype(np.float32)
    bounds32 = (jnp.asarray(lo), jnp.asarray(hi))
    idx, _, count = _stream_select(response_fn, data, n, batch_size, need, _range_scores, bounds32, progress)
    _check_kept(count[:units], min_kept, q)
    top_i, bottom_i = idx[:units], idx[units:]
    if protocol == "ranked":
        return _stimuli(top_i, bottom_i, lo, hi, n_trials, n_refs)
    top_i = _stream_select(response_fn, data, n, batch_size, need, _range_scores, bounds32, progress,
                           reverse=True)[0][:units]  # the authors' ties at the top: the later input first
    stim = _stimuli(top_i, bottom_i, lo, hi, n_trials, n_refs)
    top_order, bottom_order = query_orders(n_trials, seed, _paper_draw(q, draw))
    return stim._replace(queries=np.stack([stim.queries[:, 0, top_order], stim.queries[:, 1, bottom_order]], axis=1))


def stream_quantile_exemplars(response_fn: ResponseFn, data: Any, levels: Sequence[float], n: int = 1, *,
                              targets=None, batch_size: int = 256, bins: int = 4096,
                              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``quantile_exemplars`` streamed over ``data`` in bounded memory.

    A first pass estimates the quantile values with ``jaxinterp.streaming.stream`` (a histogram
    with ``bins`` bins, error at most one bin width; or pass exact ``targets [units, levels]``);
    a second pass keeps, per unit and level, the ``n`` inputs with the smallest
    ``|response - target|`` (ties: the earlier input). With the same targets the result equals
    the in-memory ``quantile_exemplars``.

    Returns:
      ``(indices [units, len(levels), n], responses [units, len(levels), n])``.
    """
    levels = _check_levels(levels)
    m, units, batch_size = _stream_units(response_fn, data, batch_size)
    n = check_positive_int(n, "n", maximum=m, maximum_name="number of inputs in `data`")
    if targets is None:
        stats = stream(lambda b: {"u": response_fn(b)}, data, batch_size=batch_size, quantiles=levels,
                       bins=bins, progress=progress)["u"]
        check_unit_ranges(stats.min, stats.max, "response_fn(data)")
        targets = stats.quantiles
    t = _check_targets(targets, units, len(levels))
    idx, _, _ = _stream_select(response_fn, data, m, batch_size, n, _nearest_scores, t, progress)
    idx = idx.reshape(units, len(levels), n)
    return idx, _gather_responses(response_fn, data, idx, batch_size)


def _gather_responses(response_fn: ResponseFn, data: Any, idx: np.ndarray, batch_size: int) -> np.ndarray:
    """Responses ``[units, ...]`` of unit ``u`` to the inputs ``idx[u, ...]`` (only those inputs)."""
    uniq, inv = np.unique(idx.reshape(-1), return_inverse=True)
    sub = jax.tree_util.tree_map(lambda leaf: leaf[uniq], data)
    from jaxinterp.streaming import apply_in_batches

    r = np.asarray(apply_in_batches(response_fn, sub, batch_size=batch_size))  # [len(uniq), units]
    flat = r[inv.reshape(idx.shape[0], -1), np.arange(idx.shape[0])[:, None]]
    return flat.reshape(idx.shape)
