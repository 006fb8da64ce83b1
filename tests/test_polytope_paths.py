"""Boundaries along paths: the exact walk against brute-force fine sampling, sampled <= exact."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from _relu_nets import dense, numpy_signs, random_relu_net
from jaxinterp import models
from jaxinterp.polytope import (Preactivations, class_change_positions, exact_walk, layer_activations,
                                relu_preactivations, sampled_boundary_counts)


@functools.lru_cache(maxsize=None)
def _net(seed, sizes=(3, 6, 5, 4, 2)):
    return random_relu_net(seed, sizes, 0.5)


_np_signs = numpy_signs


def _brute_force(ws, bs, x0, x1, n=100_000):
    """Per-path total flips and flip locations from float64 sampling at n+1 points."""
    ts = np.linspace(0, 1, n + 1)
    totals, where = [], []
    for a, b in zip(x0, x1):
        s = _np_signs(ws, bs, a[None] + ts[:, None] * (b - a)[None])
        diff = s[1:] != s[:-1]
        totals.append(int(diff.sum()))
        where.append((ts[np.nonzero(diff)[0]], np.nonzero(diff)[1]))
    return np.array(totals), where


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_walk_equals_brute_force(seed):
    f, ws, bs = _net(seed)
    rng = np.random.default_rng(100 + seed)
    x0, x1 = rng.normal(size=(2, 5, 3)) * 2
    walk = exact_walk(f, x0, x1, max_crossings=128)
    totals, where = _brute_force(ws, bs, x0, x1)
    assert not walk.truncated.any()
    assert walk.affine_error.max() < 1e-9
    np.testing.assert_array_equal(walk.n_boundaries, totals)
    np.testing.assert_array_equal(walk.n_regions, walk.n_crossings + 1)
    np.testing.assert_allclose(walk.length, np.linalg.norm(x1 - x0, axis=1))
    for p in range(5):
        k = int(walk.n_crossings[p])
        pos = walk.positions[p, :k]
        assert np.all(np.diff(pos) > 0) and np.all((pos > 0) & (pos < 1)) and np.isnan(walk.positions[p, k:]).all()
        # every crossing sits in the sampling step where the brute force sees the same unit flip
        t_bf, unit_bf = where[p]
        got = sorted((int(u), t) for e in range(k) for u in _flat_units(walk, p, e) for t in [pos[e]])
        want = sorted(zip(unit_bf.tolist(), t_bf.tolist()))
        assert [u for u, _ in got] == [u for u, _ in want]
        np.testing.assert_allclose([t for _, t in got], [t for _, t in want], atol=2e-5)


def test_exact_walk_on_a_residual_network():
    rng = np.random.default_rng(7)
    w1, w2 = (rng.normal(size=(2, 4, 4)) / 2).astype(np.float32)
    b1, b2 = (0.3 * rng.normal(size=(2, 4))).astype(np.float32)

    def f(x):  # two residual blocks x + relu(x W + b)
        h = x + jax.nn.relu(dense(x, w1, b1))
        return h + jax.nn.relu(dense(h, w2, b2))

    x0, x1 = rng.normal(size=(2, 3, 4)) * 3
    walk = exact_walk(f, x0, x1)
    ts = np.linspace(0, 1, 100_001)
    for p in range(3):
        x = x0[p][None] + ts[:, None] * (x1[p] - x0[p])[None]
        z1 = x @ w1 + b1
        z2 = (x + np.maximum(z1, 0)) @ w2 + b2
        s = np.concatenate([z1 > 0, z2 > 0], axis=1)
        assert walk.n_boundaries[p] == (s[1:] != s[:-1]).sum()
    assert walk.affine_error.max() < 1e-9


def _flat_units(walk, path, event):
    offsets = dict(zip(walk.layout.names, walk.layout.offsets))
    return [offsets[name] + idx[0] for name, idx in walk.flipped_units(path, event)]


@functools.lru_cache(maxsize=None)
def _walked(seed):
    f, _, _ = _net(seed)
    x0, x1 = np.random.default_rng(seed).normal(size=(2, 4, 3)).astype(np.float32) * 2
    return f, x0, x1, exact_walk(f, x0, x1, max_crossings=128)


@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seed=st.integers(0, 2), n_steps=st.integers(1, 60))
def test_sampled_counts_never_exceed_exact(seed, n_steps):
    f, x0, x1, exact = _walked(seed)
    sampled = sampled_boundary_counts(f, x0, x1, n_steps=n_steps)
    assert sampled.counts.shape == (4, n_steps, 3)
    assert np.all(np.asarray(sampled.total) <= exact.n_boundaries)
    assert np.all(np.asarray(sampled.counts.sum(1)) <= exact.layer_flips.sum(1))


def test_sampled_definitions_and_convergence():
    f, ws, bs = _net(0)
    rng = np.random.default_rng(5)
    x0, x1 = rng.normal(size=(2, 3, 3)).astype(np.float32) * 2
    s = sampled_boundary_counts(f, x0, x1, n_steps=50, batch_size=2)
    ts = np.linspace(0, 1, 51)
    for p in range(3):
        sig = _np_signs(ws, bs, x0[p][None].astype(np.float64) + ts[:, None] * (x1[p] - x0[p])[None])
        h = (sig[1:] != sig[:-1])
        np.testing.assert_array_equal(np.asarray(s.counts[p, :, 1]), h[:, 6:11].sum(1))
        np.testing.assert_array_equal(np.asarray(s.counts[p]).sum(1), h.sum(1))
    length = np.linalg.norm(x1 - x0, axis=1)
    np.testing.assert_allclose(np.asarray(s.density), np.asarray(s.total) / length, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s.step_density).mean(1), np.asarray(s.density), rtol=1e-5)
    fine = sampled_boundary_counts(f, x0, x1, n_steps=20_000)
    exact = exact_walk(f, x0, x1)
    np.testing.assert_array_equal(np.asarray(fine.total), exact.n_boundaries)
    assert jnp.ones(1).dtype == jnp.float32  # float64 stays local to the walk


def test_vmapped_walk_equals_single_walks_and_truncation():
    f, _, _ = _net(1)
    rng = np.random.default_rng(3)
    x0, x1 = rng.normal(size=(2, 6, 3)) * 2
    batched = exact_walk(f, x0, x1, max_crossings=64, batch_size=4)
    for p in (0, 5):
        one = exact_walk(f, x0[p : p + 1], x1[p : p + 1], max_crossings=64)
        np.testing.assert_array_equal(one.n_flips[0], batched.n_flips[p])
        np.testing.assert_allclose(one.positions[0], batched.positions[p], rtol=1e-12)
        np.testing.assert_array_equal(one.regions[0], batched.regions[p])
    short = exact_walk(f, x0, x1, max_crossings=2, keep_regions=False)
    assert short.regions is None
    many = batched.n_crossings > 2
    np.testing.assert_array_equal(short.truncated, many)
    assert short.n_crossings.max() <= 2


def test_walk_in_activation_space_counts_later_layers():
    model = models.MLP(hidden=(8, 6, 5), n_classes=2)
    params = models.init_params(model, (3,), key=jax.random.key(0))
    params = jax.tree.map(lambda v: v + 0.05, params)
    fn = lambda v: model.apply(params, v)  # noqa: E731
    p = params["params"]

    def tail(h):  # the network after Dense_0's ReLU
        h = jax.nn.relu(dense(h, p["Dense_1"]["kernel"], p["Dense_1"]["bias"]))
        h = jax.nn.relu(dense(h, p["Dense_2"]["kernel"], p["Dense_2"]["bias"]))
        return dense(h, p["Dense_3"]["kernel"], p["Dense_3"]["bias"])

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    h = np.asarray(layer_activations(fn, x, "Dense_0/relu"))
    want = np.maximum(x @ np.asarray(p["Dense_0"]["kernel"]) + np.asarray(p["Dense_0"]["bias"]), 0)
    np.testing.assert_allclose(h, want, rtol=1e-5, atol=1e-6)
    walk = exact_walk(tail, h[:3], h[3:])
    assert walk.layout.names == ("relu_0", "relu_1")
    ws = [np.asarray(p[f"Dense_{i}"]["kernel"], np.float64) for i in (1, 2, 3)]
    bs = [np.asarray(p[f"Dense_{i}"]["bias"], np.float64) for i in (1, 2, 3)]
    totals, _ = _brute_force(ws, bs, h[:3].astype(np.float64), h[3:].astype(np.float64), n=50_000)
    np.testing.assert_array_equal(walk.n_boundaries, totals)


def test_maxpool_units_make_cnn_walk_exact():
    model = models.CNN(channels=(3, 4), hidden=6, n_classes=2)
    params = models.init_params(model, (8, 1), key=jax.random.key(1))
    params = jax.tree.map(lambda v: v + 0.02, params)
    fn = lambda v: model.apply(params, v)  # noqa: E731
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(2, 3, 8, 1))
    pools = {"Conv_0/relu": 2, "Conv_1/relu": 2}
    with_pool = exact_walk(fn, x0, x1, maxpool=pools, max_crossings=256, check="raise")
    with pytest.warns(RuntimeWarning, match="reduce_window_max"):  # argmax switches: kinks the walk did not know
        without = exact_walk(fn, x0, x1, max_crossings=256)
    assert with_pool.affine_error.max() < 1e-9
    assert without.affine_error.max() > 1e-6 and without.flagged.all() and not with_pool.flagged.any()
    pre = relu_preactivations(fn, maxpool=pools, promote=jnp.float64)  # float32 parameters, sampled in float64
    n = 50_000
    with jax.enable_x64(True):
        fine = sampled_boundary_counts(pre, jnp.asarray(x0), jnp.asarray(x1), n_steps=n, batch_size=1)
        total = np.asarray(fine.total)
        ts = jnp.linspace(0.0, 1.0, n + 1)[:, None, None]
        acts = [pre(jnp.asarray(x0[p])[None] + ts * jnp.asarray(x1[p] - x0[p])[None]) for p in range(3)]
    np.testing.assert_array_equal(with_pool.n_boundaries, total)
    # separate counts: sign flips, ordering changes and argmax changes, each against dense sampling
    kink = [np.concatenate([np.asarray(a[k]).reshape(n + 1, -1) > 0 for k in ("Conv_0/relu", "Conv_1/relu",
                                                                             "Dense_0/relu")], 1) for a in acts]
    np.testing.assert_array_equal(with_pool.sign_flips, [(k[1:] != k[:-1]).sum() for k in kink])
    np.testing.assert_array_equal(with_pool.sign_flips + with_pool.ordering_changes, with_pool.n_boundaries)
    windows = [np.concatenate([np.asarray(a[k])[:, : 2 * (a[k].shape[1] // 2)].reshape(n + 1, -1, 2, a[k].shape[2])
                               .argmax(2).reshape(n + 1, -1) for k in ("Conv_0/relu", "Conv_1/relu")], 1) for a in acts]
    np.testing.assert_array_equal(with_pool.n_argmax_changes, [(w[1:] != w[:-1]).sum() for w in windows])
    assert np.all(with_pool.n_linear_regions <= with_pool.n_regions)


def test_class_change_positions():
    logits = lambda v: jnp.concatenate([v[:, :1], 1.0 - v[:, :1]], axis=1)  # noqa: E731 - class 1 iff v0 < 0.5
    x0 = np.array([[0.0], [0.0], [2.0]], np.float32)
    x1 = np.array([[1.0], [0.2], [0.0]], np.float32)
    t = class_change_positions(logits, x0, x1, n_steps=1000)
    np.testing.assert_allclose(t[[0, 2]], [0.5, 0.75], atol=2e-3)
    assert np.isnan(t[1])


def test_bad_inputs():
    f, _, _ = _net(0)
    a = np.zeros((2, 3))
    b = np.ones((2, 3))
    with pytest.raises(ValueError, match="same shape"):
        exact_walk(f, a, np.ones((2, 4)))
    with pytest.raises(ValueError, match="identical endpoints"):
        exact_walk(f, a, a)
    with pytest.raises(ValueError, match="identical endpoints"):
        sampled_boundary_counts(f, a, np.stack([b[0], a[1]]))
    with pytest.raises(ValueError, match="NaN"):
        exact_walk(f, a, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="no ReLU"):
        exact_walk(Preactivations(lambda v: {}), a, b)
    with pytest.raises(ValueError, match="no ReLU"):
        sampled_boundary_counts(lambda v: v * 2.0, a, b)
    with pytest.raises(ValueError, match="tol"):
        exact_walk(f, a, b, tol=0.5)
    with pytest.raises(ValueError, match="`check`"):
        exact_walk(f, a, b, check="loud")
    with pytest.raises(ValueError, match="affine_tol"):
        exact_walk(f, a, b, affine_tol=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        sampled_boundary_counts(f, a, b, n_steps=0)


def _kinky_net(seed, cast=None):
    """A float32 MLP with leaky_relu, abs and clip layers, and its float64 numpy weights."""
    rng = np.random.default_rng(seed)
    sizes = (3, 6, 5, 4, 2)
    ws = [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [0.5 * rng.normal(size=b) for b in sizes[1:]]
    ws32 = [jnp.asarray(w, jnp.float32) for w in ws]
    bs32 = [jnp.asarray(b, jnp.float32) for b in bs]
    acts = (jax.nn.leaky_relu, jnp.abs, lambda z: jnp.clip(z, -1.0, 1.0))

    def f(x):
        h = x if cast is None else x.astype(cast)
        for w, b, act in zip(ws32, bs32, acts):
            h = act(dense(h, w, b))
        return dense(h, ws32[-1], bs32[-1])

    return f, [np.asarray(w, np.float64) for w in ws32], [np.asarray(b, np.float64) for b in bs32]


def _kinky_signs(ws, bs, x):
    """Sides of every kink (leaky_relu at 0, abs at 0, clip at -1 and +1) by a float64 numpy forward pass."""
    z1 = x @ ws[0] + bs[0]
    z2 = np.where(z1 >= 0, z1, 0.01 * z1) @ ws[1] + bs[1]
    z3 = np.abs(z2) @ ws[2] + bs[2]
    return np.concatenate([z1 > 0, z2 > 0, z3 > -1, z3 > 1], axis=-1)


def test_exact_walk_on_leaky_relu_abs_clip_equals_dense_float64_sampling():
    f, ws, bs = _kinky_net(0)
    rng = np.random.default_rng(11)
    x0, x1 = rng.normal(size=(2, 6, 3)) * 2
    walk = exact_walk(f, x0, x1, max_crossings=256, check="raise")
    assert walk.layout.names == ("leaky_relu", "abs", "clip_0", "clip_1")
    ts = np.linspace(0, 1, 100_001)
    want = [int((lambda s: (s[1:] != s[:-1]).sum())(_kinky_signs(ws, bs, a[None] + ts[:, None] * (b - a)[None])))
            for a, b in zip(x0, x1)]
    np.testing.assert_array_equal(walk.n_boundaries, want)
    assert walk.affine_error.max() < 1e-9 and not walk.flagged.any()


def test_exact_walk_flags_a_float32_cast():
    f, ws, bs = _kinky_net(0, cast=jnp.float32)
    rng = np.random.default_rng(11)
    x0, x1 = rng.normal(size=(2, 6, 3)) * 2
    with pytest.raises(ValueError, match="float32"):
        exact_walk(f, x0, x1, max_crossings=256, check="raise")
    with pytest.warns(RuntimeWarning, match="convert_element_type"):
        walk = exact_walk(f, x0, x1, max_crossings=256)
    assert walk.flagged.any()
    exact = exact_walk(f, x0, x1, max_crossings=256, promote=True, check="raise")  # the cast promoted too
    np.testing.assert_array_equal(exact.n_boundaries, exact_walk(_kinky_net(0)[0], x0, x1, max_crossings=256).n_boundaries)


def test_exact_walk_flags_a_smooth_network():
    w = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    f = lambda x: jax.nn.relu(jnp.tanh(x @ w) @ w.T)  # noqa: E731
    x0, x1 = np.random.default_rng(1).normal(size=(2, 2, 3)) * 3
    with pytest.raises(ValueError, match="smooth nonlinearities"):
        exact_walk(f, x0, x1, check="raise")


def test_exact_walk_on_lax_conv_with_float32_weights_equals_dense_sampling():
    rng = np.random.default_rng(4)
    k1 = rng.normal(size=(3, 1, 4)).astype(np.float32)
    k2 = (rng.normal(size=(3, 4, 2)) / 2).astype(np.float32)
    b1 = (0.3 * rng.normal(size=4)).astype(np.float32)

    def f(x):  # [batch, 10, 1] -> lax-level convolutions with float32 parameters
        conv = lambda h, k: jax.lax.conv_general_dilated(h, jnp.asarray(k), (1,), "VALID",  # noqa: E731
                                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return conv(jax.nn.relu(conv(x, k1) + b1.reshape(1, 1, -1)), k2).sum((1, 2))

    def signs(x):  # float64 numpy reference: [n, 8 * 4]
        win = np.stack([x[:, i : i + 3, :] for i in range(8)], 1)  # [n, 8, 3, 1]
        return (np.einsum("npkc,kco->npo", win, k1.astype(np.float64)) + b1 > 0).reshape(len(x), -1)

    x0, x1 = rng.normal(size=(2, 4, 10, 1))
    walk = exact_walk(f, x0, x1, check="raise")
    ts = np.linspace(0, 1, 100_001)
    want = [int((lambda s: (s[1:] != s[:-1]).sum())(signs(a[None] + ts[:, None, None] * (b - a)[None])))
            for a, b in zip(x0, x1)]
    np.testing.assert_array_equal(walk.n_boundaries, want)


def test_exact_walk_compiles_once_per_network_and_shape():
    f, _, _ = _net(2)
    traces = []

    def counted(x):
        traces.append(1)
        return f(x)

    rng = np.random.default_rng(9)
    x0, x1 = rng.normal(size=(2, 3, 3))
    exact_walk(counted, x0, x1, max_crossings=64)
    first = len(traces)
    again = exact_walk(counted, x0 + 0.5, x1 - 0.5, max_crossings=64)
    assert len(traces) == first  # the second walk reuses the compiled program
    np.testing.assert_array_equal(again.n_boundaries, exact_walk(f, x0 + 0.5, x1 - 0.5, max_crossings=64).n_boundaries)
