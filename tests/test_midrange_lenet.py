"""The authors' LeNet-style encoder: parameter counts of their EncoderCore (closed form) and a
forward pass against a numpy loop implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.midrange.lenet import LeNet


def test_parameter_counts_match_the_authors_encoder_at_64_pixels(key):
    params = LeNet(n_classes=3).init(key, jnp.zeros((1, 64, 64, 1)))
    sizes = sorted(int(np.size(p)) for p in jax.tree_util.tree_leaves(params))
    # EncoderCore(feat_size=84) on 1 x 64 x 64: conv 1->6 and 6->16 (5 x 5), 60 -> 30 -> 26 -> 13
    # pixels, so 16 * 13 * 13 = 2704 inputs to dense 120, 84, 84; a linear head to 3 classes
    expected = sorted([6 * 25, 6, 6 * 16 * 25, 16, 2704 * 120, 120, 120 * 84, 84, 84 * 84, 84, 84 * 3, 3])
    assert sizes == expected


def _numpy_forward(params, x):
    """The same network written with explicit loops (valid correlation, 2 x 2 mean pool)."""
    p = params["params"]
    h = x
    for name in ("Conv_0", "Conv_1"):
        k, b = np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])
        kh, kw = k.shape[:2]
        n, hh, ww, _ = h.shape
        out = np.zeros((n, hh - kh + 1, ww - kw + 1, k.shape[-1]))
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[:, i, j] = np.einsum("nabc,abcd->nd", h[:, i:i + kh, j:j + kw], k) + b
        out = np.maximum(out, 0)
        m, q = out.shape[1] // 2, out.shape[2] // 2
        h = out[:, :2 * m, :2 * q].reshape(n, m, 2, q, 2, -1).mean((2, 4))
    h = h.reshape(h.shape[0], -1)
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        h = np.maximum(h @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"]), 0)
    return h @ np.asarray(p["Dense_3"]["kernel"]) + np.asarray(p["Dense_3"]["bias"]), h


def test_forward_matches_a_numpy_loop(key):
    model = LeNet(feat_size=7, dense=(9, 8), n_classes=3)
    x = np.asarray(jax.random.uniform(key, (2, 20, 20, 1)))
    params = model.init(jax.random.key(1), jnp.asarray(x))
    logits, feats = model.apply(params, jnp.asarray(x), return_features=True)
    ref_logits, ref_feats = _numpy_forward(params, x.astype(np.float64))
    assert feats.shape == (2, 7) and logits.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(feats), ref_feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-4, atol=1e-5)


def test_rejects_inputs_too_small_or_not_images():
    with pytest.raises(ValueError, match="too small"):
        LeNet().init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    with pytest.raises(ValueError, match="batch, h, w"):
        LeNet().init(jax.random.key(0), jnp.zeros((1, 20, 20)))
