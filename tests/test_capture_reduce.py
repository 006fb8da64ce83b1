"""capture(fn, reduce=...): fused reductions equal reducing the full capture (numpy references)."""

import jax
import numpy as np
import pytest

from jaxinterp import models
from jaxinterp.capture import (capture, channel_argmax, channel_max, channel_mean, channel_topk, last_token,
                               token_mean)

ATOL = 1e-5


@pytest.fixture
def cnn(key):
    model = models.CNN(channels=(4, 6), hidden=8, n_classes=3)
    x = jax.random.normal(key, (3, 12, 10, 1))
    params = model.init(jax.random.key(1), x)
    _, full = capture(model.apply)(params, x)
    return model, params, x, {k: np.asarray(v) for k, v in full.items()}


def test_channel_mean_max_equal_reducing_the_full_maps(cnn):
    model, params, x, full = cnn
    f = jax.jit(capture(model.apply, reduce={"Conv_0/*": channel_mean(), "Conv_1/*": channel_max()}))
    out, acts = f(params, x)
    np.testing.assert_allclose(acts["Conv_0/relu"], full["Conv_0/relu"].mean(axis=(1, 2)), atol=ATOL)
    np.testing.assert_allclose(acts["Conv_1/relu"], full["Conv_1/relu"].max(axis=(1, 2)), atol=ATOL)
    np.testing.assert_allclose(acts["Dense_0/relu"], full["Dense_0/relu"], atol=ATOL)  # unmatched: in full
    np.testing.assert_allclose(out, model.apply(params, x), atol=ATOL)


def test_argmax_and_topk_positions_index_the_full_maps(cnn):
    model, params, x, full = cnn
    k = 3
    _, arg = capture(model.apply, reduce={"Conv_*": channel_argmax()})(params, x)
    _, top = jax.jit(capture(model.apply, reduce={"Conv_*": channel_topk(k)}))(params, x)
    for name in ("Conv_0/relu", "Conv_1/relu"):
        maps = full[name]  # [b, H, W, C]
        b, h, w, c = maps.shape
        flat = maps.transpose(0, 3, 1, 2).reshape(b, c, h * w)
        want_arg = np.stack(np.unravel_index(flat.argmax(-1), (h, w)), -1)
        np.testing.assert_array_equal(arg[name], want_arg)
        order = np.argsort(-flat, axis=-1)[..., :k]
        np.testing.assert_allclose(top[name].values, np.take_along_axis(flat, order, -1), atol=ATOL)
        pos = np.asarray(top[name].positions)  # [b, C, k, 2]
        got = maps[np.arange(b)[:, None, None], pos[..., 0], pos[..., 1], np.arange(c)[None, :, None]]
        np.testing.assert_allclose(got, top[name].values, atol=ATOL)


def test_token_reductions_and_vmap(key):
    w = jax.random.normal(key, (6, 5))
    x = jax.random.normal(jax.random.key(2), (4, 7, 6))  # [batch, tokens, d]
    fn = lambda w, x: jax.nn.relu(x @ w)
    _, full = capture(fn)(w, x)
    _, mean = capture(fn, reduce=token_mean())(w, x)
    _, last = jax.vmap(capture(fn, reduce=last_token()), in_axes=(None, 0))(w, x)
    np.testing.assert_allclose(mean["relu"], np.asarray(full["relu"]).mean(1), atol=ATOL)
    np.testing.assert_allclose(last["relu"], np.asarray(full["relu"])[:, -1], atol=ATOL)


def test_bad_reductions_are_errors(cnn):
    model, params, x, _ = cnn
    with pytest.raises(KeyError, match="matches no captured activation"):
        capture(model.apply, reduce={"nope*": channel_mean()})(params, x)
    with pytest.raises(ValueError, match="at least 3 dims"):
        capture(model.apply, reduce=channel_mean())(params, x)  # Dense_0/relu is [batch, hidden]
    with pytest.raises(TypeError, match="`reduce`"):
        capture(model.apply, reduce={"Conv_*": 3})
    with pytest.raises(ValueError, match="`k`"):
        channel_topk(0)
    with pytest.raises(ValueError, match="`axes`"):
        channel_mean(axes=(-1,))


