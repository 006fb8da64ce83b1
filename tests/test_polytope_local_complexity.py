"""Local complexity against a direct computation, and code clustering against hand counts."""

import jax
import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from _relu_nets import numpy_signs, random_relu_net
from jaxinterp.polytope import cluster_activations, cluster_codes, compare_clusterings, local_complexity, purity
from jaxinterp.polytope.codes import pack_bits
from jaxinterp.polytope.local_complexity import random_frames


def _net(seed=0, sizes=(6, 9, 7, 2)):
    return random_relu_net(seed, sizes, 0.2, np.float32)


_np_signs = numpy_signs


def test_random_frames_are_orthonormal():
    q = np.asarray(random_frames(jax.random.key(0), 3, 10, 4))
    assert q.shape == (3, 4, 10)
    np.testing.assert_allclose(np.einsum("bij,bkj->bik", q, q), np.broadcast_to(np.eye(4), (3, 4, 4)), atol=1e-5)


@pytest.mark.parametrize("radius", [0.05, 0.5, 3.0])
def test_local_complexity_matches_direct_computation(radius):
    f, ws, bs = _net()
    x = np.random.default_rng(1).normal(size=(12, 6)).astype(np.float32)
    key = jax.random.key(7)
    lc = local_complexity(f, x, key=key, radius=radius, n_directions=4)
    frames = np.asarray(random_frames(key, 12, 6, 4))
    want = []
    for i in range(12):
        verts = np.concatenate([x[i] + radius * frames[i], x[i] - radius * frames[i]])
        s = _np_signs(ws, bs, verts.astype(np.float64))
        cut = s.any(0) & ~s.all(0)
        want.append([cut[:9].sum(), cut[9:].sum()])
    np.testing.assert_array_equal(np.asarray(lc.per_layer), np.array(want))
    np.testing.assert_array_equal(np.asarray(lc.total), np.array(want).sum(1))


def test_local_complexity_grows_with_radius_and_is_deterministic():
    f, _, _ = _net(1)
    x = np.random.default_rng(2).normal(size=(30, 6)).astype(np.float32)
    key = jax.random.key(0)
    small = np.asarray(local_complexity(f, x, key=key, radius=1e-4, n_directions=6).total)
    big = np.asarray(local_complexity(f, x, key=key, radius=10.0, n_directions=6).total)
    assert small.mean() < big.mean()
    assert small.max() <= 2  # a tiny polytope is almost never cut
    again = np.asarray(local_complexity(f, x, key=key, radius=10.0, n_directions=6).total)
    np.testing.assert_array_equal(big, again)


def test_local_complexity_bad_inputs():
    f, _, _ = _net()
    x = np.ones((2, 6), np.float32)
    with pytest.raises(ValueError, match="n_directions"):
        local_complexity(f, x, key=jax.random.key(0), radius=1.0, n_directions=7)
    with pytest.raises(ValueError, match="radius"):
        local_complexity(f, x, key=jax.random.key(0), radius=-1.0, n_directions=2)
    with pytest.raises(ValueError, match="NaN"):
        local_complexity(f, np.full((2, 6), np.nan, np.float32), key=jax.random.key(0), radius=1.0, n_directions=2)


def test_purity_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    clusters = np.array([5, 5, 5, 7, 7, 7])
    assert purity(labels, clusters) == pytest.approx((2 + 2) / 6)
    assert purity(labels, labels) == 1.0
    with pytest.raises(ValueError):
        purity(labels, clusters[:3])


def test_code_clustering_recovers_planted_groups():
    rng = np.random.default_rng(0)
    protos = rng.random((3, 64)) < 0.5
    labels = np.repeat(np.arange(3), 20)
    bits = protos[labels] ^ (rng.random((60, 64)) < 0.05)  # 5% of bits flipped
    words = np.asarray(pack_bits(bits))
    for method in ("kmeans", "agglomerative"):
        assert purity(labels, cluster_codes(words, 3, method=method)) == 1.0
    # activations carrying no label information cluster badly
    acts = rng.normal(size=(60, 5))
    res = compare_clusterings(words, acts, labels, 3)
    assert res["purity_codes"] == 1.0 and res["nmi_codes"] == pytest.approx(1.0)
    assert res["purity_codes_agglomerative"] == 1.0
    assert res["purity_activations"] < 0.8 and res["purity_activations_agglomerative"] < 0.8
    np.testing.assert_allclose(res["nmi_activations"], normalized_mutual_info_score(
        labels, cluster_activations(acts, 3, method="kmeans")))
    with pytest.raises(ValueError, match="method"):
        cluster_activations(acts, 3, method="dbscan")
    with pytest.raises(ValueError, match="method"):
        cluster_codes(words, 3, method="dbscan")
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_codes(words, 61)


def test_local_complexity_names_bad_keys_radii_and_empty_batches():
    fn = _net()[0]
    x = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="key"):
        local_complexity(fn, x, key=jax.random.PRNGKey(0), radius=0.1, n_directions=2)
    with pytest.raises(TypeError, match="radius"):
        local_complexity(fn, x, key=key, radius="0.1", n_directions=2)
    with pytest.raises(ValueError, match="`x`"):
        local_complexity(fn, x[:0], key=key, radius=0.1, n_directions=2)
    half = local_complexity(fn, x.astype(np.float16), key=key, radius=0.1, n_directions=2).total
    full = local_complexity(fn, x.astype(np.float16).astype(np.float32), key=key, radius=0.1, n_directions=2).total
    np.testing.assert_array_equal(np.asarray(half), np.asarray(full))


def test_purity_refuses_non_integer_labels():
    with pytest.raises(TypeError, match="labels"):
        purity(np.array([0.0, 1.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="clusters"):
        purity(np.array([0, 1]), np.array([0, -1]))
