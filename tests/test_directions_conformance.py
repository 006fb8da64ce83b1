"""One battery for every direction learner, run through the one driver ``fit``: shapes, dtype,
jit, vmap (over keys and numeric hyperparameters), determinism, state stability, pytree round
trip, bad input and bad hyperparameters; and for every metric, jit against eager."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import directions as jd

N, DIM, K = 240, 8, 4
SAE = dict(k=2, steps=10, batch_size=32)

# name -> (learner, needs non-negative data)
LEARNERS = {
    "kmeans": (jd.kmeans(K), False),
    "cosine_kmeans": (jd.kmeans(K, cosine=True), False),
    "cosine_kmeans_distance": (jd.kmeans(K, cosine=True, response="distance"), False),
    "minibatch_kmeans": (jd.minibatch_kmeans(K, batch_size=64, steps=20), False),
    "pca": (jd.pca(K), False),
    "pca_whiten": (jd.pca(K, whiten=True), False),
    "ica": (jd.ica(K), False),
    "nmf": (jd.nmf(K, max_iter=20, encode_iter=20), True),
    "dictionary": (jd.dictionary(K, alpha=0.1, steps=10, batch_size=32, encode_iter=50), False),
    **{f"sae_{kind}": (jd.sae(2 * K, kind=kind, **SAE), False) for kind in ("relu", "topk", "batchtopk", "jumprelu")},
}

# name -> (factory of one numeric hyperparameter, two values): sweeps are vmaps over these
SWEEPS = {
    "kmeans": (lambda t: jd.kmeans(K, tol=t), (1e-4, 1e-1)),
    "ica": (lambda t: jd.ica(K, tol=t), (1e-4, 1e-2)),
    "nmf": (lambda c: jd.nmf(K, max_iter=20, l1=c, encode_iter=20), (0.0, 0.5)),
    "dictionary": (lambda a: jd.dictionary(K, alpha=a, steps=10, batch_size=32, encode_iter=50), (0.05, 0.5)),
    "sae_relu": (lambda c: jd.sae(2 * K, kind="relu", coef=c, **SAE), (0.01, 1.0)),
    "sae_topk_lr": (lambda lr: jd.sae(2 * K, kind="topk", learning_rate=lr, **SAE), (1e-3, 1e-2)),
    "sae_jumprelu": (lambda c: jd.sae(2 * K, kind="jumprelu", coef=c, **SAE), (0.1, 3.0)),
}


@pytest.fixture(scope="module")
def data():
    # mixed Laplace sources: non-Gaussian, so ICA's answer is well defined (on Gaussian data every
    # rotation is equally good and the fit follows rounding noise, e.g. vmapped vs separate programs)
    rng = np.random.default_rng(0)
    x = (rng.laplace(size=(N, DIM)) @ rng.normal(size=(DIM, DIM)) / np.sqrt(2 * DIM)).astype(np.float32)
    return x, np.abs(x)


def _x(data, name):
    return data[1] if LEARNERS[name][1] else data[0]


#: one learner of each family runs in the default test run; the variants (cosine K-means, whitened
#: PCA, the other SAE kinds, ...) compile programs of their own and run with ``pytest -m slow``
DEFAULT_RUN = frozenset({"kmeans", "minibatch_kmeans", "pca", "ica", "nmf", "dictionary", "sae_topk", "sae_topk_lr"})


def _params(names):
    """``names`` as test parameters, those outside ``DEFAULT_RUN`` marked slow."""
    return [n if n in DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in names]


class _Fitted(dict):
    """Each learner fitted once per module, on first use (a test of one learner fits only that one)."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def __missing__(self, name):
        self[name] = jd.fit(LEARNERS[name][0], _x(self.data, name), key=jax.random.key(1))
        return self[name]


@pytest.fixture(scope="module")
def fitted(data):
    return _Fitted(data)


def _close(a, b, tol=1e-4):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_shapes_dtype_jit_and_strict_promotion(fitted, data, name):
    d, x = fitted[name], _x(data, name)
    k = d.n_directions
    assert d.components.shape == (k, DIM) and d.dim == DIM
    enc, codes = d.encode(x), d.codes(x)
    rec = d.decode(codes)
    assert enc.shape == (N, k) and codes.shape == (N, k) and rec.shape == (N, DIM)
    for a in (enc, codes, rec, d.components, d.unit_directions()):
        assert a.dtype == jnp.float32
        assert np.isfinite(np.asarray(a)).all()
    with jax.numpy_dtype_promotion("strict"):
        jenc, jrec = jax.jit(lambda dd, xx: (dd.encode(xx), dd.reconstruct(xx)))(d, jnp.asarray(x))
    assert jrec.dtype == jnp.float32
    _close(jenc, enc)
    _close(jrec, rec)


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_fit_under_jit_and_vmap_equals_separate_fits(fitted, data, name):
    """``jit(vmap(fit))`` over two keys, with the data traced, equals two eager fits."""
    learner, _ = LEARNERS[name]
    x = _x(data, name)
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    stacked = jax.jit(lambda xx, kk: jax.vmap(lambda k1: jd.fit(learner, xx, key=k1))(kk))(x, keys)
    assert stacked.components.shape == (2, fitted[name].n_directions, DIM)
    first, second = jd.unstack(stacked)
    assert type(first.encoder) is type(fitted[name].encoder)
    _close(first, fitted[name], 2e-3)
    _close(second, jd.fit(learner, x, key=jax.random.key(2)), 2e-3)