def _reads(jaxpr, primitive: str) -> list[tuple[int, ...]]:
    """Shapes of the operands of every ``primitive`` equation in ``jaxpr`` (and the programs inside it)."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            shapes.append(tuple(eqn.invars[0].aval.shape))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _reads(inner, primitive)
    return shapes


CONVS = [  # window strides, rhs dilation, padding, feature groups, (lhs, rhs, out) layouts
    ((1, 1), (1, 1), "SAME", 1, ("NHWC", "HWIO", "NHWC")),
    ((2, 2), (1, 1), "SAME", 1, ("NHWC", "HWIO", "NHWC")),
    ((2, 1), (2, 1), ((2, 1), (0, 3)), 2, ("NHWC", "HWIO", "NHWC")),
    ((1, 2), (1, 1), "VALID", 4, ("NCHW", "OIHW", "NHWC")),
    ((3, 3), (2, 2), "SAME", 1, ("NCHW", "OIHW", "NHWC")),
]


@pytest.mark.parametrize("strides, dilation, padding, groups, layout", CONVS)
def test_conv_channel_means_never_read_the_map(strides, dilation, padding, groups, layout):
    """Channel means of conv + bias pre-activations come from the conv input: equal, and no reduce of the map."""
    c_in, c_out = 4, 8
    x = jax.random.normal(jax.random.key(0), (2, 11, 9, c_in) if layout[0] == "NHWC" else (2, c_in, 11, 9))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c_in // groups, c_out) if layout[1] == "HWIO"
                               else (c_out, c_in // groups, 3, 3))
    bias = jax.random.normal(jax.random.key(2), (c_out,))

    def pre(k, b, x):
        return jax.lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation, feature_group_count=groups,
                                            dimension_numbers=layout) + b[None, None, None, :]

    fn = lambda k, b, x: jax.nn.relu(pre(k, b, x)).max()  # the map is read by the forward, but summed by no one
    maps = np.asarray(pre(kernel, bias, x), np.float64)  # [2, H', W', c_out]
    traced = jax.jit(capture(fn, reduce=channel_mean())).trace(kernel, bias, x)
    _, acts = traced.lower().compile()(kernel, bias, x)
    np.testing.assert_allclose(acts["relu"], maps.mean(axis=(1, 2)), atol=ATOL)
    assert maps.shape not in _reads(traced.jaxpr.jaxpr, "reduce_sum")


def test_fused_cnn_means_under_vmap_and_grad(cnn):
    """The fused means compose with vmap and grad: the same values and gradients as reducing the full maps."""
    model, params, x, full = cnn
    fused = capture(model.apply, names="Conv_*", reduce=channel_mean())
    plain = capture(model.apply, names="Conv_*")
    _, acts = jax.vmap(fused, in_axes=(None, 0))(params, x[:, None])
    for name in ("Conv_0/relu", "Conv_1/relu"):
        np.testing.assert_allclose(acts[name][:, 0], full[name].mean(axis=(1, 2)), atol=ATOL)
    assert full["Conv_1/relu"].shape not in _reads(jax.make_jaxpr(fused)(params, x).jaxpr, "reduce_sum")

    def loss(capt):
        return lambda p: sum(jax.numpy.sum(jax.numpy.mean(v, axis=(1, 2)) ** 2) if v.ndim == 4 else
                             jax.numpy.sum(v ** 2) for v in capt(p, x)[1].values())

    g_fused = jax.grad(loss(fused))(params)
    g_full = jax.grad(loss(plain))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), g_fused, g_full)


def test_token_mean_of_a_dense_layer_comes_from_its_input(key):
    w = jax.random.normal(key, (6, 5))
    b = jax.random.normal(jax.random.key(3), (5,))
    x = jax.random.normal(jax.random.key(2), (4, 7, 6))
    fn = lambda w, b, x: jax.nn.relu(x @ w + b[None, None, :])
    _, full = capture(fn)(w, b, x)
    captured = capture(fn, reduce=token_mean())
    _, mean = jax.jit(captured)(w, b, x)
    np.testing.assert_allclose(mean["relu"], np.asarray(full["relu"], np.float64).mean(1), atol=ATOL)
    assert (4, 7, 5) not in _reads(jax.make_jaxpr(captured)(w, b, x).jaxpr, "reduce_sum")


def test_half_precision_conv_means_accumulate_in_float32():
    """bfloat16 conv + bias: the means (bfloat16, like the maps) are within bfloat16 rounding of the float64 mean."""
    bf16 = jax.numpy.bfloat16
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 4), bf16)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 8), bf16)
    bias = jax.random.normal(jax.random.key(2), (8,), bf16)
    pre = lambda k, b, x: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                                                       ) + b[None, None, None, :]
    want = np.asarray(pre(*(a.astype(jax.numpy.float32) for a in (kernel, bias, x))), np.float64).mean(axis=(1, 2))
    _, acts = jax.jit(capture(lambda k, b, x: jax.nn.relu(pre(k, b, x)), reduce=channel_mean()))(kernel, bias, x)
    assert acts["relu"].dtype == bf16
    np.testing.assert_allclose(np.asarray(acts["relu"], np.float64), want, atol=2e-2, rtol=1e-2)  # bf16: 8 bits
