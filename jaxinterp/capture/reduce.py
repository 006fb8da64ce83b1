"""Reductions fused into a captured program: ``capture(fn, reduce=...)``.

A reduction maps one captured activation to a small summary inside the same traced program, so
under ``jax.jit`` the full maps are never returned (XLA fuses the reduction into the producer).
Spatial reductions act per channel over ``axes`` (default ``(-3, -2)``, the height and width of
``[..., H, W, C]`` maps); token reductions act over the token axis (default ``-2`` of
``[..., T, d]``). Axes count from the end so that a reduction works unchanged under ``jax.vmap``.

A mean never reads the map when it can be computed from how the map was produced
(:mod:`~jaxinterp.capture.lineage`): the channel mean of a convolution's pre-activation (conv plus
bias) from the convolution's input and kernel, a token mean of a dense layer's output from the
token mean of its input. A second reader of a map would make XLA materialise it outside the
forward program's fused kernels; this keeps a captured forward with channel means close to the
cost of the plain forward. Other reductions (and means of other values) read the value.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int
from jaxinterp.capture.lineage import Producer, mean_from_producer
from jaxinterp.capture.naming import missing_name


class TopK(NamedTuple):
    """Top-k summary of each channel: ``values [..., C, k]``, ``positions [..., C, k, len(axes)]``."""

    values: Any
    positions: Any


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A named reduction of one activation; ``min_ndim`` is the rank it needs.

    ``from_producer(value, producer)``, when given, computes the same reduction from how
    ``value`` was produced (a :class:`~jaxinterp.capture.lineage.Producer`) without reading
    ``value``, or returns None where it cannot.
    """

    name: str
    fn: Callable[[Any], Any]
    min_ndim: int
    from_producer: Callable[[Any, Producer], Any] | None = None

    def __call__(self, value: Any) -> Any:
        return self.fn(value)

    def reduce(self, value: Any, producer: Producer | None = None) -> Any:
        """The reduction of ``value``, from its ``producer`` where possible."""
        if producer is not None and self.from_producer is not None:
            fused = self.from_producer(value, producer)
            if fused is not None:
                return fused
        return self.fn(value)


def _mean_reduction(name: str, axes: tuple[int, ...]) -> Reduction:
    return Reduction(name, lambda v: jnp.mean(v, axis=axes), -min(axes),
                     lambda v, p: mean_from_producer(v, p, axes))


def _check_axes(axes: Sequence[int], what: str, name: str = "axes") -> tuple[int, ...]:
    if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence) or not all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
        raise TypeError(f"`{name}` of {what} must be a sequence of ints; got {axes!r}.")
    axes = tuple(int(a) for a in axes)
    if not axes or any(a >= -1 for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"`{name}` of {what} must be distinct negative axes before the channel axis (< -1); "
                         f"got {axes}.")
    return tuple(sorted(axes))


def _axis_tuple(axis: int) -> tuple:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"`axis` must be an int; got {axis!r}.")
    return (axis,)