@pytest.mark.parametrize("name", _params(SWEEPS))
def test_vmap_over_numeric_hyperparameter_equals_separate_fits(data, name):
    make, values = SWEEPS[name]
    x = data[1] if name == "nmf" else data[0]
    key = jax.random.key(3)
    stacked = jax.vmap(lambda h: jd.fit(make(h), x, key=key))(jnp.asarray(values, jnp.float32))
    parts = jd.unstack(stacked)
    for value, part in zip(values, parts):
        alone = jd.fit(make(value), x, key=key)
        _close(part.components, alone.components, 2e-3)
        _close(part.encode(x[:16]), alone.encode(x[:16]), 2e-3)
    # the two settings give different directions (the hyperparameter reached the computation)
    assert not np.allclose(np.asarray(parts[0].components), np.asarray(parts[1].components), atol=1e-6)


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_update_keeps_state_structure(data, name):
    learner, _ = LEARNERS[name]
    x = jnp.asarray(_x(data, name))
    state = jax.eval_shape(learner.init, jax.random.key(0), x)
    new = jax.eval_shape(learner.update, state, x if learner.full_batch else x[:learner.batch_size])
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new)):
        assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_vmap_over_samples_equals_batch(fitted, name, data):
    d, x = fitted[name], _x(data, name)
    per = jax.jit(jax.vmap(lambda xi: d.encode(xi[None])[0]))(x[:16])
    _close(per, d.encode(x[:16]))


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_pytree_round_trip_and_stacking(fitted, name):
    d = fitted[name]
    leaves, tree = jax.tree_util.tree_flatten(d)
    again = jax.tree_util.tree_unflatten(tree, leaves)
    assert again.method == d.method and type(again.encoder) is type(d.encoder)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), d, d)
    parts = jd.unstack(stacked)
    assert len(parts) == 2 and type(parts[1].encoder) is type(d.encoder)
    np.testing.assert_array_equal(np.asarray(parts[1].components), np.asarray(d.components))


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_same_key_same_result(fitted, data, name):
    again = jd.fit(LEARNERS[name][0], _x(data, name), key=jax.random.key(1))
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(fitted[name])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", _params(LEARNERS))
def test_bad_input(data, fitted, name):
    learner, _ = LEARNERS[name]
    x = _x(data, name)
    key = jax.random.key(0)
    for bad_value in (np.nan, np.inf):
        bad = x.copy()
        bad[3, 2] = bad_value
        with pytest.raises(ValueError, match="`data` contains 1 NaN or infinite"):
            jd.fit(learner, bad, key=key)
    with pytest.raises(ValueError, match="`data` must have rank 2"):
        jd.fit(learner, x[0], key=key)
    with pytest.raises(TypeError, match="`data` must have a floating dtype"):
        jd.fit(learner, x.astype(np.int32), key=key)
    with pytest.raises(TypeError, match="`key`"):
        jd.fit(learner, x, key=0)
    d = fitted[name]
    with pytest.raises(ValueError, match="`x` must have shape"):
        d.encode(x[:, :3])
    with pytest.raises(ValueError, match="`codes`"):
        d.decode(np.zeros((2, d.n_directions + 1), np.float32))


@pytest.mark.parametrize("name", _params([n for n in LEARNERS if not n.startswith("sae")]))
def test_k_larger_than_data_is_an_error(data, name):
    with pytest.raises(ValueError, match="`k` must be <="):
        jd.fit(LEARNERS[name][0], _x(data, name)[:3], key=jax.random.key(0))


def test_nmf_rejects_negative_data(data):
    with pytest.raises(ValueError, match="`data` must be non-negative"):
        jd.fit(jd.nmf(K), data[0], key=jax.random.key(0))


