"""The units whose signs define polytopes: ReLU pre-activations of any network (and other kinks).

A network enters this package as a :class:`Preactivations`: a function mapping a batch of inputs
``[batch, ...]`` to ``{name: pre-activation [batch, ...]}``. :func:`relu_preactivations` builds
one from any JAX function through :func:`jaxinterp.capture.capture` with the piecewise-linear
rules (:data:`jaxinterp.capture.PIECEWISE_LINEAR`): every ReLU, and every other kink (``leaky_relu``,
``abs``, ``clip`` / ``hard_tanh``, ``relu6``, ``max`` / ``min`` of two values, ``jnp.where``
on a comparison) as a unit whose sign says which side of the kink the input is on, in call order;
a hand-written :class:`Preactivations` works too. A :class:`CodeLayout` maps each flattened unit
(bit of a polytope code) back to its layer and its index in that layer.

Max-pooling is piecewise linear too. ``maxpool="auto"`` finds every ``reduce_window_max`` in the
traced program (any window, stride, padding, overlap; ``flax.linen.max_pool``, ``lax.reduce_window``)
and adds, for each, a layer holding for every window and every pair ``a < b`` of its elements
``z_a - z_b`` (``+1`` where either element is padding: its sign never changes). A pool of a
ReLU's output is named ``"<relu name>/maxpool"`` and compares the ReLU's pre-activations, any other
pool ``"<scope>/maxpool"`` and compares its operand. The hand declaration ``maxpool={"Conv_0/relu": 2}``
is checked against the traced program (a ReLU without a pool, a different window or an unknown
name is an error) and otherwise equals ``"auto"`` restricted to the named layers. The sign bits
give the argmax of every window of two elements exactly (for larger windows, the order of the
window's elements, which refines the argmax pattern: every cell is still a region where the
network is affine). Pooling commutes with the monotone ReLU, so the comparison uses the pre-activations.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.capture import PIECEWISE_LINEAR, POST_SUFFIX, Rule, Tap, capture
from jaxinterp.capture.naming import select

MAXPOOL_SUFFIX = "/maxpool"
_POOL_LABEL = "maxpool_operand"  # label of the internal tap recording each pooled operand


@dataclasses.dataclass(frozen=True)
class CodeLayout:
    """Where each unit of a network sits in the flat unit vector (and in a polytope code).

    Attributes:
      names: layer names, in call order.
      shapes: per-example shape of each layer's pre-activation (no batch axis).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of units of each layer."""
        return tuple(int(math.prod(s)) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Index of each layer's first unit in the flat vector (length ``n_layers + 1``)."""
        return tuple(int(v) for v in np.concatenate([[0], np.cumsum(self.sizes)]))

    @property
    def n_layers(self) -> int:
        return len(self.names)

    @property
    def n_units(self) -> int:
        """Total number of units (bits of the unpacked code)."""
        return int(sum(self.sizes))

    @property
    def n_words(self) -> int:
        """Number of uint32 words of the packed code."""
        return (self.n_units + 31) // 32

    def layer_slice(self, name: str) -> slice:
        """Slice of the flat unit vector holding layer ``name``."""
        if name not in self.names:
            raise KeyError(f"unknown layer {name!r}; layers: {list(self.names)}")
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i + 1])

    def layer_index(self) -> np.ndarray:
        """Layer index of every unit, int ``[n_units]``."""
        return np.repeat(np.arange(self.n_layers), self.sizes)

    def unit(self, bit: int) -> tuple[str, tuple[int, ...]]:
        """``(layer name, index within the layer's pre-activation shape)`` of flat unit ``bit``."""
        bit = int(bit)
        if not 0 <= bit < self.n_units:
            raise IndexError(f"bit {bit} outside [0, {self.n_units}).")
        i = int(np.searchsorted(self.offsets, bit, side="right") - 1)
        local = bit - self.offsets[i]
        return self.names[i], tuple(int(v) for v in np.unravel_index(local, self.shapes[i]))

    def word_masks(self) -> np.ndarray:
        """uint32 ``[n_layers, n_words]``: bit ``j`` of row ``l`` is set iff unit ``j`` is in layer ``l``."""
        masks = np.zeros((self.n_layers, self.n_words * 32), bool)
        for i in range(self.n_layers):
            masks[i, self.offsets[i] : self.offsets[i + 1]] = True
        weights = (np.uint64(1) << np.arange(32, dtype=np.uint64)).astype(np.uint64)
        return (masks.reshape(self.n_layers, self.n_words, 32) * weights).sum(-1).astype(np.uint32)