def _flat_spatial(value: Any, axes: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """``[..., *spatial, C]`` -> ``([..., C, prod(spatial)], spatial shape)`` (spatial axes moved last)."""
    nd = value.ndim
    pos = [nd + a for a in axes]
    rest = [i for i in range(nd) if i not in pos]
    moved = jnp.transpose(value, rest + pos)
    shape = tuple(value.shape[p] for p in pos)
    return moved.reshape(*moved.shape[: len(rest)], -1), shape


def _positions(flat_index: Any, shape: tuple[int, ...]) -> Any:
    return jnp.stack(jnp.unravel_index(flat_index, shape), axis=-1)


def channel_mean(axes: Sequence[int] = (-3, -2)) -> Reduction:
    """Per-channel mean over the spatial ``axes``: ``[..., H, W, C]`` -> ``[..., C]``."""
    axes = _check_axes(axes, "channel_mean")
    return _mean_reduction("channel_mean", axes)


def channel_max(axes: Sequence[int] = (-3, -2)) -> Reduction:
    """Per-channel maximum over the spatial ``axes``: ``[..., H, W, C]`` -> ``[..., C]``."""
    axes = _check_axes(axes, "channel_max")
    return Reduction("channel_max", lambda v: jnp.max(v, axis=axes), -min(axes))


def channel_argmax(axes: Sequence[int] = (-3, -2)) -> Reduction:
    """Per-channel position of the maximum: ``[..., H, W, C]`` -> ``[..., C, len(axes)]`` (int coordinates)."""
    axes = _check_axes(axes, "channel_argmax")

    def fn(v):
        flat, shape = _flat_spatial(v, axes)
        return _positions(jnp.argmax(flat, axis=-1), shape)

    return Reduction("channel_argmax", fn, -min(axes))


def channel_topk(k: int, axes: Sequence[int] = (-3, -2)) -> Reduction:
    """Per-channel ``k`` largest values and their positions (:class:`TopK`), largest first."""
    check_positive_int(k, "k")
    axes = _check_axes(axes, "channel_topk")

    def fn(v):
        flat, shape = _flat_spatial(v, axes)
        if k > flat.shape[-1]:
            raise ValueError(f"channel_topk: `k`={k} exceeds the {flat.shape[-1]} spatial positions.")
        values, index = jax.lax.top_k(flat, k)
        return TopK(values, _positions(index, shape))

    return Reduction(f"channel_top{k}", fn, -min(axes))


def token_mean(axis: int = -2) -> Reduction:
    """Mean over tokens: ``[..., T, d]`` -> ``[..., d]``."""
    (axis,) = _check_axes(_axis_tuple(axis), "token_mean", "axis")
    return _mean_reduction("token_mean", (axis,))


def last_token(axis: int = -2) -> Reduction:
    """The last token's activation: ``[..., T, d]`` -> ``[..., d]``."""
    (axis,) = _check_axes(_axis_tuple(axis), "last_token", "axis")
    return Reduction("last_token", lambda v: jnp.take(v, -1, axis=axis), -axis)


def resolve_reduce(reduce: Any) -> Callable[[str], Callable | None] | None:
    """``name -> reduction or None`` from a callable (applied to all) or ``{glob pattern: callable}``."""
    if reduce is None:
        return None
    if callable(reduce):
        return lambda name: reduce
    if not isinstance(reduce, Mapping) or not all(isinstance(p, str) and callable(r) for p, r in reduce.items()):
        raise TypeError(f"`reduce` must be a callable or a mapping of glob patterns to callables; got {reduce!r}.")
    items = list(reduce.items())
    return lambda name: next((r for p, r in items if fnmatch.fnmatchcase(name, p)), None)


def apply_reduce(acts: dict[str, Any], reduce: Any, producers: Mapping[str, Producer | None] | None = None
                 ) -> dict[str, Any]:
    """Reduce each activation in ``acts`` as ``reduce`` says (unmatched ones are kept in full).

    ``producers`` says how activations were computed (by name), for reductions that can be
    computed without reading the activation (:meth:`Reduction.reduce`).

    Raises:
      KeyError: a pattern of a ``reduce`` mapping matches no activation.
      ValueError: an activation has too few dimensions for its reduction.
    """
    lookup = resolve_reduce(reduce)
    if lookup is None:
        return acts
    if isinstance(reduce, Mapping):
        for pat in reduce:
            if not any(fnmatch.fnmatchcase(n, pat) for n in acts):
                raise missing_name(f"`reduce` pattern {pat!r} matches no captured activation", pat, list(acts))
    out = {}
    for name, value in acts.items():
        r = lookup(name)
        if r is not None and isinstance(r, Reduction) and jnp.ndim(value) < r.min_ndim:
            raise ValueError(f"`reduce`: {r.name} needs activations with at least {r.min_ndim} dims; "
                             f"{name!r} has shape {jnp.shape(value)}.")
        if r is None:
            out[name] = value
        elif isinstance(r, Reduction):
            out[name] = r.reduce(value, (producers or {}).get(name))
        else:
            out[name] = r(value)
    return out
