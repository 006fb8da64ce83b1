"""Direction learners against scikit-learn on the same data, with stated tolerances."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import NMF, PCA, FastICA
from sklearn.decomposition import sparse_encode as sk_sparse_encode
from sklearn.decomposition._nmf import _initialize_nmf

from jaxinterp import directions as jd


def _key(seed=0):
    return jax.random.key(seed)


@pytest.fixture(scope="module")
def blobs():
    x, _ = make_blobs(4000, n_features=10, centers=15, cluster_std=2.5, random_state=0)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- K-means


@pytest.mark.parametrize("n_init", [1, 5])
def test_kmeans_inertia_within_one_percent_of_sklearn(blobs, n_init):
    ours = jd.fit(jd.kmeans(15, n_init=n_init), blobs, key=_key())
    sk = KMeans(15, n_init=n_init, random_state=0).fit(blobs)
    assert float(ours.info["inertia"]) <= 1.01 * sk.inertia_
    # our reported inertia is the true objective of our centres
    d2 = ((blobs[:, None, :] - np.asarray(ours.components)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(float(ours.info["inertia"]), d2.min(1).sum(), rtol=1e-4)
    # codes are one-hot on the nearest centre
    np.testing.assert_array_equal(np.asarray(ours.codes(blobs)).argmax(1), d2.argmin(1))


def test_kmeans_best_of_inits_never_worse_than_one(blobs):
    one = jd.fit(jd.kmeans(15, n_init=1), blobs, key=_key(3))
    many = jd.fit(jd.kmeans(15, n_init=5), blobs, key=_key(3))
    assert float(many.info["inertia"]) <= float(one.info["inertia"]) * (1 + 1e-6)


def test_kmeans_same_key_same_result(blobs):
    a = jd.fit(jd.kmeans(15), blobs, key=_key(7))
    b = jd.fit(jd.kmeans(15), blobs, key=_key(7))
    np.testing.assert_array_equal(np.asarray(a.components), np.asarray(b.components))


def test_kmeans_plusplus_picks_distinct_rows(blobs):
    c = np.asarray(jd.kmeans_plusplus(blobs, 15, key=_key()))
    # every centre is a data row, and no row is chosen twice
    idx = [np.flatnonzero((blobs == r).all(1))[0] for r in c]
    assert len(set(idx)) == 15


def _numpy_lloyd(x, centers, tol, max_iter=300):
    """Plain Lloyd in float64 (every row against every centre, every iteration)."""
    x, c = x.astype(np.float64), np.asarray(centers, np.float64)
    for it in range(1, max_iter + 1):
        labels = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
        new = np.stack([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(len(c))])
        shift, c = ((new - c) ** 2).sum(), new
        if shift <= tol:
            return c, it
    return c, max_iter


@pytest.mark.parametrize("cosine", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_lloyd_with_distance_bounds_equals_plain_lloyd(blobs, cosine):
    """Hamerly's bounds skip rows, never change them: same centres and iteration count as a numpy
    Lloyd from the same k-means++ seeds (centres to 1e-4)."""
    from jaxinterp.directions._kmeans import _kmeans_plusplus, _lloyd

    x = blobs / np.linalg.norm(blobs, axis=1, keepdims=True) if cosine else blobs
    tol = 1e-6 * float(np.mean(np.var(x, axis=0)))
    key = _key(3)
    centers, inertia, n_iter = _lloyd(key, jax.numpy.asarray(x), tol, k=20, cosine=cosine, max_iter=300,
                                      n_local_trials=4)
    seeds = np.asarray(_kmeans_plusplus(key, jax.numpy.asarray(x), 20, 4), np.float64)
    if cosine:
        seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
        want, want_iter = seeds, 0
        for want_iter in range(1, 301):   # spherical Lloyd: argmax cosine, unit means
            labels = np.argmax(x @ want.T, axis=1)
            new = np.stack([x[labels == j].mean(0) if np.any(labels == j) else want[j] for j in range(20)])
            new /= np.linalg.norm(new, axis=1, keepdims=True)
            shift, want = ((new - want) ** 2).sum(), new
            if shift <= tol:
                break
    else:
        want, want_iter = _numpy_lloyd(x, seeds, tol)
    assert int(n_iter) == want_iter > 5
    np.testing.assert_allclose(np.asarray(centers), want, atol=1e-4)


def test_distance_bounds_hold_after_the_centres_move(blobs):
    """After random centre moves, the reassigned labels are the nearest centres, ``upper`` bounds the
    distance to it and ``lower`` the distance to every other centre (brute force in float64)."""
    from jaxinterp.directions._kmeans import _assign, _reassign

    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(blobs)
    xsq = jax.numpy.sum(x * x, axis=1)
    slack = 1e-3 * jax.numpy.sqrt(xsq + jax.numpy.max(xsq))
    c = blobs[rng.choice(len(blobs), 15, replace=False)]
    bounds = _assign(x, xsq, jax.numpy.asarray(c))
    reassign = jax.jit(_reassign)
    for scale in (0.01, 0.1, 0.5, 3.0):   # few to all rows stale: every gathering tier and the full pass
        new = (c + scale * rng.normal(size=c.shape)).astype(np.float32)
        bounds = reassign(x, xsq, slack, jax.numpy.asarray(new), jax.numpy.asarray(np.linalg.norm(new - c, axis=1)),
                           bounds)
        dist = np.sqrt(((blobs[:, None].astype(np.float64) - new[None]) ** 2).sum(-1))
        labels = np.asarray(bounds.labels)
        np.testing.assert_array_equal(labels, np.argmin(dist, axis=1))
        own = dist[np.arange(len(x)), labels]
        assert np.all(np.asarray(bounds.upper) >= own - 1e-4)
        dist[np.arange(len(x)), labels] = np.inf
        assert np.all(np.asarray(bounds.lower) <= dist.min(1) + 1e-4)
        c = new


def test_minibatch_kmeans_close_to_sklearn(blobs):
    ours = jd.fit(jd.minibatch_kmeans(15, batch_size=256, steps=400), blobs, key=_key())
    sk = MiniBatchKMeans(15, batch_size=256, n_init=1, random_state=0, max_iter=100).fit(blobs)

    def inertia(c):
        return ((blobs[:, None] - c[None]) ** 2).sum(-1).min(1).sum()

    assert inertia(np.asarray(ours.components)) <= 1.05 * inertia(sk.cluster_centers_)
    assert float(ours.info["counts"].sum()) == 400 * 256


def test_cosine_kmeans_objective_beats_normalised_sklearn(blobs):
    """Spherical K-means: sum(1 - cos) no worse than sklearn KMeans on unit rows (centres normalised)."""
    xn = blobs / np.linalg.norm(blobs, axis=1, keepdims=True)
    ours = jd.fit(jd.kmeans(15, cosine=True, n_init=3), blobs, key=_key())
    sk = KMeans(15, n_init=3, random_state=0).fit(xn)
    c = sk.cluster_centers_ / np.linalg.norm(sk.cluster_centers_, axis=1, keepdims=True)
    sk_obj = (1 - (xn @ c.T).max(1)).sum()
    assert float(ours.info["inertia"]) <= 1.01 * sk_obj
    ours_c = np.asarray(ours.components)
    np.testing.assert_allclose(float(ours.info["inertia"]), (1 - (xn @ ours_c.T).max(1)).sum(), rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(ours_c, axis=1), 1.0, atol=1e-5)


def test_kmeans_directions_encode_and_codes(blobs):
    d = jd.fit(jd.kmeans(15, cosine=True), blobs, key=_key())
    xn = blobs / np.linalg.norm(blobs, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(d.encode(blobs)), xn @ np.asarray(d.components).T, atol=1e-5)
    codes = np.asarray(d.codes(blobs))
    assert ((codes != 0).sum(1) <= 1).all()
    dist = jd.fit(jd.kmeans(15, response="distance"), blobs, key=_key())
    ref = -np.sqrt(((blobs[:, None] - np.asarray(dist.components)[None]) ** 2).sum(-1))
    np.testing.assert_allclose(np.asarray(dist.encode(blobs)), ref, rtol=1e-3, atol=1e-2)
    # plain K-means reconstructs each sample by its centroid
    rec = np.asarray(dist.reconstruct(blobs))
    np.testing.assert_allclose(rec, np.asarray(dist.components)[ref.argmax(1)], atol=1e-5)


# --------------------------------------------------------------------------- PCA


@pytest.mark.parametrize("method", ["svd", "cov"])
def test_pca_matches_sklearn_up_to_sign(method):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(600, 15)) @ rng.normal(size=(15, 15)) + 3.0).astype(np.float32)
    ours = jd.fit(jd.pca(6, method=method), x, key=_key())
    sk = PCA(6).fit(x)
    comps = np.asarray(ours.components)
    signs = np.sign((comps * sk.components_).sum(1))
    np.testing.assert_allclose(comps * signs[:, None], sk.components_, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ours.info["explained_variance"]), sk.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(ours.center), sk.mean_, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.encode(x)) * signs, sk.transform(x), rtol=1e-3, atol=1e-3)


def test_pca_from_moments_equals_pca():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 8)).astype(np.float32) @ np.diag(np.arange(1, 9)).astype(np.float32)
    full = jd.fit(jd.pca(4), x, key=_key())
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False).astype(np.float32)
    mom = jd.pca_from_moments(mean, cov, 4)
    np.testing.assert_allclose(np.abs(np.asarray(mom.components) @ np.asarray(full.components).T), np.eye(4), atol=1e-4)


def test_fit_pca_reconstruction_and_whitening():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    d = jd.fit(jd.pca(6), x, key=_key())
    np.testing.assert_allclose(np.asarray(d.reconstruct(x)), x, atol=1e-4)
    dw = jd.fit(jd.pca(3, whiten=True), x, key=_key())
    np.testing.assert_allclose(np.std(np.asarray(dw.encode(x)), axis=0, ddof=1), 1.0, rtol=1e-3)


# --------------------------------------------------------------------------- FastICA


def _mixed_sources(n=3000, seed=0):
    from scipy.signal import sawtooth

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 8, n)
    s = np.c_[np.sin(2 * t), np.sign(np.sin(3 * t)), sawtooth(2 * np.pi * t), rng.laplace(size=n)]
    a = rng.normal(size=(4, 7))
    return s, (s @ a).astype(np.float32)


def test_fastica_recovers_sklearn_sources_up_to_sign_and_permutation():
    s, x = _mixed_sources()
    ours = jd.fit(jd.ica(4), x, key=_key())
    sources = np.asarray(ours.encode(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = FastICA(4, whiten="unit-variance", random_state=0, max_iter=500).fit(x)
    s_sk = sk.transform(x)
    c = np.abs(np.corrcoef(sources.T, s_sk.T)[:4, 4:])
    # a signed permutation: every ours-source has exactly one sklearn partner with |corr| > 0.999
    assert (c.max(1) > 0.999).all() and sorted(c.argmax(1)) == [0, 1, 2, 3]
    c_true = np.abs(np.corrcoef(sources.T, s.T)[:4, 4:])
    assert (c_true.max(1) > 0.99).all()
    # unit variance sources and a consistent mixing matrix: decode(encode(x)) == x
    np.testing.assert_allclose(sources.std(0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(ours.reconstruct(x)), x, atol=1e-3 * np.abs(x).max())


def test_ica_sources_are_white_and_reject_low_rank():
    _, x = _mixed_sources(1000, seed=1)
    d = jd.fit(jd.ica(4), x, key=_key())
    np.testing.assert_allclose(np.cov(np.asarray(d.encode(x)), rowvar=False), np.eye(4), atol=2e-3)
    # rank 2 data cannot be whitened into 3 components
    low = np.c_[x[:, :2], x[:, :2] @ np.ones((2, 3), np.float32)]
    with pytest.raises(ValueError, match="numerical rank 2"):
        jd.fit(jd.ica(3), low, key=_key())


# --------------------------------------------------------------------------- NMF


@pytest.fixture(scope="module")
def nonneg():
    rng = np.random.default_rng(0)
    w = np.abs(rng.normal(size=(300, 6)))
    h = np.abs(rng.normal(size=(6, 25)))
    return (w @ h + 0.3 * np.abs(rng.normal(size=(300, 25)))).astype(np.float32)


@pytest.mark.parametrize("iters", [1, 10, 100])
def test_nmf_objective_equals_sklearn_cd_from_same_init(nonneg, iters):
    """Same initialisation, same number of sweeps: objective no worse than sklearn (rtol 1e-4)."""
    w0, h0 = _initialize_nmf(nonneg, 6, init="nndsvda", random_state=0)
    ours = jd.fit(jd.nmf(6, max_iter=iters, tol=0.0, init="custom", codes_init=w0, components_init=h0), nonneg,
                  key=_key()).info
    sk = NMF(6, init="custom", solver="cd", max_iter=iters, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = sk.fit_transform(nonneg, W=w0.copy(), H=h0.copy())
    sk_obj = 0.5 * np.sum((nonneg - w @ sk.components_) ** 2)
    assert float(ours["objective"]) <= sk_obj * (1 + 1e-4)
    assert int(ours["n_iter"]) == iters


@pytest.mark.parametrize("iters", [5, 50])
def test_nmf_default_objective_no_worse_than_sklearn_default(nonneg, iters):
    ours = jd.fit(jd.nmf(6, max_iter=iters, tol=0.0), nonneg, key=_key())
    sk = NMF(6, init="nndsvda", solver="cd", max_iter=iters, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = sk.fit_transform(nonneg)
    sk_obj = 0.5 * np.sum((nonneg - w @ sk.components_) ** 2)
    assert float(ours.info["objective"]) <= sk_obj * (1 + 1e-3)
    assert (np.asarray(ours.components) >= 0).all() and (np.asarray(ours.encode(nonneg)) >= 0).all()


def test_nmf_encode_solves_nnls(nonneg):
    from scipy.optimize import nnls

    d = jd.fit(jd.nmf(6, max_iter=50, encode_iter=300), nonneg, key=_key())
    codes = np.asarray(d.encode(nonneg[:20]))
    a = np.asarray(d.components, dtype=np.float64)
    for i in range(20):
        ref, _ = nnls(a.T, nonneg[i].astype(np.float64))
        np.testing.assert_allclose(codes[i], ref, atol=2e-3 * max(1.0, ref.max()))


# --------------------------------------------------------------------------- lasso / dictionary learning


@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("positive", [False, True])
def test_lasso_codes_within_1e4_of_sklearn_lasso_cd(alpha, positive):
    rng = np.random.default_rng(0)
    dct = rng.normal(size=(15, 20))
    dct /= np.linalg.norm(dct, axis=1, keepdims=True)
    x = rng.normal(size=(60, 20))
    ours = np.asarray(jd.sparse_encode(x.astype(np.float32), dct.astype(np.float32), alpha, positive=positive))
    ref = sk_sparse_encode(x, dct, algorithm="lasso_cd", alpha=alpha, max_iter=20000, positive=positive)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_dictionary_learning_recovers_planted_atoms():
    """Sparse codes on a random overcomplete dictionary: mean max |cos| >= 0.9."""
    from jaxinterp.datasets import make_superposition_data

    x, _, w = make_superposition_data(0, 8000, 24, 16, 0.05)
    d = jd.fit(jd.dictionary(24, alpha=0.05, steps=400, batch_size=256), x, key=_key())
    assert float(jd.mean_max_cosine(d.components, w)) >= 0.9
    norms = np.linalg.norm(np.asarray(d.components), axis=1)
    assert (norms <= 1 + 1e-5).all()


# ---------------------------------------------------------------- input policy (issue 12)


def test_kmeans_refuses_k_above_distinct_rows():
    """Three distinct rows repeated: k = 4 would repeat a centre, so it is an error naming `k`."""
    x = np.repeat(np.eye(3, 5, dtype=np.float32), 10, axis=0)
    assert len(np.unique(np.asarray(jd.fit(jd.kmeans(3), x, key=_key()).components), axis=0)) == 3
    for learner in (jd.kmeans(4), jd.kmeans(4, cosine=True), jd.minibatch_kmeans(4, steps=2, batch_size=8)):
        with pytest.raises(ValueError, match=r"`k` = 4 exceeds the 3 distinct"):
            jd.fit(learner, x, key=_key())
    # cosine K-means: positive multiples are the same direction
    with pytest.raises(ValueError, match="distinct directions"):
        jd.fit(jd.kmeans(4, cosine=True), np.concatenate([x, 2 * x]), key=_key())


def test_fit_refuses_raw_uint32_keys():
    with pytest.raises(TypeError, match="`key` must be a typed PRNG key"):
        jd.fit(jd.pca(2), np.eye(4, dtype=np.float32), key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("method", ["cov", "svd"])
def test_pca_at_1e30_equals_pca_of_scaled_data(method):
    """Covariance of centred, scaled data: the axes at 1e30 equal those at 1 (float32 would overflow)."""
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)
    ref = jd.fit(jd.pca(3, method=method), x, key=_key())
    big = jd.fit(jd.pca(3, method=method), x * np.float32(1e30), key=_key())
    np.testing.assert_allclose(np.asarray(big.components), np.asarray(ref.components), atol=1e-5)
    np.testing.assert_allclose(np.asarray(big.center) / 1e30, np.asarray(ref.center), rtol=1e-5, atol=1e-6)
    sk = PCA(3).fit(x.astype(np.float64))
    np.testing.assert_allclose(np.asarray(ref.info["explained_variance"]), sk.explained_variance_, rtol=1e-4)


@pytest.mark.parametrize("make", [lambda: jd.sae(16, steps=20, batch_size=16), lambda: jd.pca(3)])
def test_half_precision_is_computed_in_float32(make):
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    x16 = x.astype(np.float16)
    half = jd.fit(make(), x16, key=_key())
    ref = jd.fit(make(), x16.astype(np.float32), key=_key())
    assert half.components.dtype == np.float32
    np.testing.assert_allclose(np.asarray(half.components), np.asarray(ref.components), rtol=1e-6, atol=1e-6)


def test_sparse_encode_is_scale_equivariant_in_the_dictionary():
    """Atoms times s and penalty times s: the codes are divided by s (and stay finite at 1e20)."""
    rng = np.random.default_rng(0)
    x, dct = rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    ref = np.asarray(jd.sparse_encode(x, dct, 0.1, n_iter=500))
    # min 0.5||x - c (sD)||^2 + a s ||c||_1 has solution c = ref / s
    big = np.asarray(jd.sparse_encode(x, dct * np.float32(1e20), 0.1 * 1e20, n_iter=500))
    np.testing.assert_allclose(big * 1e20, ref, rtol=1e-3, atol=1e-5)