@dataclasses.dataclass(frozen=True)
class Preactivations:
    """A function ``x [batch, ...] -> {name: pre-activation [batch, ...]}`` (names in call order).

    Examples must be independent (no batch statistics). Every entry is a unit whose sign is one
    bit of the polytope code; inside a region every entry is an affine function of the input.
    """

    fn: Callable[[jax.Array], Mapping[str, jax.Array]]

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        acts = dict(self.fn(x))
        if not acts:
            raise ValueError("the network has no ReLU (no pre-activations); polytopes are undefined.")
        return acts

    @functools.cached_property
    def in_call_order(self) -> tuple[Callable[[jax.Array], list[jax.Array]], list[str]]:
        """``(fn, names)``: ``fn(x)`` returns the values as a list (a dict's keys would come back
        sorted from ``jax.eval_shape``); ``names`` holds their names once ``fn`` has been traced.
        One function per instance, so JAX's trace cache recognises it."""
        names: list[str] = []

        def values(x):
            acts = self(x)
            names[:] = list(acts)
            return list(acts.values())

        return values, names


def _window_indices(size: int, window: int, stride: int, pad: tuple[int, int], dilation: int):
    """Input index ``[out, window]`` of each window element along one axis, and whether it is inside."""
    out = (size + pad[0] + pad[1] - dilation * (window - 1) - 1) // stride + 1
    idx = np.arange(out)[:, None] * stride + np.arange(window)[None, :] * dilation - pad[0]
    return np.clip(idx, 0, size - 1), (idx >= 0) & (idx < size)


def window_pair_differences(z: jax.Array, params: Mapping[str, Any]) -> jax.Array:
    """``z_a - z_b`` for every window of a ``reduce_window_max`` with ``params`` and pair ``a < b``.

    Args:
      z: the pooled operand ``[*dims]`` (or the pre-activations of a ReLU whose output is pooled).
      params: the equation's ``window_dimensions``, ``window_strides``, ``padding``,
        ``window_dilation`` (``base_dilation`` must be 1).

    Returns:
      ``[*pooled dims, n_pairs]``; ``+1`` for pairs with a padded element.
    """
    if any(d != 1 for d in params.get("base_dilation", ())):
        raise ValueError(f"max-pool with base dilation {params['base_dilation']} is not supported.")
    dims, shape = len(z.shape), tuple(z.shape)
    masks = []
    for axis in range(dims):
        idx, ok = _window_indices(shape[axis], params["window_dimensions"][axis], params["window_strides"][axis],
                                  tuple(params["padding"][axis]), params.get("window_dilation", (1,) * dims)[axis])
        z = jnp.take(z, idx.reshape(-1), axis=2 * axis)
        z = z.reshape(*z.shape[:2 * axis], *idx.shape, *z.shape[2 * axis + 1:])
        masks.append(ok)
    perm = [2 * a for a in range(dims)] + [2 * a + 1 for a in range(dims)]
    z = jnp.transpose(z, perm)
    pooled = z.shape[:dims]
    z = z.reshape(*pooled, -1)
    valid = functools.reduce(np.multiply.outer, masks)  # [out0, w0, out1, w1, ...]
    valid = np.transpose(valid, perm).reshape(*pooled, -1)
    pairs = list(itertools.combinations(range(z.shape[-1]), 2))
    a, b = np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs], int)
    return jnp.where(valid[..., a] & valid[..., b], z[..., a] - z[..., b], jnp.ones((), z.dtype))


