"""A convolution whose weight gradient stays fast inside ``lax.scan``.

On XLA's CPU backend, the weight gradient of a convolution (the convolution of the inputs with
the output cotangents) is 5 to 20 times slower inside a loop body (``lax.scan``, ``while_loop``,
``lax.map``) than in straight-line code; the training loops of jaxinterp run their steps as
scanned chunks, so a small CNN's step spent most of its time there (LeNet on 32 x 32 images,
batch 1000: 4.4 s a step scanned against 0.8 s unrolled). ``conv_general_dilated`` is a
drop-in for ``jax.lax.conv_general_dilated`` (pass it as ``flax.linen.Conv(...,
conv_general_dilated=conv_general_dilated)``) that computes the same convolution and defines
its derivative through ``jax.custom_jvp``:

- tangent in the inputs: the convolution itself (linear in the inputs; its transpose is XLA's
  input gradient, which is fast in loops);
- tangent in the kernel: ``sum_o shift_o(x) @ dw[o]`` over the kernel offsets ``o``, whose
  transpose (the weight gradient) is one matrix product per offset,
  ``dw[o] = shift_o(x)^T @ cotangent``.

Forward values are XLA's convolution, so results agree with ``lax.conv_general_dilated`` to
float rounding; forward- and reverse-mode derivatives both work. Only stride-1, undilated,
ungrouped channels-last convolutions (Flax's layout: ``[batch, *spatial, features]`` inputs,
``[*kernel, in, out]`` kernels) take this path; every other call is passed to
``jax.lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated"]


def _channels_last(ndim: int) -> lax.ConvDimensionNumbers:
    """Flax's layout: lhs ``[N, *spatial, C]``, rhs ``[*spatial, I, O]``, out ``[N, *spatial, C]``."""
    spatial = tuple(range(1, ndim - 1))
    lhs = (0, ndim - 1, *spatial)
    return lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)), out_spec=lhs)


def _conv_xla(x: jax.Array, w: jax.Array, pads: tuple[tuple[int, int], ...]) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1,) * (x.ndim - 2), pads, dimension_numbers=_channels_last(x.ndim))


def _shifted_products(x: jax.Array, dw: jax.Array, pads: tuple[tuple[int, int], ...]) -> jax.Array:
    """``sum_o pad(x)[:, o : o + out] @ dw[o]`` over kernel offsets ``o``: the convolution of
    ``x [N, *spatial, I]`` with ``dw [*kernel, I, O]``, as one matrix product per offset."""
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    kernel = dw.shape[:-2]
    out = tuple(s - k + 1 for s, k in zip(x.shape[1:-1], kernel))
    total = None
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = (slice(None), *(slice(o, o + n) for o, n in zip(offset, out)), slice(None))
        term = jnp.einsum("...i,io->...o", x[window], dw[offset])
        total = term if total is None else total + term
    return total


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, pads: tuple[tuple[int, int], ...]) -> jax.Array:
    return _conv_xla(x, w, pads)


def _conv_jvp(pads, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _conv_xla(x, w, pads)
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        terms.append(_conv_xla(dx, w, pads))
    if not isinstance(dw, jax.custom_derivatives.SymbolicZero):
        terms.append(_shifted_products(x, dw, pads))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def _all_ones(values) -> bool:
    return values is None or all(int(v) == 1 for v in values)


def _explicit_padding(padding, x_shape: Sequence[int], w_shape: Sequence[int]):
    """Padding as ``[(lo, hi)] * spatial`` pairs of non-negative ints, or None when not expressible."""
    spatial, kernel = tuple(x_shape[1:-1]), tuple(w_shape[:-2])
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, kernel, (1,) * len(kernel), padding)
    pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    if len(pads) != len(kernel) or any(len(p) != 2 or min(p) < 0 for p in pads):
        return None
    return pads


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """``jax.lax.conv_general_dilated`` with a weight gradient that is fast inside loops.

    Same arguments and result as ``jax.lax.conv_general_dilated``. Stride-1, undilated,
    ungrouped, channels-last convolutions with non-negative padding (``lhs [N, *spatial, I]``,
    ``rhs [*kernel, I, O]``) are computed by XLA's convolution with derivatives are
    defined as the module docstring describes (the padding is part of the convolution, so
    ``jaxinterp.capture``'s fused channel means still see one ``conv_general_dilated``); any
    other call goes to ``lax`` unchanged.
    """
    ndim = jnp.ndim(lhs)
    layout_ok = (ndim >= 3 and jnp.ndim(rhs) == ndim and dimension_numbers is not None
                 and lax.conv_dimension_numbers(jnp.shape(lhs), jnp.shape(rhs), dimension_numbers)
                 == _channels_last(ndim))
    fast = (layout_ok and _all_ones(window_strides) and _all_ones(lhs_dilation) and _all_ones(rhs_dilation)
            and feature_group_count == 1 and batch_group_count == 1 and precision is None
            and preferred_element_type is None)
    pads = _explicit_padding(padding, jnp.shape(lhs), jnp.shape(rhs)) if fast else None
    if pads is None:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count,
                                        batch_group_count=batch_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)
    return _conv(lhs, rhs, pads)