BAD_HYPERPARAMETERS = [
    (lambda: jd.kmeans(0), "`k` must be >= 1"),
    (lambda: jd.kmeans(2.5), "`k` must be an int"),
    (lambda: jd.kmeans(K, response="angle"), "`response` must be one of"),
    (lambda: jd.kmeans(K, cosine="yes"), "`cosine` must be a bool"),
    (lambda: jd.kmeans(K, tol=-1.0), "`tol` must be a finite number"),
    (lambda: jd.kmeans(K, n_init=0), "`n_init` must be >= 1"),
    (lambda: jd.minibatch_kmeans(K, batch_size=0), "`batch_size` must be >= 1"),
    (lambda: jd.pca(K, method="qr"), "`method` must be one of"),
    (lambda: jd.ica(K, alpha=3.0), "`alpha` must be a finite number in"),
    (lambda: jd.ica(K, max_iter=0), "`max_iter` must be >= 1"),
    (lambda: jd.nmf(K, init="svd"), "`init` must be one of"),
    (lambda: jd.nmf(K, l1=float("nan")), "`l1` must be a finite number"),
    (lambda: jd.nmf(K, init="custom"), "`codes_init` and `components_init`"),
    (lambda: jd.dictionary(K, alpha=-0.1), "`alpha` must be a finite number"),
    (lambda: jd.dictionary(K, steps=0), "`steps` must be >= 1"),
    (lambda: jd.sae(8, kind="relu_l2"), "`kind` must be one of"),
    (lambda: jd.sae(8, kind="topk", k=9), "`k` must be <= 8"),
    (lambda: jd.sae(8, normalize="minmax"), "`normalize` must be one of"),
    (lambda: jd.sae(8, learning_rate=0.0), "`learning_rate` must be a finite number in \\(0"),
    (lambda: jd.sae(8, coef=-1.0), "`coef` must be a finite number"),
    (lambda: jd.sae(8, aux_k=-1), "`aux_k` must be an int >= 0"),
]


@pytest.mark.parametrize("make, message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_name_the_argument(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_driver_arguments_are_checked(data):
    x = data[0]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`steps` does not apply"):
        jd.fit(jd.pca(K), x, key=key, steps=10)
    with pytest.raises(TypeError, match="`learner`"):
        jd.fit(jd.pca, x, key=key)
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        jd.fit(jd.minibatch_kmeans(K), x, key=key, steps=0)
    with pytest.raises(TypeError, match="full-batch learner 'pca' needs `data` as an array"):
        jd.fit(jd.pca(K), iter([x]), key=key)
    with pytest.raises(ValueError, match="`steps` must be given"):
        jd.fit(jd.minibatch_kmeans(K), iter([x]), key=key)


# every metric, through jit, on the same codes
METRICS = {
    "mse": lambda x, r, c: jd.mse(x, r),
    "explained_variance": lambda x, r, c: jd.explained_variance(x, r),
    "l0": lambda x, r, c: jd.l0(c),
    "feature_density": lambda x, r, c: jd.feature_density(c),
    "cosine_matrix": lambda x, r, c: jd.cosine_matrix(x[:5], r[:7]),
    "correlation_matrix": lambda x, r, c: jd.correlation_matrix(x, c),
    "mean_max_cosine": lambda x, r, c: jd.mean_max_cosine(r[:7], x[:5]),
    "dead_fraction": lambda x, r, c: jd.dead_fraction(c),
}


@pytest.mark.parametrize("metric", list(METRICS))
def test_metrics_jit_equals_eager(fitted, data, metric):
    d, x = fitted["sae_topk"], jnp.asarray(data[0])
    c = d.codes(x)
    r = d.decode(c)
    fn = METRICS[metric]
    eager = fn(x, r, c)
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x, r, c)), np.asarray(eager), rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(eager)).all()


def test_metric_bad_shapes():
    a = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="x_hat"):
        jd.mse(a, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="rank"):
        jd.l0(jnp.zeros(3))
    with pytest.raises(ValueError, match="axis 0"):
        jd.correlation_matrix(a, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="window"):
        jd.dead_fraction(a, window=10)


# ---------------------------------------------------------------- the driver's data paths, resume, caching


@pytest.mark.slow  # 30-40 s on a 2-core CPU; the driver's other paths run by default
def test_memmap_gives_the_same_directions_as_the_array(data, tmp_path):
    x = data[0]
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    learner = jd.sae(2 * K, kind="topk", k=2, steps=30, batch_size=16)
    a = jd.fit(learner, x, key=jax.random.key(4), chunk_size=7)
    b = jd.fit(learner, np.load(tmp_path / "x.npy", mmap_mode="r"), key=jax.random.key(4), chunk_size=7, init_rows=N)
    _close(a, b, 1e-5)


def test_chunk_size_does_not_change_the_result(data):
    learner = jd.minibatch_kmeans(K, batch_size=32, steps=25)
    a = jd.fit(learner, data[0], key=jax.random.key(5), chunk_size=25)
    b = jd.fit(learner, data[0], key=jax.random.key(5), chunk_size=4)
    _close(a, b, 1e-6)


