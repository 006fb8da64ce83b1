"""Direction metrics against scikit-learn, brute force and closed forms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, r2_score

from jaxinterp import directions as jd


def test_mse_and_explained_variance_match_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 7)).astype(np.float32) * np.arange(1, 8, dtype=np.float32) + 4.0
    x_hat = x + 0.3 * rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(float(jd.mse(x, x_hat)), mean_squared_error(x, x_hat), rtol=1e-5)
    # explained variance around the mean == variance-weighted R^2
    np.testing.assert_allclose(float(jd.explained_variance(x, x_hat)),
                               r2_score(x, x_hat, multioutput="variance_weighted"), rtol=1e-5)
    assert float(jd.explained_variance(x, x)) == pytest.approx(1.0)
    assert float(jd.explained_variance(x, np.broadcast_to(x.mean(0), x.shape))) == pytest.approx(0.0, abs=1e-5)


def test_sparsity_metrics_brute_force():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(100, 12)).astype(np.float32) * (rng.random((100, 12)) < 0.2)
    codes[:, 3] = 0.0
    codes[:90, 5] = 0.0  # alive only in the last 10 samples
    assert float(jd.l0(codes)) == pytest.approx(np.mean([np.count_nonzero(r) for r in codes]))
    dens = np.array([np.count_nonzero(codes[:, j]) / 100 for j in range(12)])
    np.testing.assert_allclose(np.asarray(jd.feature_density(codes)), dens, rtol=1e-6)
    assert float(jd.dead_fraction(codes)) == pytest.approx(np.mean(dens == 0))
    tail = codes[-30:]
    assert float(jd.dead_fraction(codes, window=30)) == pytest.approx(np.mean((tail != 0).sum(0) == 0))
    head_dead = np.mean((codes[:50] != 0).sum(0) == 0)
    assert float(jd.dead_fraction(codes[:50])) == pytest.approx(head_dead)
    h = jd.feature_density_histogram(codes, bins=10)
    assert h["counts"].sum() + h["dead"] == 12 and h["dead"] == int(np.sum(dens == 0))


def test_mean_max_cosine_invariant_to_permutation_sign_and_scale():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 10)).astype(np.float32)
    learned = -3.0 * w[::-1]
    assert float(jd.mean_max_cosine(learned, w)) == pytest.approx(1.0, abs=1e-6)
    assert float(jd.mean_max_cosine(learned, w, absolute=False)) < 0.5
    # brute force
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    other = rng.normal(size=(9, 10)).astype(np.float32)
    on = other / np.linalg.norm(other, axis=1, keepdims=True)
    want = np.mean([max(abs(a @ b) for b in on) for a in wn])
    assert float(jd.mean_max_cosine(other, w)) == pytest.approx(want, rel=1e-5)


def test_mcc_hungarian_equals_brute_force_assignment():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 5)).astype(np.float32)
    learned = z @ rng.normal(size=(5, 5)).astype(np.float32) * 0.5 + rng.normal(size=(300, 5)).astype(np.float32)
    c = np.abs(np.corrcoef(z.T, learned.T)[:5, 5:])
    best = max(np.mean([c[i, p[i]] for i in range(5)]) for p in itertools.permutations(range(5)))
    assert jd.mcc(z, learned) == pytest.approx(best, rel=1e-5)
    # a permuted, rescaled, sign-flipped copy is a perfect match
    perfect = -2.0 * z[:, [3, 1, 4, 0, 2]]
    assert jd.mcc(z, perfect) == pytest.approx(1.0, abs=1e-5)
    # fewer learned features than true ones: unmatched count as zero
    assert jd.mcc(z, z[:, :2]) == pytest.approx(2 / 5, abs=1e-5)


def test_correlation_matrix_handles_constant_columns():
    a = np.c_[np.arange(10.0), np.ones(10)].astype(np.float32)
    c = np.asarray(jd.correlation_matrix(a, a))
    np.testing.assert_allclose(c, [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)


def test_evaluate_reports_every_metric():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    d = jd.fit(jd.pca(6), x, key=jax.random.key(0))
    out = jd.evaluate(d, x, true_codes=x, true_directions=np.eye(6, dtype=np.float32), histogram=True)
    assert set(out) >= {"mse", "explained_variance", "l0", "dead_fraction", "mean_max_cosine", "mcc",
                        "density_histogram"}
    assert out["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="shape"):
        jd.evaluate(d, jnp.zeros((4, 5)))
