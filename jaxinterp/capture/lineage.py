"""Means of recorded values computed from how they were produced, without the values themselves.

A channel mean of a convolution's pre-activation is an affine function of the convolution's
*input*: ``mean_hw(conv(x, K) + b) = sum_{position, c_in} x[position, c_in] W[position, c_in, :] + b``,
where the effective weight ``W`` sums the kernel offsets through which each input position is
read (padding, strides and dilation included), divided by the number of output positions.
Reading the map a second time for its mean would force XLA to materialise it (the forward program
otherwise keeps it inside one fused kernel); computing the mean from the input does not. The same
holds for means over free dimensions of a ``dot_general`` (e.g. token means of a dense layer).

The interpreter records, for the values it produces by ``conv_general_dilated``, ``dot_general``,
``add`` and ``broadcast_in_dim``, a :class:`Producer`; :func:`mean_from_producer` walks it.
Anything it does not recognise returns None and the caller reduces the value itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

TRACKED = frozenset({"conv_general_dilated", "dot_general", "add", "broadcast_in_dim"})
"""Primitives whose outputs the interpreter annotates with their :class:`Producer`."""


class Producer(NamedTuple):
    """The equation that computed a value.

    Attributes:
      primitive: its primitive's name (one of :data:`TRACKED`).
      params: its parameters.
      invals: its input values.
      parents: the :class:`Producer` of each input (None where unknown).
    """

    primitive: str
    params: Mapping[str, Any]
    invals: tuple
    parents: tuple


def _accumulation_dtype(dtype: Any) -> Any:
    """``dtype`` if it has at least 32 bits, else float32 (sums of half-precision maps lose digits)."""
    return jnp.dtype(dtype) if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def _accumulator(x: Any) -> Any:
    """``x`` in its accumulation dtype, or None if it is not floating."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return None
    return x.astype(_accumulation_dtype(x.dtype))


def _offset_counts(size: int, out: int, k: int, stride: int, dilation: int, pad_lo: int) -> np.ndarray:
    """``A[i, h]``: how many output positions read input position ``h`` through kernel offset ``i`` (0 or 1)."""
    counts = np.zeros((k, size))
    for i in range(k):
        pos = np.arange(out) * stride + i * dilation - pad_lo
        counts[i, pos[(pos >= 0) & (pos < size)]] += 1
    return counts


