"""``jaxinterp.conv.conv_general_dilated``: XLA's convolution with derivatives that stay fast in loops.

Checked against ``jax.lax.conv_general_dilated`` (values, reverse- and forward-mode derivatives in
both arguments) for 1-D and 2-D kernels and every padding form; calls outside the fast case
(strides, dilation, groups, other layouts) must be passed to ``lax`` unchanged.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxinterp.conv import conv_general_dilated

CASES = [
    ((3, 12, 11, 1), (5, 5), "VALID"),
    ((2, 9, 9, 3), (3, 2), ((1, 0), (2, 1))),
    ((4, 20, 3), (5,), "SAME"),
]


def _pair(kernel, padding, **kw):
    reference = nn.Conv(4, kernel, padding=padding, **kw)
    ours = nn.Conv(4, kernel, padding=padding, conv_general_dilated=conv_general_dilated, **kw)
    return reference, ours


def _close(a, b, rtol=1e-5):
    """Agreement to float32 rounding, relative to the larger array's scale."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        scale = max(float(jnp.abs(x).max()), 1.0)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("shape, kernel, padding", CASES)
def test_values_and_derivatives_match_lax(shape, kernel, padding):
    reference, ours = _pair(kernel, padding)
    x = jax.random.normal(jax.random.key(0), shape)
    v = reference.init(jax.random.key(1), x)
    _close(reference.apply(v, x), ours.apply(v, x), rtol=1e-6)

    def loss(m):
        return lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))

    _close(jax.grad(loss(reference), argnums=(0, 1))(v, x), jax.grad(loss(ours), argnums=(0, 1))(v, x))
    dv = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape), v)
    dx = jax.random.normal(jax.random.key(3), shape)
    _close(jax.jvp(reference.apply, (v, x), (dv, dx))[1], jax.jvp(ours.apply, (v, x), (dv, dx))[1])
    # a tangent in the kernel only (the input's is a symbolic zero)
    _close(jax.jvp(lambda v: reference.apply(v, x), (v,), (dv,))[1], jax.jvp(lambda v: ours.apply(v, x), (v,), (dv,))[1])


def test_weight_gradient_inside_scan_matches_straight_line_code():
    _, ours = _pair((3, 3), "SAME")
    xs = jax.random.normal(jax.random.key(0), (4, 2, 8, 8, 1))
    v = ours.init(jax.random.key(1), xs[0])
    grad = jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) ** 2))
    scanned = jax.lax.scan(lambda c, x: (c, grad(v, x)), 0, xs)[1]
    for i in range(4):
        _close(jax.tree.map(lambda a: a[i], scanned), grad(v, xs[i]))


@pytest.mark.parametrize("kwargs", [dict(strides=2), dict(kernel_dilation=2), dict(input_dilation=2),
                                    dict(feature_group_count=2)])
def test_other_convolutions_go_to_lax_unchanged(kwargs):
    reference, ours = _pair((3, 3), ((1, 1), (1, 1)), **kwargs)
    x = jax.random.normal(jax.random.key(0), (2, 10, 10, 2))
    v = reference.init(jax.random.key(1), x)
    np.testing.assert_array_equal(reference.apply(v, x), ours.apply(v, x))
    jaxpr = str(jax.make_jaxpr(lambda x: ours.apply(v, x))(x))
    assert "custom_jvp_call" not in jaxpr


def test_channels_first_layout_goes_to_lax():
    x = jax.random.normal(jax.random.key(0), (2, 3, 9, 9))
    w = jax.random.normal(jax.random.key(1), (4, 3, 3, 3))
    args = ((1, 1), "VALID")
    dn = ("NCHW", "OIHW", "NCHW")
    np.testing.assert_array_equal(lax.conv_general_dilated(x, w, *args, dimension_numbers=dn),
                                  conv_general_dilated(x, w, *args, dimension_numbers=dn))
    assert "custom_jvp_call" not in str(jax.make_jaxpr(
        lambda x: conv_general_dilated(x, w, *args, dimension_numbers=dn))(x))


def test_fast_case_is_taken_for_flax_layout():
    _, ours = _pair((3, 3), "SAME")
    x = jnp.ones((1, 6, 6, 1))
    v = ours.init(jax.random.key(0), x)
    assert "custom_jvp_call" in str(jax.make_jaxpr(lambda x: ours.apply(v, x))(x))