def _pool_rule(found: list) -> Rule:
    """A tap rule recording every ``reduce_window_max`` (operand, output); ``found`` collects the params."""

    def match(site):
        found.append(dict(site.params))
        return [Tap(_POOL_LABEL, site.invals[0], site.outvals[0], 0)]

    return Rule(_POOL_LABEL, frozenset({"reduce_window_max"}), match)


def _with_pools(acts: dict, params: list[dict], pools: Mapping[str, Any] | None) -> dict:
    """Kink units with a ``/maxpool`` layer after each detected pool (``pools``: hand declarations to check)."""
    relu_of = {id(acts[n + POST_SUFFIX]): n for n in acts if n + POST_SUFFIX in acts}
    operands = [n for n in acts if n.rsplit("/", 1)[-1].startswith(_POOL_LABEL) and not n.endswith(POST_SUFFIX)]
    out = {n: v for n, v in acts.items() if not n.endswith(POST_SUFFIX) and n not in operands}
    pooled: dict[str, tuple] = {}
    for name, prm in zip(operands, params):
        relu = relu_of.get(id(acts[name]))
        unit_name = (relu if relu is not None else name.rsplit("/", 1)[0] if "/" in name else "") + MAXPOOL_SUFFIX
        pooled[relu or name] = (unit_name.lstrip("/"), relu, prm)
    if pools is not None:
        _check_declared(pools, pooled, list(out))
    final = {}
    for n, v in out.items():
        final[n] = v
        if n in pooled and (pools is None or n in pools):
            unit_name, relu, prm = pooled[n]
            final[unit_name] = window_pair_differences(v, prm)
    for key, (unit_name, relu, prm) in pooled.items():  # pools of values that are no captured unit
        if relu is None and pools is None:
            final[unit_name] = window_pair_differences(acts[key], prm)
    return final


def _check_declared(pools: Mapping[str, Any], pooled: dict, layers: list[str]) -> None:
    missing = [n for n in pools if n not in layers]
    if missing:
        raise KeyError(f"`maxpool` names unknown layers {sorted(missing)}; layers: {layers}")
    for name, w in pools.items():
        if name not in pooled:
            raise ValueError(f"`maxpool` declares a max-pool on {name!r}, but the traced program does not max-pool "
                             f"its output; pooled layers: {sorted(k for k, v in pooled.items() if v[1])}.")
        window = tuple(pooled[name][2]["window_dimensions"][1:-1])
        declared = (w,) * len(window) if isinstance(w, int) else tuple(w)
        if declared != window:
            raise ValueError(f"`maxpool` declares window {declared} for {name!r}; the traced program pools it with "
                             f"window {window}.")


def relu_preactivations(
    fn: Callable,
    *,
    names: Sequence[str] | str | None = None,
    maxpool: Mapping[str, int | Sequence[int]] | str | None = None,
    promote: Any = None,
) -> Preactivations:
    """The kink units (ReLU pre-activations, ...) of any JAX function, captured by :func:`jaxinterp.capture.capture`.

    Args:
      fn: a function of one batched input ``x [batch, ...]`` applying ReLUs or other
        piecewise-linear kinks (e.g. ``lambda x: model.apply(params, x)``, an NNX or Equinox
        module, a plain function).
      names: glob patterns selecting layers (default: every kink).
      maxpool: ``"auto"``: add the window comparisons of every max-pool in the traced program as
        units; ``{relu name: window}``: only for these ReLUs, each checked against the program (an
        int window applies to every spatial axis); None: no max-pool units.
      promote: a floating dtype in which to evaluate ``fn`` (its parameters and the dtype
        arguments of lax-level ops included), see ``capture(promote=...)``; None: as traced.

    Returns:
      A :class:`Preactivations`.
    """
    if isinstance(fn, Preactivations):
        raise TypeError("`fn` is already a Preactivations; pass it directly.")
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}.")
    if maxpool is None:
        captured = capture(fn, names=names, rules=PIECEWISE_LINEAR, promote=promote)
        return Preactivations(lambda x: captured(x)[1])
    if isinstance(maxpool, str) and maxpool != "auto" or not isinstance(maxpool, (str, Mapping)):
        raise ValueError(f"`maxpool` must be 'auto', a mapping {{relu name: window}} or None; got {maxpool!r}.")
    pools = None if isinstance(maxpool, str) else dict(maxpool)
    found: list[dict] = []
    captured = capture(fn, rules=(*PIECEWISE_LINEAR, _pool_rule(found)), post_activations=True, promote=promote)

    def pre(x):
        found.clear()  # the rule fills it while ``fn`` is traced, in call order
        out = _with_pools(captured(x)[1], list(found), pools)
        keys = list(out)
        if names is None:
            return out
        return {keys[i]: out[keys[i]] for i in select(keys, names)}

    return Preactivations(pre)