def _conv_mean(p: Producer, out_shape: tuple[int, ...], reduced: frozenset[int]) -> Any | None:
    """Mean of ``conv_general_dilated(x, K)`` over its output's spatial dims, as ``[batch, C]`` in output order.

    The mean is linear in ``x``: ``mean[n, o] = sum_{position, c} x[n, position, c] W[position, c, o]`` with
    the effective weight ``W[position] = sum_offsets A[offset, position] K[offset] / n_out_positions``
    (``A`` per spatial dim, :func:`_offset_counts`), one matrix product on ``x`` as laid out.
    """
    x, kernel = p.invals
    prm = p.params
    lhs, rhs, out = prm["dimension_numbers"]
    if (set(out[2:]) != reduced or any(d != 1 for d in prm["lhs_dilation"]) or prm["batch_group_count"] != 1
            or any(lo < 0 or hi < 0 for lo, hi in prm["padding"])):
        return None
    x = _accumulator(x)
    if x is None:
        return None
    n_spatial = len(lhs) - 2
    ks = [kernel.shape[d] for d in rhs[2:]]
    out_sp = [out_shape[d] for d in out[2:]]
    counts = [_offset_counts(x.shape[lhs[2 + i]], out_sp[i], ks[i], prm["window_strides"][i], prm["rhs_dilation"][i],
                             prm["padding"][i][0]) for i in range(n_spatial)]
    k = jnp.transpose(kernel, (*rhs[2:], rhs[1], rhs[0])).astype(x.dtype)  # [*kernel spatial, C_in/G, C_out]
    offsets, positions = "abcdefgh"[:n_spatial], "ABCDEFGH"[:n_spatial]
    spec = ",".join(f"{o}{q}" for o, q in zip(offsets, positions)) + f",{offsets}yz->{positions}yz"
    weight = jnp.einsum(spec, *[jnp.asarray(a, x.dtype) for a in counts], k) / math.prod(out_sp)
    x = jnp.transpose(x, (lhs[0], *lhs[2:], lhs[1]))  # no-op for channels-last inputs
    n, groups, c_out = x.shape[0], prm["feature_group_count"], k.shape[-1]
    if groups == 1:
        mean = jnp.dot(x.reshape(n, -1), weight.reshape(-1, c_out), precision=prm.get("precision"))
    else:
        c_in_g, size = k.shape[-2], math.prod(x.shape[1:-1])
        mean = jnp.einsum("nsgc,scgo->ngo", x.reshape(n, size, groups, c_in_g),
                          weight.reshape(size, c_in_g, groups, c_out // groups),
                          precision=prm.get("precision")).reshape(n, c_out)
    return mean if out[0] < out[1] else mean.T


def _dot_mean(p: Producer, reduced: frozenset[int]) -> Any | None:
    """Mean of ``dot_general(a, b)`` over free (neither contracted nor batch) output dims."""
    a, b = p.invals
    (ca, cb), (ba, bb) = p.params["dimension_numbers"]
    free_a = [d for d in range(a.ndim) if d not in ca and d not in ba]
    free_b = [d for d in range(b.ndim) if d not in cb and d not in bb]
    out_dims = [("batch", d) for d in ba] + [("a", d) for d in free_a] + [("b", d) for d in free_b]
    if any(out_dims[o][0] == "batch" for o in reduced):
        return None
    drop_a = tuple(out_dims[o][1] for o in reduced if out_dims[o][0] == "a")
    drop_b = tuple(out_dims[o][1] for o in reduced if out_dims[o][0] == "b")
    a, b = _accumulator(a), _accumulator(b)
    if a is None or b is None:
        return None

    def renumber(dims, dropped):
        return tuple(d - sum(r < d for r in dropped) for d in dims)

    dn = ((renumber(ca, drop_a), renumber(cb, drop_b)), (renumber(ba, drop_a), renumber(bb, drop_b)))
    return lax.dot_general(jnp.mean(a, axis=drop_a) if drop_a else a, jnp.mean(b, axis=drop_b) if drop_b else b,
                           dn, precision=p.params.get("precision"))


def _broadcast_mean(value: Any, p: Producer, reduced: frozenset[int]) -> Any | None:
    """Mean of ``broadcast_in_dim(v)`` when ``v`` is constant along the reduced dims."""
    (operand,) = p.invals
    bdims = p.params["broadcast_dimensions"]
    if any(bdims[i] in reduced and operand.shape[i] != 1 for i in range(operand.ndim)):
        return None
    squeeze = tuple(i for i in range(operand.ndim) if bdims[i] in reduced)
    kept = [d for d in range(value.ndim) if d not in reduced]
    new_bdims = tuple(kept.index(bdims[i]) for i in range(operand.ndim) if i not in squeeze)
    return lax.broadcast_in_dim(lax.squeeze(operand, squeeze), [value.shape[d] for d in kept], new_bdims)


def _mean(value: Any, producer: Producer | None, reduced: frozenset[int]) -> Any | None:
    if all(value.shape[d] == 1 for d in reduced):  # constant along the reduced dims (a bias)
        return lax.squeeze(value, tuple(sorted(reduced)))
    if producer is None:
        return None
    if producer.primitive == "add" and len(producer.invals) == 2:
        parts = [_mean(v, q, reduced) if jnp.ndim(v) == value.ndim else None
                 for v, q in zip(producer.invals, producer.parents)]
        if any(part is None for part in parts):
            return None
        acc = _accumulation_dtype(value.dtype)  # terms may differ in precision (a bf16 bias)
        return parts[0].astype(acc) + parts[1].astype(acc)
    if producer.primitive == "conv_general_dilated":
        return _conv_mean(producer, value.shape, reduced)
    if producer.primitive == "dot_general":
        return _dot_mean(producer, reduced)
    if producer.primitive == "broadcast_in_dim":
        return _broadcast_mean(value, producer, reduced)
    return None


def mean_from_producer(value: Any, producer: Producer | None, axes: tuple[int, ...]) -> Any | None:
    """``jnp.mean(value, axis=axes)`` computed from ``value``'s producer, or None where that is not possible.

    Recognised: sums (``add``) of convolution outputs (``conv_general_dilated`` without input
    dilation, non-negative padding; means over exactly its spatial dims), ``dot_general`` outputs
    (means over free dims), broadcasts, and terms constant along ``axes`` (biases).

    Args:
      value: the recorded value, ``[..., *spatial, C]`` (any layout its producer gives).
      producer: how ``value`` was computed (None: unknown).
      axes: negative axes of ``value`` to average over.

    Returns:
      The mean, shaped and typed like ``jnp.mean(value, axis=axes)``, or None.
    """
    if producer is None or not jnp.issubdtype(value.dtype, jnp.floating):
        return None
    reduced = frozenset(value.ndim + a for a in axes)
    mean = _mean(value, producer, reduced)
    if mean is None:
        return None
    want = tuple(s for d, s in enumerate(value.shape) if d not in reduced)
    if mean.shape != want:
        try:
            mean = jnp.broadcast_to(mean, want)
        except ValueError:
            return None
    return mean.astype(value.dtype)