def _manual(learner, x, batches, key):
    state = learner.init(key, x)
    step = jax.jit(learner.update)
    for b in batches:
        state = step(state, jnp.asarray(b))
    return learner.finalize(state)


@pytest.mark.slow  # 30-40 s on a 2-core CPU; the driver's other paths run by default
def test_iterable_of_batches_equals_a_manual_update_loop(data):
    x = data[0]
    batches = [x[i:i + 40] for i in range(0, N, 40)] * 2      # 12 batches, in order
    for learner in (jd.sae(2 * K, kind="relu"), jd.minibatch_kmeans(K), jd.dictionary(K, encode_iter=20)):
        streamed = jd.fit(learner, batches, key=jax.random.key(6), chunk_size=5)
        k_init, _ = jax.random.split(jax.random.key(6))
        _close(streamed, _manual(learner, batches[0], batches, k_init), 1e-5)
    # a generator needs `steps`; a short last batch is fine
    gen = (x[i:i + 50] for i in range(0, N, 50))
    km = jd.fit(jd.minibatch_kmeans(K), gen, key=jax.random.key(6), steps=5)
    assert float(km.info["counts"].sum()) == N


class _Interrupted(Exception):
    pass


def _failing(batches, after):
    for i, b in enumerate(batches):
        if i == after:
            raise _Interrupted
        yield b


def test_checkpoint_resume_equals_an_uninterrupted_run(data, tmp_path):
    x = data[0]
    batches = [x[i:i + 24] for i in range(0, N, 24)] * 4      # 40 batches
    learner = jd.sae(2 * K, kind="topk", k=2)
    path = tmp_path / "sae.npz"
    whole = jd.fit(learner, batches, key=jax.random.key(7), chunk_size=10)
    with pytest.raises(_Interrupted):
        jd.fit(learner, _failing(batches, 25), key=jax.random.key(7), steps=40, chunk_size=10, checkpoint_path=path)
    resumed = jd.fit(learner, iter(batches), key=jax.random.key(7), steps=40, chunk_size=10, checkpoint_path=path)
    _close(resumed, whole, 1e-6)
    # in-memory sampling resumes the same way
    a = jd.fit(learner, x, key=jax.random.key(8), steps=30, chunk_size=10, checkpoint_path=tmp_path / "mem.npz")
    b = jd.fit(learner, x, key=jax.random.key(8), steps=30, chunk_size=10, checkpoint_path=tmp_path / "mem.npz")
    _close(a, b, 0.0)
    with pytest.raises(ValueError, match="belongs to a different run"):
        jd.fit(jd.sae(2 * K, kind="topk", k=2, learning_rate=1e-2), x, key=jax.random.key(8), steps=30,
               checkpoint_path=tmp_path / "mem.npz")
    with pytest.raises(ValueError, match="cannot be used under jit or vmap"):
        jax.vmap(lambda c: jd.fit(jd.sae(2 * K, coef=c), x, key=jax.random.key(8), steps=5,
                                  checkpoint_path=tmp_path / "v.npz"))(jnp.ones(2))


@pytest.mark.slow  # 30-40 s on a 2-core CPU; the driver's other paths run by default
def test_equal_learners_share_compiled_programs(data):
    """A second fit with a freshly built, equal learner compiles nothing new."""
    from jaxinterp.directions import learner as driver

    x = data[0]
    jd.fit(jd.sae(2 * K, kind="topk", k=2, steps=12, batch_size=16), x, key=jax.random.key(9), chunk_size=5)
    before = driver._sampled_chunk._cache_size()
    jd.fit(jd.sae(2 * K, kind="topk", k=2, steps=12, batch_size=16), x, key=jax.random.key(10), chunk_size=5)
    assert driver._sampled_chunk._cache_size() == before
    # a different static setting is a different program
    jd.fit(jd.sae(2 * K, kind="topk", k=3, steps=12, batch_size=16), x, key=jax.random.key(9), chunk_size=5)
    assert driver._sampled_chunk._cache_size() > before


_TRACES = []


def _counted_update(state, batch):
    _TRACES.append(1)
    return state + jnp.sum(batch)


def test_update_is_traced_once_per_chunk_length():
    """chex.assert_max_traces-style count: 3 chunks of 4 steps and one of 2 trace the update twice."""
    from jaxinterp.directions.learner import Learner, static

    learner = Learner(lambda key, x: jnp.zeros((), x.dtype), static(_counted_update),
                      lambda s: s, "counter", {}, steps=14, batch_size=3)
    x = np.ones((10, 2), np.float32)
    out = jd.fit(learner, x, key=jax.random.key(0), chunk_size=4)
    assert float(out) == 14 * 3 * 2 and len(_TRACES) == 2
    jd.fit(learner._replace(init=lambda key, x: jnp.ones((), x.dtype)), x, key=jax.random.key(1), chunk_size=4)
    assert len(_TRACES) == 2