@functools.lru_cache(maxsize=64)
def _cached_relu_preactivations(fn, names, maxpool, promote) -> Preactivations:
    return relu_preactivations(fn, names=names, maxpool=_cached_pool_argument(maxpool), promote=promote)


def as_preactivations(fn: Callable | Preactivations, *, names=None, maxpool=None, promote=None) -> Preactivations:
    """``fn`` itself when it is a :class:`Preactivations`, else :func:`relu_preactivations` of it.

    The result is memoised on ``(fn, names, maxpool, promote)`` (when hashable), so repeated calls
    with the same function reuse compiled code instead of re-tracing.
    """
    if isinstance(fn, Preactivations):
        if names is not None or maxpool is not None:
            raise ValueError("`names` / `maxpool` apply to a network function, not to a Preactivations.")
        return fn
    promote = None if promote is None else jnp.dtype(promote)
    key_names = (names,) if isinstance(names, str) else (tuple(names) if names is not None else None)
    key_pool = maxpool if isinstance(maxpool, str) else None
    if maxpool is not None and not isinstance(maxpool, str):
        key_pool = tuple(sorted((k, v if isinstance(v, int) else tuple(v)) for k, v in dict(maxpool).items()))
    try:
        hash((fn, key_names, key_pool))
    except TypeError:
        return relu_preactivations(fn, names=names, maxpool=maxpool, promote=promote)
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}.")
    return _cached_relu_preactivations(fn, key_names, key_pool, promote)


def _cached_pool_argument(key_pool):
    return key_pool if isinstance(key_pool, str) or key_pool is None else dict(key_pool)


def layout_of(pre: Preactivations, x: Any) -> CodeLayout:
    """The :class:`CodeLayout` of ``pre`` for inputs like ``x [batch, ...]`` (shapes only, no FLOPs)."""
    values, names = pre.in_call_order
    shapes = jax.eval_shape(values, jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)))
    return CodeLayout(tuple(names), tuple(tuple(s.shape[1:]) for s in shapes))


def flatten_units(acts: Mapping[str, jax.Array]) -> jax.Array:
    """Concatenate pre-activations ``{name: [batch, ...]}`` into ``[batch, n_units]`` (layout order)."""
    return jnp.concatenate([z.reshape(z.shape[0], -1) for z in acts.values()], axis=1)


def unit_values(pre: Preactivations, x: jax.Array) -> jax.Array:
    """Flat pre-activations ``[batch, n_units]`` of ``x [batch, ...]``."""
    return flatten_units(pre(x))


def single_unit_values(pre: Preactivations) -> Callable[[jax.Array], jax.Array]:
    """``x [...] -> [n_units]``: :func:`unit_values` of one example (no batch axis), for vmap/jvp."""
    return lambda x: unit_values(pre, x[None])[0]


def map_batched(f: Callable, xs: Any, batch_size: int | None) -> Any:
    """``jax.vmap(f)(xs)`` over the leading axis, or in vmapped chunks of ``batch_size`` (a scan)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if batch_size is None or batch_size >= n:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=batch_size)
