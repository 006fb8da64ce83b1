"""The units whose signs define polytopes: ReLU pre-activations of any network (and other kinks).

A network enters this package as a :class:`Preactivations`: a function mapping a batch of inputs
``[batch, ...]`` to ``{name: pre-activation [batch, ...]}``. :func:`relu_preactivations` builds
one from any JAX function through :func:`jaxinterp.capture.capture` with the piecewise-linear
rules (:data:`jaxinterp.capture.PIECEWISE_LINEAR`): every ReLU, and every other kink (``leaky_relu``,
``abs``, ``clip`` / ``hard_tanh``, ``relu6``, ``max`` / ``min`` of two values, ``jnp.where``
on a comparison) as a unit whose sign says which side of the kink the input is on, in call order;
a hand-written :class:`Preactivations` works too. A :class:`CodeLayout` maps each flattened unit
(bit of a polytope code) back to its layer and its index in that layer.

Max-pooling is piecewise linear too. ``maxpool={"Conv_0/relu": 2}`` says that the ReLU output of
``Conv_0`` is max-pooled with non-overlapping windows of 2 (per spatial axis, ``VALID``); it adds a
layer ``"Conv_0/relu/maxpool"`` holding, for every window and every pair ``a < b`` of its
elements, ``z_a - z_b``. Its sign bits give the argmax of every window of two elements exactly
(for larger windows, the order of the window's elements, which refines the argmax pattern: every
cell is still a region where the network is affine). Pooling commutes with the monotone ReLU,
so the comparison uses the pre-activations.
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

from jaxinterp.capture import PIECEWISE_LINEAR, capture

MAXPOOL_SUFFIX = "/maxpool"


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


def _pairwise_window_differences(z: jax.Array, window: Sequence[int]) -> jax.Array:
    """``z [batch, *spatial, C]`` -> ``[batch, *pooled, C, n_pairs]`` of ``z_a - z_b`` per window."""
    spatial = z.shape[1:-1]
    if len(window) != len(spatial):
        raise ValueError(f"max-pool window {tuple(window)} does not match the {len(spatial)} spatial "
                         f"axes of a pre-activation of shape {z.shape[1:]}.")
    pooled = [s // w for s, w in zip(spatial, window)]
    if any(p == 0 for p in pooled):
        raise ValueError(f"max-pool window {tuple(window)} is larger than the spatial shape {spatial}.")
    # crop (VALID padding), then split each spatial axis into (pooled, window)
    z = z[(slice(None), *[slice(0, p * w) for p, w in zip(pooled, window)], slice(None))]
    shape = [z.shape[0]]
    for p, w in zip(pooled, window):
        shape += [p, w]
    z = z.reshape(*shape, z.shape[-1])
    n = len(window)
    # move the window axes last: [batch, *pooled, C, *window]
    perm = [0, *[1 + 2 * i for i in range(n)], 2 * n + 1, *[2 + 2 * i for i in range(n)]]
    z = z.transpose(perm).reshape(z.shape[0], *pooled, z.shape[-1], math.prod(window))
    pairs = list(itertools.combinations(range(math.prod(window)), 2))
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    return z[..., a] - z[..., b]


def relu_preactivations(
    fn: Callable,
    *,
    names: Sequence[str] | str | None = None,
    maxpool: Mapping[str, int | Sequence[int]] | None = None,
    promote: Any = None,
) -> Preactivations:
    """The kink units (ReLU pre-activations, ...) of any JAX function, captured by :func:`jaxinterp.capture.capture`.

    Args:
      fn: a function of one batched input ``x [batch, ...]`` applying ReLUs or other
        piecewise-linear kinks (e.g. ``lambda x: model.apply(params, x)``, an NNX or Equinox
        module, a plain function).
      names: glob patterns selecting layers (default: every kink).
      maxpool: ``{relu name: window}`` for ReLU outputs that are max-pooled with non-overlapping
        windows (an int applies to every spatial axis); adds the window comparisons as units.
      promote: a floating dtype in which to evaluate ``fn`` (its parameters and the dtype
        arguments of lax-level ops included), see ``capture(promote=...)``; None: as traced.

    Returns:
      A :class:`Preactivations`.
    """
    if isinstance(fn, Preactivations):
        raise TypeError("`fn` is already a Preactivations; pass it directly.")
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}.")
    captured = capture(fn, names=names, rules=PIECEWISE_LINEAR, promote=promote)
    pools = dict(maxpool or {})

    def pre(x):
        _, acts = captured(x)
        out = {}
        for name, z in acts.items():
            out[name] = z
            if name in pools:
                w = pools[name]
                window = (w,) * (z.ndim - 2) if isinstance(w, int) else tuple(w)
                out[name + MAXPOOL_SUFFIX] = _pairwise_window_differences(z, window)
        missing = set(pools) - set(acts)
        if missing:
            raise KeyError(f"`maxpool` names unknown layers {sorted(missing)}; layers: {list(acts)}")
        return out

    return Preactivations(pre)


@functools.lru_cache(maxsize=64)
def _cached_relu_preactivations(fn, names, maxpool, promote) -> Preactivations:
    return relu_preactivations(fn, names=names, maxpool=dict(maxpool) if maxpool is not None else None,
                               promote=promote)


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
    key_pool = None
    if maxpool is not None:
        key_pool = tuple(sorted((k, v if isinstance(v, int) else tuple(v)) for k, v in dict(maxpool).items()))
    try:
        hash((fn, key_names, key_pool))
    except TypeError:
        return relu_preactivations(fn, names=names, maxpool=maxpool, promote=promote)
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}.")
    return _cached_relu_preactivations(fn, key_names, key_pool, promote)


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
