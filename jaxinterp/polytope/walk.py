"""The exact line walk: every region boundary crossed by straight paths, in float64, verified.

Walk the segment ``a(t) = x0 + t (x1 - x0)``, ``t in [0, 1]``, region to region. Inside a region
every unit ``z_i`` is affine in ``t``; one JVP along the segment gives ``z_i(q)`` and the slope
``s_i``, so the next boundary is the smallest positive root ``q - z_i / s_i``. The walk then probes
the new region at ``t_next + tol`` and records which units changed sign.

Tolerance: positions are in units of ``t`` (the segment has length 1 in ``t``). Crossings closer
than ``tol`` to each other are merged into one event at the first of them (all their flips are
still counted); a unit that flips twice within ``tol`` (a region narrower than ``tol`` along the
path) is missed. With ``tol = 1e-9`` in float64 this never happened in the tests (exact counts
equal counts from 10^5-point sampling).

Verification: the walk is exact only if the units are affine in every region it visits. At every
crossing the two regions' affine models must agree, and at ``t = 1`` the last region's model must
match the network; ``affine_error`` is the largest mismatch relative to the units' scale (about
1e-13 for a piecewise-linear network in float64). Above ``affine_tol`` the walk warns (or raises)
and names the likely cause found in the traced program: a cast to float32, a kink the capture
rules do not see (an undeclared max-pool, a ``reduce_max``, a sort), or a smooth nonlinearity.

Max-pool units (``maxpool=``) compare every pair of a window's elements, so their signs order the
window: a crossing of such a unit is an *ordering change*, and only some ordering changes are
*argmax changes* (the pooled maximum switches element, a kink of the network). :class:`LineWalk`
counts ReLU / kink sign flips, ordering changes and argmax changes separately.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._display import (array_summary, is_concrete, number, numbers_summary, summary_html, summary_repr,
                                summary_treescope)
from jaxinterp._validation import check_positive_int
from jaxinterp._warnings import AffinityWarning
from jaxinterp.capture.interpreter import sub_jaxprs
from jaxinterp.polytope.codes import pack_bits, positive
from jaxinterp.polytope.network import (MAXPOOL_SUFFIX, CodeLayout, Preactivations, as_preactivations, layout_of,
                                        map_batched, single_unit_values)
from jaxinterp.polytope.paths import path_lengths, check_endpoints

CHECKS = ("warn", "raise", "off")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LineWalk:
    """The exact region-to-region walk along paths (numpy arrays, float64 positions).

    Attributes:
      positions: ``[paths, max_crossings]`` path parameter ``t`` of each crossing event, NaN after
        the last one.
      n_flips: int ``[paths, max_crossings]`` units changing sign at each event (0 after the last).
      layer_flips: int ``[paths, max_crossings, n_layers]`` the same per layer.
      argmax_changes: int ``[paths, max_crossings]`` max-pool windows whose maximum switches
        element at each event (0 without ``maxpool`` units).
      regions: uint32 ``[paths, max_crossings + 1, n_words]`` packed codes of the regions visited
        (``regions[:, 0]`` is the start's region); None unless ``keep_regions``. The units flipped
        at event ``j`` are the set bits of ``regions[:, j] ^ regions[:, j + 1]``.
      n_crossings: int ``[paths]`` crossing events (cells visited = ``n_crossings + 1``).
      length: ``[paths]`` Euclidean length of each path.
      truncated: bool ``[paths]`` the walk stopped at ``max_crossings`` before reaching ``t = 1``.
      affine_error: ``[paths]`` largest mismatch between the network's units and the affine model
        of the region they are in (at every crossing and at ``t = 1``), relative to the units'
        largest magnitude; about 1e-13 for piecewise-linear networks.
      layout: the :class:`CodeLayout` of the units.
      affine_tol: the tolerance ``affine_error`` was checked against.
    """

    positions: jax.Array
    n_flips: jax.Array
    layer_flips: jax.Array
    argmax_changes: jax.Array
    regions: jax.Array | None
    n_crossings: jax.Array
    length: jax.Array
    truncated: jax.Array
    affine_error: jax.Array
    layout: CodeLayout = dataclasses.field(metadata=dict(static=True))
    affine_tol: float = dataclasses.field(default=1e-8, metadata=dict(static=True))

    @property
    def flagged(self) -> np.ndarray:
        """bool ``[paths]``: the network was not piecewise affine along the path (counts unreliable)."""
        return ~(np.asarray(self.affine_error) <= self.affine_tol)

    def _pool_layers(self) -> np.ndarray:
        return np.array([n.endswith(MAXPOOL_SUFFIX) for n in self.layout.names], bool)

    @property
    def n_boundaries(self) -> jax.Array:
        """Unit sign changes along each path (the exact ``sum_t H_t``, max-pool orderings included): ``[paths]``."""
        return self.n_flips.sum(-1)

    @property
    def sign_flips(self) -> np.ndarray:
        """Sign changes of ReLU / kink units (max-pool ordering units excluded): ``[paths]``."""
        return np.asarray(self.layer_flips)[..., ~self._pool_layers()].sum((-1, -2))

    @property
    def ordering_changes(self) -> np.ndarray:
        """Sign changes of max-pool pair comparisons (window orderings): ``[paths]``."""
        return np.asarray(self.layer_flips)[..., self._pool_layers()].sum((-1, -2))

    @property
    def n_argmax_changes(self) -> np.ndarray:
        """Max-pool windows switching their maximum element along each path: ``[paths]``."""
        return np.asarray(self.argmax_changes).sum(-1)

    @property
    def n_regions(self) -> jax.Array:
        """Cells of the unit arrangement visited by each path (``n_crossings + 1``): ``[paths]``.

        Equals the linear regions visited for ReLU / kink units; with max-pool units it counts
        every ordering change inside a window too (see :attr:`n_linear_regions`).
        """
        return self.n_crossings + 1

    @property
    def n_linear_regions(self) -> np.ndarray:
        """Linear regions visited: 1 + events with a kink sign flip or a max-pool argmax change: ``[paths]``."""
        kink = np.asarray(self.layer_flips)[..., ~self._pool_layers()].sum(-1) > 0
        return 1 + (kink | (np.asarray(self.argmax_changes) > 0)).sum(-1)

    @property
    def density(self) -> jax.Array:
        """Boundaries per unit length of each path: ``[paths]``."""
        return self.n_boundaries / self.length

    @property
    def density_per_layer(self) -> jax.Array:
        """Boundaries per unit length of each layer: ``[paths, n_layers]``."""
        return self.layer_flips.sum(1) / self.length[:, None]

    def flipped_units(self, path: int, event: int) -> list[tuple[str, tuple[int, ...]]]:
        """``(layer, unit index)`` of the units changing sign at crossing ``event`` of ``path``."""
        if self.regions is None:
            raise ValueError("flipped units need the visited regions: walk with keep_regions=True.")
        if not 0 <= event < int(self.n_crossings[path]):
            raise IndexError(f"path {path} has {int(self.n_crossings[path])} crossing events; got {event}.")
        diff = np.asarray(self.regions[path, event] ^ self.regions[path, event + 1])
        bits = np.flatnonzero(np.unpackbits(diff.view(np.uint8), bitorder="little"))
        return [self.layout.unit(b) for b in bits]

    def position_histogram(self, bins: int) -> np.ndarray:
        """Unit flips in ``bins`` equal bins of ``t in [0, 1]``: ``[paths, bins]``."""
        pos = np.asarray(self.positions)
        idx = np.clip(np.floor(np.nan_to_num(pos, nan=0.0) * bins).astype(int), 0, bins - 1)
        out = np.zeros((pos.shape[0], bins))
        np.add.at(out, (np.repeat(np.arange(pos.shape[0]), pos.shape[1]), idx.reshape(-1)),
                  np.asarray(self.n_flips).reshape(-1))
        return out

    def _summary(self) -> list[tuple[str, str | None]]:
        """Paths, layers and units, crossings and regions per path, and the reliability flags."""
        concrete = all(is_concrete(a) for a in (self.n_crossings, self.n_flips, self.truncated, self.affine_error))
        fields = [("paths", str(self.n_crossings.shape[0]) if self.n_crossings.ndim else "1"),
                  ("layers", str(self.layout.n_layers)), ("units", str(self.layout.n_units)),
                  ("max_crossings", str(self.positions.shape[-1]))]
        if not concrete:
            return fields + [("positions", array_summary(self.positions))]
        return fields + [("crossings", numbers_summary(self.n_crossings)),
                         ("unit_flips", numbers_summary(self.n_boundaries)),
                         ("truncated", str(int(np.sum(self.truncated)))),
                         ("flagged", str(int(np.sum(self.flagged)))),
                         ("max_affine_error", number(np.max(np.asarray(self.affine_error), initial=0.0)))]

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


def window_argmax(layout: CodeLayout) -> Callable[[jax.Array], jax.Array]:
    """``z [n_units] -> int32 [n_windows]``: the maximum element of every max-pool window.

    Read from the signs of the window's pair comparisons ``z_a - z_b`` (``a < b``): element ``e``
    wins against every other element exactly when it is the maximum.
    """
    pools = []
    for name, shape, sl in zip(layout.names, layout.shapes, (layout.layer_slice(n) for n in layout.names)):
        if not name.endswith(MAXPOOL_SUFFIX):
            continue
        n_pairs = shape[-1]
        size = int(round((1 + math.sqrt(1 + 8 * n_pairs)) / 2))
        pairs = np.array(list(itertools.combinations(range(size), 2))).reshape(-1, 2)
        first = np.eye(size, dtype=np.float32)[pairs[:, 0]]  # [n_pairs, size]
        second = np.eye(size, dtype=np.float32)[pairs[:, 1]]
        pools.append((sl, n_pairs, first, second))

    def argmax(z):
        out = [jnp.zeros((0,), jnp.int32)]
        for sl, n_pairs, first, second in pools:
            above = (z[sl].reshape(-1, n_pairs) > 0).astype(jnp.float32)
            wins = above @ first + (1.0 - above) @ second
            out.append(jnp.argmax(wins, axis=-1).astype(jnp.int32))
        return jnp.concatenate(out)

    return argmax


def walk_single(flat: Callable[[jax.Array], jax.Array], masks: jax.Array, x0: jax.Array, x1: jax.Array, *,
                max_crossings: int, tol: float, keep_regions: bool,
                argmax: Callable[[jax.Array], jax.Array] | None = None):
    """Exact walk along one path (no batch axis) for flat units ``flat: x -> [n_units]``; vmappable.

    Args:
      flat: unit values of one input.
      masks: uint32 ``[n_layers, n_words]`` (``CodeLayout.word_masks``).
      x0, x1: the path's ends ``[...]``.
      max_crossings, tol, keep_regions: as in :func:`exact_walk`.
      argmax: ``z -> [n_windows]`` maximum element of each max-pool window (:func:`window_argmax`).

    Returns:
      ``(positions, n_flips, layer_flips, argmax_changes, regions, n_crossings, truncated,
      affine_error)`` as in :class:`LineWalk` without the paths axis.
    """
    d, dtype = x1 - x0, x0.dtype
    argmax = argmax or (lambda z: jnp.zeros((0,), jnp.int32))

    def values(t):
        return jax.jvp(lambda s: flat(x0 + s * d), (t,), (jnp.ones_like(t),))

    def next_root(q, z, s):
        r = -z / jnp.where(s == 0, 1.0, s)
        return q + jnp.min(jnp.where((s != 0) & (r > 0), r, jnp.inf)).astype(q.dtype)  # units may be narrower

    def mismatch(z_model, z):  # relative to the units' scale
        return jnp.max(jnp.abs(z_model - z), initial=0.0) / jnp.maximum(jnp.max(jnp.abs(z), initial=0.0),
                                                                         jnp.finfo(dtype).tiny)

    zero = jnp.zeros((), dtype)
    z0, s0 = values(zero)
    code0 = pack_bits(positive(z0))
    slots = lambda dt, *shape: jnp.zeros((max_crossings, *shape), dt)  # noqa: E731
    state = dict(i=jnp.int32(0), k=jnp.int32(0), t=next_root(zero, z0, s0), code=code0, z=z0, s=s0, q=zero,
                 err=zero, am=argmax(z0), positions=jnp.full((max_crossings,), jnp.nan, dtype),
                 n_flips=slots(jnp.int32), layer_flips=slots(jnp.int32, masks.shape[0]), am_changes=slots(jnp.int32),
                 regions=(jnp.zeros((max_crossings + 1, masks.shape[1]), jnp.uint32).at[0].set(code0)
                          if keep_regions else None))

    def cond(st):
        return (st["t"] < 1) & (st["k"] < max_crossings) & (st["i"] < 4 * max_crossings + 16)

    def body(st):
        t, k = st["t"], st["k"]
        q = t + tol
        z, s = values(q)
        code = pack_bits(positive(z))
        lf = jnp.sum(jax.lax.population_count((code ^ st["code"])[None, :] & masks), axis=-1, dtype=jnp.int32)
        nf = jnp.sum(lf, dtype=jnp.int32)
        am = argmax(z)
        rec = nf > 0
        # both regions' affine models must agree at the crossing t
        z_w, s_w, zp_w, sp_w = (v.astype(dtype) for v in (z, s, st["z"], st["s"]))  # in the walk's dtype
        err = jnp.maximum(st["err"], mismatch(zp_w + sp_w * (t - st["q"]), z_w - s_w * (q - t)))
        keep = lambda arr, val: arr.at[k].set(jnp.where(rec, val, arr[k]))  # noqa: E731
        new = dict(st, i=st["i"] + 1, k=k + rec.astype(jnp.int32), t=next_root(q, z, s), code=code, z=z, s=s, q=q,
                   err=err, am=am, positions=keep(st["positions"], t), n_flips=keep(st["n_flips"], nf),
                   layer_flips=keep(st["layer_flips"], lf),
                   am_changes=keep(st["am_changes"], jnp.sum(am != st["am"], dtype=jnp.int32)))
        if keep_regions:
            new["regions"] = st["regions"].at[k + 1].set(jnp.where(rec, code, st["regions"][k + 1]))
        return new

    st = jax.lax.while_loop(cond, body, state)
    # the last region's affine model must also hold at the end of the path
    one = jnp.ones((), dtype)
    end = mismatch(st["z"].astype(dtype) + st["s"].astype(dtype) * (one - st["q"]), values(one)[0].astype(dtype))
    err = jnp.where(st["t"] >= 1, jnp.maximum(st["err"], end), st["err"])
    return (st["positions"], st["n_flips"], st["layer_flips"], st["am_changes"], st["regions"], st["k"], st["t"] < 1,
            err)


@functools.partial(jax.jit, static_argnames=("pre", "layout", "max_crossings", "tol", "keep_regions", "batch_size",
                                             "affine_tol"))
def _walk(pre, layout, x0, x1, max_crossings, tol, keep_regions, batch_size, affine_tol):
    one = functools.partial(walk_single, single_unit_values(pre), jnp.asarray(layout.word_masks()),
                            max_crossings=max_crossings, tol=tol, keep_regions=keep_regions,
                            argmax=window_argmax(layout))
    pos, nf, lf, am, regions, k, trunc, err = map_batched(lambda ab: one(ab[0], ab[1]), (x0, x1), batch_size)
    return LineWalk(pos, nf, lf, am, regions, k, path_lengths(x0, x1), trunc, err, layout, affine_tol)


_NARROW_FLOATS = ("float32", "float16", "bfloat16")
_UNSEEN_KINKS = frozenset({"reduce_window_max", "reduce_window_min", "reduce_max", "reduce_min", "argmax", "argmin",
                           "sort", "cummax", "cummin", "select_and_scatter_add", "sign", "floor", "ceil", "round"})
_SMOOTH = frozenset({"tanh", "logistic", "exp", "exp2", "log", "log1p", "expm1", "erf", "erfc", "sin", "cos", "sqrt",
                     "rsqrt", "cbrt", "pow", "integer_pow", "div", "atan2"})


def _program_primitives(jaxpr, acc: dict[str, set[str]]) -> dict[str, set[str]]:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        acc.setdefault("prims", set()).add(name)
        narrow = [str(v.aval.dtype) for v in eqn.outvars if str(getattr(v.aval, "dtype", "")) in _NARROW_FLOATS]
        if narrow:
            acc.setdefault("narrow", set()).add(name)
        for sub in sub_jaxprs(eqn):
            _program_primitives(sub, acc)
    return acc


def likely_cause(pre: Preactivations, x: jax.Array) -> str:
    """Why units of ``pre`` may not be piecewise affine in ``x``'s dtype, read from the traced program."""
    found = _program_primitives(jax.make_jaxpr(pre)(x).jaxpr, {})
    causes = []
    if found.get("narrow"):
        causes.append(f"the network computes in float32 or lower (by {sorted(found['narrow'])}: a cast such as "
                      "`x.astype(jnp.float32)` or a layer with dtype=float32); remove the cast, or pass promote=True "
                      "to evaluate every operation in float64")
    unseen = sorted(found.get("prims", set()) & _UNSEEN_KINKS)
    if unseen:
        causes.append(f"kinks the capture rules do not see ({unseen}); declare max-pools with `maxpool=` or register "
                      "a capture rule for them")
    smooth = sorted(found.get("prims", set()) & _SMOOTH)
    if smooth:
        causes.append(f"smooth nonlinearities ({smooth}): the network is not piecewise linear")
    return "; or ".join(causes) if causes else "unknown (no cast, unseen kink or smooth nonlinearity was found)"


def _float64_units(fn, names, maxpool, promote, x) -> tuple[Preactivations, CodeLayout]:
    """The units of ``fn`` evaluated in float64, and their layout for inputs like ``x [1, ...]``."""
    if isinstance(fn, Preactivations) and promote:
        raise ValueError("`promote` applies to a network function, not to a Preactivations.")
    pre = as_preactivations(fn, names=names, maxpool=maxpool, promote=jnp.float64 if promote else None)
    if promote is not None or isinstance(fn, Preactivations):
        return pre, layout_of(pre, x)
    try:
        return pre, layout_of(pre, x)
    # lax-level ops (e.g. conv_general_dilated) refuse float64 inputs with float32 parameters, and so
    # does every mixed operation under jax_numpy_dtype_promotion="strict"
    except (TypeError, jax.dtypes.TypePromotionError):
        pre = as_preactivations(fn, names=names, maxpool=maxpool, promote=jnp.float64)
        return pre, layout_of(pre, x)


def _verify(walk: LineWalk, pre: Preactivations, x: jax.Array, check: str) -> None:
    bad = np.flatnonzero(walk.flagged)
    if check == "off" or not bad.size:
        return
    message = (f"exact_walk: the units are not piecewise affine in float64 along {bad.size} of {walk.flagged.size} "
               f"paths (paths {bad[:10].tolist()}; largest affine_error {float(np.max(walk.affine_error)):.3g} > "
               f"affine_tol {walk.affine_tol:g}), so their counts may be wrong (see LineWalk.flagged). Likely "
               f"cause: {likely_cause(pre, x)}.")
    if check == "raise":
        raise ValueError(message)
    warnings.warn(message, AffinityWarning, stacklevel=3)


def exact_walk(fn: Callable | Preactivations, x0, x1, *, max_crossings: int = 1024, tol: float = 1e-9,
               keep_regions: bool = True, names=None, maxpool=None, batch_size: int | None = None,
               promote: bool | None = None, affine_tol: float = 1e-8, check: str = "warn") -> LineWalk:
    """Walk straight paths region to region, in float64, recording every boundary crossed.

    float64 is enabled only inside this call; the result holds numpy arrays. Parameters in float32
    are promoted: Flax, NNX and Equinox layers promote them to the input's dtype, and when a
    lax-level op refuses mixed dtypes (``lax.conv_general_dilated`` with float32 weights) the
    network is evaluated with every floating value in float64 (``promote``). Pass parameters as
    jax arrays, not as float64 numpy arrays closed over by ``fn``: jax caches the float64
    conversion of such constants and later float32 calls of the same ``fn`` then fail with a
    dtype mismatch.

    Args:
      fn: a piecewise-linear network ``x [batch, ...] -> output`` (ReLU, leaky_relu, abs, clip,
        max/min, ...) or a :class:`Preactivations`.
      x0: path starts ``[paths, ...]``.
      x1: path ends ``[paths, ...]`` (same shape; no path may have identical endpoints).
      max_crossings: crossing events stored per path; longer walks stop there (``truncated``).
      tol: resolution in the path parameter ``t in [0, 1]`` (see the module docstring).
      keep_regions: also return the packed code of every region visited.
      names, maxpool: which units (see :func:`jaxinterp.polytope.network.relu_preactivations`).
      batch_size: paths walked together (vmapped); all at once when None.
      promote: True evaluates every floating value of ``fn`` in float64 (explicit float32 casts
        included); False never; None (default) only when tracing in float64 fails on mixed dtypes.
      affine_tol: largest ``affine_error`` accepted (relative to the units' scale).
      check: what a path above ``affine_tol`` does: ``"warn"`` (an ``AffinityWarning``, a RuntimeWarning, naming the
        likely cause; the path is in ``LineWalk.flagged``), ``"raise"`` (ValueError) or ``"off"``.

    Returns:
      :class:`LineWalk`.
    """
    check_endpoints(x0, x1)
    max_crossings = check_positive_int(max_crossings, "max_crossings")
    if not 0 < float(tol) < 1e-3:
        raise ValueError(f"`tol` must lie in (0, 1e-3); got {tol}.")
    if not 0 < float(affine_tol) < 1:
        raise ValueError(f"`affine_tol` must lie in (0, 1); got {affine_tol}.")
    if check not in CHECKS:
        raise ValueError(f"`check` must be one of {CHECKS}; got {check!r}.")
    if promote not in (None, True, False):
        raise TypeError(f"`promote` must be True, False or None; got {promote!r}.")
    with jax.enable_x64(True):
        a = jnp.asarray(np.asarray(x0, np.float64))
        b = jnp.asarray(np.asarray(x1, np.float64))
        pre, layout = _float64_units(fn, names, maxpool, promote, a[:1])
        walk = jax.tree.map(np.asarray, _walk(pre, layout, a, b, max_crossings, float(tol), bool(keep_regions),
                                              batch_size, float(affine_tol)))
        _verify(walk, pre, a[:1], check)
    return walk
