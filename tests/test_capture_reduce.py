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
