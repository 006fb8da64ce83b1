"""Jacobian-based boundary distances and density: against closed forms and direct computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _relu_nets import numpy_signs, random_relu_net
from jaxinterp.polytope.boundary import boundary_density, boundary_distances, sketch_relative_std


def _net(seed=0, sizes=(12, 10, 8, 3)):
    return random_relu_net(seed, sizes, 0.3)


def _direct(ws, bs, x):
    """Pre-activations and squared gradient norms by the chain rule, one input at a time."""
    zs, g2 = [], []
    for xi in x.astype(np.float64):
        h, jac, z_all, g_all = xi, np.eye(len(xi)), [], []
        for w, b in zip(ws[:-1], bs[:-1]):
            z = h @ w + b
            jz = jac @ w  # [dim, units]: gradient of each unit w.r.t. the input
            z_all.append(z)
            g_all.append((jz ** 2).sum(0))
            h, jac = np.maximum(z, 0), jz * (z > 0)
        zs.append(np.concatenate(z_all))
        g2.append(np.concatenate(g_all))
    return np.array(zs), np.array(g2)


def test_exact_distances_match_chain_rule_forward_and_reverse():
    f, ws, bs = _net()
    x = np.random.default_rng(1).normal(size=(16, 12)).astype(np.float32)
    z, g2 = _direct(ws, bs, x)
    for mode in ("forward", "reverse", "auto"):
        out = boundary_distances(f, x, mode=mode, batch_size=5)
        np.testing.assert_allclose(np.asarray(out.values), z, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.grad_sq_norms), g2, rtol=1e-4, atol=1e-6)
    d = np.asarray(out.distances)
    np.testing.assert_allclose(d, np.abs(z) / np.sqrt(g2), rtol=1e-4)
    # first-layer distances are exact: stepping that far towards the hyperplane lands on it
    w0, b0 = ws[0], bs[0]
    i = 3
    step = -np.sign(z[:, i])[:, None] * d[:, i : i + 1] * w0[:, i] / np.linalg.norm(w0[:, i])
    np.testing.assert_allclose((x + step) @ w0[:, i] + b0[i], 0, atol=1e-4)


def test_jitted_and_dead_units():
    f, ws, bs = _net()
    x = np.random.default_rng(2).normal(size=(4, 12)).astype(np.float32)
    out = jax.jit(lambda v: boundary_distances(f, v).distances)(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(boundary_distances(f, x).distances), rtol=1e-6)
    # a second-layer unit whose inputs are all dead has zero gradient: infinite distance
    dead = boundary_distances(lambda v: jax.nn.relu(jax.nn.relu(-jnp.abs(v) - 1.0) @ jnp.ones((12, 2)) + 0.5), x)
    assert dead.layout.names == ("abs", "relu_0", "relu_1")  # abs is a kink too: |v_i| is its distance
    np.testing.assert_allclose(np.asarray(dead.distances)[:, :12], np.abs(x), rtol=1e-6)
    assert np.isinf(np.asarray(dead.distances)[:, 24:]).all()


def test_sketch_is_unbiased_and_error_shrinks_like_inverse_sqrt_k():
    f, ws, bs = _net(seed=3, sizes=(40, 30, 20, 3))
    x = np.random.default_rng(4).normal(size=(8, 40)).astype(np.float32)
    exact = np.asarray(boundary_distances(f, x).grad_sq_norms)
    live = exact > 0
    errors = {}
    for k in (16, 1024):
        est = np.asarray(boundary_distances(f, x, method="sketch", n_probes=k, key=jax.random.key(k)).grad_sq_norms)
        rel = (est[live] - exact[live]) / exact[live]
        errors[k] = np.sqrt(np.mean(rel ** 2))
        assert errors[k] <= 1.2 * sketch_relative_std(k)  # the stated error bound (RMS over units)
        assert abs(rel.mean()) < 4 * sketch_relative_std(k) / np.sqrt(live.sum())  # unbiased
    ratio = errors[16] / errors[1024]
    assert 5.0 < ratio < 12.0  # sqrt(1024 / 16) = 8


def test_sketch_is_deterministic_in_its_key():
    f, _, _ = _net()
    x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    a = boundary_distances(f, x, method="sketch", n_probes=8, key=jax.random.key(1)).grad_sq_norms
    b = boundary_distances(f, x, method="sketch", n_probes=8, key=jax.random.key(1)).grad_sq_norms
    c = boundary_distances(f, x, method="sketch", n_probes=8, key=jax.random.key(2)).grad_sq_norms
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_density_counts_units_within_radius():
    f, ws, bs = _net()
    x = np.random.default_rng(5).normal(size=(10, 12)).astype(np.float32)
    out = boundary_distances(f, x)
    d = np.asarray(out.distances)
    for r in (0.1, 0.5, 2.0):
        np.testing.assert_allclose(np.asarray(boundary_density(d, r)), (d < r).sum(1) / r, rtol=1e-6)
        per = np.asarray(boundary_density(d, r, layout=out.layout))
        assert per.shape == (10, 2)
        np.testing.assert_allclose(per[:, 0], (d[:, :10] < r).sum(1) / r, rtol=1e-6)
        np.testing.assert_allclose(per.sum(1), (d < r).sum(1) / r, rtol=1e-6)


def test_bad_inputs():
    f, _, _ = _net()
    x = np.ones((2, 12), np.float32)
    with pytest.raises(ValueError, match="key"):
        boundary_distances(f, x, method="sketch")
    with pytest.raises(ValueError, match="method"):
        boundary_distances(f, x, method="magic")
    with pytest.raises(ValueError, match="NaN"):
        boundary_distances(f, np.full((2, 12), np.nan, np.float32))
    with pytest.raises(ValueError, match="no ReLU"):
        boundary_distances(lambda v: v @ jnp.ones((12, 2)), x)
    with pytest.raises(ValueError, match="radius"):
        boundary_density(np.ones((2, 3)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        boundary_density(np.ones(3), 1.0)


def test_boundary_density_counts_inf_as_far_and_refuses_nan():
    d = np.array([[0.1, np.inf, 0.3], [np.inf, np.inf, 0.05]], np.float32)
    np.testing.assert_allclose(np.asarray(boundary_density(d, 0.2)), [1 / 0.2, 1 / 0.2])
    with pytest.raises(ValueError, match="distances"):
        boundary_density(np.where(np.isinf(d), np.nan, d), 0.2)
    with pytest.raises(ValueError, match="distances"):
        boundary_density(d[:0], 0.2)
    with pytest.raises(TypeError, match="radius"):
        boundary_density(d, "0.2")


def test_half_precision_inputs_are_computed_in_float32():
    fn, _, _ = _net()
    x = np.random.default_rng(1).normal(size=(5, 12)).astype(np.float16)
    half = boundary_distances(fn, x).distances
    full = boundary_distances(fn, x.astype(np.float32)).distances
    assert half.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(half), np.asarray(full))
