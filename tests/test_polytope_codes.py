"""Polytope codes: against hand-written forward passes, bit packing, Hamming, ids, grouping, laws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxinterp import models
from jaxinterp.polytope import (CodeLayout, Preactivations, codes_equal, count_polytopes, dataset_codes,
                                group_by_polytope, hamming, hamming_per_layer, pairwise_hamming, polytope_codes,
                                region_ids, relu_preactivations)
from jaxinterp.polytope.codes import hash_codes, pack_bits, unpack_bits

from _relu_nets import dense


def _mlp_params(seed, sizes=(5, 7, 6, 3)):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(a, b)).astype(np.float32) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [(0.3 * rng.normal(size=b)).astype(np.float32) for b in sizes[1:]]
    return ws, bs


def _mlp(ws, bs):
    def f(x):
        h = x
        for w, b in zip(ws[:-1], bs[:-1]):
            h = jax.nn.relu(dense(h, w, b))
        return dense(h, ws[-1], bs[-1])
    return f


def _np_mlp_bits(ws, bs, x):
    bits, h = [], np.asarray(x, np.float64)
    for w, b in zip(ws[:-1], bs[:-1]):
        z = h @ w + b
        bits.append(z > 0)
        h = np.maximum(z, 0)
    return np.concatenate(bits, axis=1)


def test_codes_match_handwritten_mlp():
    ws, bs = _mlp_params(0)
    x = np.random.default_rng(1).normal(size=(64, 5)).astype(np.float32)
    codes = polytope_codes(_mlp(ws, bs), x)
    want = _np_mlp_bits(ws, bs, x)
    assert codes.layout.names == ("relu_0", "relu_1")
    assert codes.layout.n_units == 13 and codes.words.shape == (64, 1) and codes.words.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(codes.bits()), want)
    np.testing.assert_array_equal(np.asarray(codes.layer_bits("relu_1")), want[:, 7:])
    np.testing.assert_array_equal(np.asarray(codes.layer_words("relu_1")), np.asarray(pack_bits(want[:, 7:])))
    batched = dataset_codes(_mlp(ws, bs), x, batch_size=24)  # 64 = 24 + 24 + 16 (padded)
    np.testing.assert_array_equal(batched.words, np.asarray(codes.words))
    assert batched.layout == codes.layout


def test_codes_match_handwritten_flax_mlp_and_jit():
    model = models.MLP(hidden=(40, 30), n_classes=4)
    params = models.init_params(model, (6,), key=jax.random.key(3))
    x = np.random.default_rng(2).normal(size=(50, 6)).astype(np.float32)
    # non-zero biases so the test sees them
    params = {"params": {k: {"kernel": v["kernel"], "bias": v["bias"] + 0.1} for k, v in params["params"].items()}}
    fn = lambda v: model.apply(params, v)  # noqa: E731
    ws = [np.asarray(params["params"][f"Dense_{i}"]["kernel"]) for i in range(3)]
    bs = [np.asarray(params["params"][f"Dense_{i}"]["bias"]) for i in range(3)]
    codes = polytope_codes(fn, x)
    assert codes.layout.names == ("Dense_0/relu", "Dense_1/relu")
    np.testing.assert_array_equal(np.asarray(codes.bits()), _np_mlp_bits(ws, bs, x))
    pre = relu_preactivations(fn)
    jitted = jax.jit(lambda v: polytope_codes(pre, v).words)(x)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(codes.words))
    assert codes.layout.unit(40) == ("Dense_1/relu", (0,)) and codes.layout.unit(39) == ("Dense_0/relu", (39,))


def _np_conv1d_same(x, k, b):
    """x [n, L, C], k [K, C, O] (flax layout), SAME padding."""
    ksz = k.shape[0]
    lo = (ksz - 1) // 2
    xp = np.pad(x, [(0, 0), (lo, ksz - 1 - lo), (0, 0)])
    out = np.stack([np.einsum("nkc,kco->no", xp[:, i : i + ksz], k) for i in range(x.shape[1])], axis=1)
    return out + b


def test_codes_match_handwritten_cnn_with_maxpool():
    model = models.CNN(channels=(3, 4), hidden=5, n_classes=2)
    params = models.init_params(model, (12, 1), key=jax.random.key(0))
    p = jax.tree.map(np.asarray, params["params"])
    x = np.random.default_rng(0).normal(size=(20, 12, 1)).astype(np.float32)
    z0 = _np_conv1d_same(x.astype(np.float64), p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
    h0 = np.maximum(z0, 0).reshape(20, 6, 2, 3)
    pool0, arg0 = h0.max(2), z0.reshape(20, 6, 2, 3)
    z1 = _np_conv1d_same(pool0, p["Conv_1"]["kernel"], p["Conv_1"]["bias"])
    h1 = np.maximum(z1, 0).reshape(20, 3, 2, 4).max(2).reshape(20, -1)
    z2 = h1 @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    fn = lambda v: model.apply(params, v)  # noqa: E731
    codes = polytope_codes(fn, x, maxpool={"Conv_0/relu": 2})
    assert codes.layout.names == ("Conv_0/relu", "Conv_0/relu/maxpool", "Conv_1/relu", "Dense_0/relu")
    assert codes.layout.shapes[1] == (6, 3, 1)
    want = np.concatenate([(z0 > 0).reshape(20, -1), (arg0[:, :, 0] > arg0[:, :, 1]).reshape(20, -1),
                           (z1 > 0).reshape(20, -1), z2 > 0], axis=1)
    np.testing.assert_array_equal(np.asarray(codes.bits()), want)


def test_positive_bits_equal_comparison():
    from jaxinterp.polytope.codes import positive

    vals = np.array([0.0, -0.0, 1e-45, -1e-45, 1.0, -1.0, np.inf, -np.inf, 3e38, -3e38], np.float64)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32):
        z = jnp.asarray(vals.clip(-1e4, 1e4) if dtype != jnp.float32 else vals).astype(dtype)
        # exact comparison (numpy keeps subnormals such as 1e-45 in float32)
        np.testing.assert_array_equal(np.asarray(positive(z)), np.asarray(z).astype(np.float64) > 0)
    with jax.enable_x64(True):
        z = jnp.asarray(vals, jnp.float64)
        np.testing.assert_array_equal(np.asarray(positive(z)), vals > 0)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 100), batch=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_pack_unpack_roundtrip(n, batch, seed):
    bits = np.random.default_rng(seed).random((batch, n)) < 0.5
    words = pack_bits(jnp.asarray(bits))
    assert words.shape == (batch, (n + 31) // 32)
    np.testing.assert_array_equal(np.asarray(unpack_bits(words, n)), bits)
    # little-endian within each word, like numpy's packbits(bitorder="little")
    padded = np.pad(bits, [(0, 0), (0, (-n) % 32)])
    ref = np.packbits(padded, axis=1, bitorder="little").view(np.uint32)
    np.testing.assert_array_equal(np.asarray(words), ref)


def test_hamming_against_bit_counts():
    rng = np.random.default_rng(0)
    layout = CodeLayout(("a", "b", "c"), ((20,), (2, 15), (17,)))
    a, b = rng.random((2, 30, layout.n_units)) < 0.5
    wa, wb = pack_bits(jnp.asarray(a)), pack_bits(jnp.asarray(b))
    np.testing.assert_array_equal(np.asarray(hamming(wa, wb)), (a != b).sum(1))
    per = np.asarray(hamming_per_layer(wa, wb, layout))
    np.testing.assert_array_equal(per[:, 1], (a != b)[:, 20:50].sum(1))
    np.testing.assert_array_equal(per.sum(1), (a != b).sum(1))
    np.testing.assert_array_equal(np.asarray(codes_equal(wa, wa)), np.ones(30, bool))
    np.testing.assert_array_equal(pairwise_hamming(wa, wb, block=7), (a[:, None] != b[None]).sum(-1))


def test_region_ids_grouping_and_counting():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=(7, 3), dtype=np.uint64).astype(np.uint32)
    idx = rng.integers(0, 7, size=200)
    words = base[idx]
    ids = region_ids(words)
    assert ids.dtype == np.uint64
    assert len(set(ids.tolist())) == len({tuple(r) for r in words.tolist()}) == count_polytopes(words)
    np.testing.assert_array_equal(ids, region_ids(words.copy()))  # deterministic
    groups = group_by_polytope(words)
    np.testing.assert_array_equal(groups.codes[groups.inverse], words)
    assert np.all(np.diff(groups.counts) <= 0) and groups.counts.sum() == 200
    np.testing.assert_array_equal(groups.ids, region_ids(groups.codes))
    # stable across sessions and machines: a fixed code has a fixed id
    fixed = region_ids(np.array([[1, 2, 3]], np.uint32))[0]
    assert fixed == region_ids(np.array([[1, 2, 3]], np.uint32))[0]
    assert fixed != region_ids(np.array([[1, 2, 4]], np.uint32))[0]
    assert fixed != region_ids(np.array([[2, 1, 3]], np.uint32))[0]  # order matters
    assert jax.jit(hash_codes)(jnp.asarray(words)).shape == (200, 2)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), unit=st.integers(0, 6), log_c=st.floats(-3, 3))
def test_rescaling_law(seed, unit, log_c):
    """Row i of a layer (and its bias) times c > 0, column i of the next layer times 1/c:
    outputs and codes are unchanged."""
    ws, bs = _mlp_params(seed)
    c = np.float32(np.exp(log_c))
    ws2 = [w.copy() for w in ws]
    bs2 = [b.copy() for b in bs]
    ws2[0][:, unit] *= c
    bs2[0][unit] *= c
    ws2[1][unit, :] /= c
    x = np.random.default_rng(seed + 1).normal(size=(40, 5)).astype(np.float32)
    f, g = _mlp(ws, bs), _mlp(ws2, bs2)
    np.testing.assert_allclose(np.asarray(g(x)), np.asarray(f(x)), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(polytope_codes(g, x).words), np.asarray(polytope_codes(f, x).words))


def test_equinox_and_custom_preactivations():
    eqx = pytest.importorskip("equinox")
    mlp = eqx.nn.MLP(4, 2, 8, 2, activation=jax.nn.relu, key=jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    codes = polytope_codes(jax.vmap(mlp), x)
    assert codes.layout.n_units == 16 and codes.layout.n_layers == 2
    h = x
    bits = []
    for layer in mlp.layers[:-1]:
        z = np.asarray(jax.vmap(layer)(h))
        bits.append(z > 0)
        h = np.maximum(z, 0)
    np.testing.assert_array_equal(np.asarray(codes.bits()), np.concatenate(bits, 1))
    custom = Preactivations(lambda v: {"z": v @ jnp.ones((4, 3))})
    assert polytope_codes(custom, x).layout == CodeLayout(("z",), ((3,),))


def test_bad_inputs():
    ws, bs = _mlp_params(0)
    x = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match="no ReLU"):
        polytope_codes(lambda v: v @ ws[0], x)
    with pytest.raises(ValueError, match="NaN"):
        polytope_codes(_mlp(ws, bs), np.full((3, 5), np.nan, np.float32))
    with pytest.raises(TypeError, match="floating"):
        polytope_codes(_mlp(ws, bs), np.ones((3, 5), np.int32))
    with pytest.raises(KeyError):
        polytope_codes(_mlp(ws, bs), x, maxpool={"nope": 2})
    with pytest.raises(ValueError, match="rank"):
        count_polytopes(np.ones(3, np.uint32))
    with pytest.raises(ValueError, match="words"):
        pairwise_hamming(np.ones((2, 3), np.uint32), np.ones((2, 4), np.uint32))
    with pytest.raises(ValueError, match="empty"):
        polytope_codes(_mlp(ws, bs), x[:0])
    with pytest.raises(TypeError, match="words"):
        count_polytopes(np.ones((3, 2), np.float32))
    codes = np.ones((3, 2), np.uint32)
    with pytest.raises(ValueError, match="same shape"):
        hamming(codes, codes[:, :1])       # different widths used to broadcast
    with pytest.raises(ValueError, match="same shape"):
        hamming(codes[0], codes)
    with pytest.raises(TypeError, match="`b`"):
        codes_equal(codes, codes.astype(np.float32))


def test_half_precision_codes_are_those_of_the_float32_input():
    ws, bs = _mlp_params(0)
    x = np.random.default_rng(3).normal(size=(16, 5)).astype(np.float16)
    half = polytope_codes(_mlp(ws, bs), x).words
    np.testing.assert_array_equal(np.asarray(half), np.asarray(polytope_codes(_mlp(ws, bs), x.astype(np.float32)).words))


def test_flax_nnx_module_and_memoised_preactivations():
    from flax import nnx

    from jaxinterp.polytope.network import as_preactivations

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(4, 6, rngs=rngs)
            self.b = nnx.Linear(6, 5, rngs=rngs)
            self.c = nnx.Linear(5, 2, rngs=rngs)

        def __call__(self, x):
            return self.c(nnx.relu(self.b(nnx.relu(self.a(x)))))

    net = Net(nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    codes = polytope_codes(net, x)
    z1 = np.asarray(net.a(x))
    z2 = np.asarray(net.b(np.maximum(z1, 0)))
    np.testing.assert_array_equal(np.asarray(codes.bits()), np.concatenate([z1 > 0, z2 > 0], 1))
    assert codes.layout.n_units == 11
    f = _mlp(*_mlp_params(0))
    assert as_preactivations(f) is as_preactivations(f)
    assert as_preactivations(f, names=["relu_0"]) is not as_preactivations(f)
