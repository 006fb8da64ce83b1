"""Sparse autoencoders: losses, straight-through gradients, dead-latent revival, sweeps, recovery."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import directions as jd
from jaxinterp.datasets import make_superposition_data
from jaxinterp.directions._sae import _aux_loss, _forward, heaviside, jumprelu, sae_loss


@pytest.fixture(scope="module")
def planted():
    x, z, w = make_superposition_data(0, 12000, 32, 16, 0.04)
    return x[:10000], z[:10000], x[10000:], z[10000:], w


def test_topk_sae_recovers_planted_features(planted):
    """TopK SAE on 32 sparse features in 16 dimensions: mean max cosine >= 0.9."""
    x, _, xe, ze, w = planted
    d = jd.fit(jd.sae(32, kind="topk", k=2, steps=1500, batch_size=256), x, key=jax.random.key(0))
    m = jd.evaluate(d, xe, true_codes=ze, true_directions=w)
    assert m["mean_max_cosine"] >= 0.9
    assert m["l0"] <= 2.0
    assert m["explained_variance"] > 0.7


@pytest.mark.parametrize("kind", ["relu", "topk", "batchtopk", "jumprelu"])
def test_every_kind_trains_with_unit_decoder_rows(planted, kind):
    x, _, xe, _, _ = planted
    learner = jd.sae(32, kind=kind, k=3, steps=200, batch_size=128, coef=0.3 if kind == "relu" else 0.05)
    key = jax.random.key(0)
    d = jd.fit(learner, x, key=key)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d.components), axis=1), 1.0, atol=1e-5)
    start = learner.finalize(learner.init(jax.random.split(key)[0], jnp.asarray(x)))
    # training improves reconstruction over the initialisation
    ev = float(jd.explained_variance(xe, d.reconstruct(xe)))
    assert ev > float(jd.explained_variance(xe, start.reconstruct(xe)))
    assert ev > 0.3
    assert int(d.info["steps"]) == 200
    if kind == "batchtopk":
        assert float(d.info["l0"]) == pytest.approx(3.0)
        assert isinstance(d.encoder, jd.BatchTopK) and float(d.encoder.threshold) > 0


def test_relu_loss_matches_manual(planted):
    x = planted[0][:64]
    learner = jd.sae(20, kind="relu", aux_k=0, coef=0.2)
    state = learner.init(jax.random.key(3), jnp.asarray(x))
    p = jax.tree_util.tree_map(np.asarray, state.params)
    rng = np.random.default_rng(0)
    p["b_enc"] = rng.normal(size=20).astype(np.float32) * 0.1
    u = (x - np.asarray(state.center)) / np.asarray(state.scale)
    f = np.maximum((u - p["b_dec"]) @ p["w_enc"] + p["b_enc"], 0)
    err = u - (f @ p["w_dec"] + p["b_dec"])
    want = (err**2).sum(1).mean() + 0.2 * (f * np.linalg.norm(p["w_dec"], axis=1)).sum(1).mean()
    config = dict(learner.update.settings)["config"]
    loss, (mse, l0, _, _) = sae_loss(p, jnp.asarray(u), jnp.float32(0.2), jnp.zeros(20, bool), config)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(l0), (f > 0).sum(1).mean(), rtol=1e-6)
    assert float(state.coef) == pytest.approx(0.2)


def test_jumprelu_straight_through_gradients():
    """d/dtheta of sum(g * jumprelu) is -(theta/eps) * sum_b g * rect((pre - theta)/eps); d/dpre is the gate."""
    rng = np.random.default_rng(0)
    pre = jnp.asarray(rng.normal(size=(50, 6)).astype(np.float32) * 0.1)
    theta = jnp.asarray(np.full(6, 0.05, np.float32))
    g = jnp.asarray(rng.normal(size=(50, 6)).astype(np.float32))
    eps = 0.04
    d_pre, d_theta = jax.grad(lambda p, t: jnp.sum(g * jumprelu(p, t, eps)), argnums=(0, 1))(pre, theta)
    pre_np, g_np = np.asarray(pre), np.asarray(g)
    rect = (np.abs((pre_np - 0.05) / eps) < 0.5).astype(np.float32)
    np.testing.assert_allclose(np.asarray(d_theta), (-(0.05 / eps) * rect * g_np).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d_pre), g_np * (pre_np > 0.05), atol=1e-7)
    h_theta = jax.grad(lambda t: jnp.sum(g * heaviside(pre, t, eps)))(theta)
    np.testing.assert_allclose(np.asarray(h_theta), (-(1 / eps) * rect * g_np).sum(0), rtol=1e-5, atol=1e-6)
    # forward values
    np.testing.assert_array_equal(np.asarray(jumprelu(pre, theta, eps)), np.where(pre_np > 0.05, pre_np, 0))


def test_sweep_by_vmap_equals_separate_runs(planted):
    """One vmap over (coef, seed) gives the same SAEs as training each alone with the same key."""
    x = planted[0]
    coefs = jnp.asarray([0.05, 0.05, 0.5, 0.5])
    keys = jnp.concatenate([jax.random.split(jax.random.key(5), 2)] * 2)

    def one(coef, key):
        return jd.fit(jd.sae(16, kind="relu", coef=coef, steps=30, batch_size=64), x, key=key)

    dirs = jax.vmap(one)(coefs, keys)
    assert dirs.components.shape == (4, 16, 16)
    for i, got in enumerate(jd.unstack(dirs)):
        alone = one(float(coefs[i]), keys[i])
        np.testing.assert_allclose(np.asarray(got.components), np.asarray(alone.components), atol=2e-4)
    # a larger L1 coefficient gives sparser codes
    l0s = [float(jd.l0(d.codes(planted[2]))) for d in jd.unstack(dirs)]
    assert max(l0s[2:]) < min(l0s[:2])


def test_aux_k_revives_dead_latents(planted):
    """Latents that never reach the top-k get no gradient from the main loss; aux-k revives them."""
    x = planted[0]
    dead_after = {}
    for aux_k in (0, 16):
        base = jd.sae(32, kind="topk", k=2, steps=400, batch_size=128, aux_k=aux_k, aux_coef=1.0, dead_window=512,
                      resample_every=0)  # the aux-k loss alone

        def init(key, sample, base=base):   # the first 16 encoder columns start nearly silent
            state = base.init(key, sample)
            return state._replace(params=dict(state.params, w_enc=state.params["w_enc"].at[:, :16].multiply(0.01)))

        d = jd.fit(base._replace(init=init), x, key=jax.random.key(0))
        dead_after[aux_k] = int(np.sum(np.asarray(jd.feature_density(d.codes(planted[2])))[:16] == 0))
    assert dead_after[0] >= 12
    assert dead_after[16] < dead_after[0] - 4


@pytest.mark.parametrize("normalize", ["zscore", "norm"])
def test_input_normalisation_makes_training_scale_free(planted, normalize):
    x, _, xe, _, _ = planted
    learner = jd.sae(24, kind="topk", k=3, steps=150, batch_size=128, normalize=normalize)
    shift = 3.0 * (normalize == "zscore")
    a = jd.fit(learner, x, key=jax.random.key(0))
    b = jd.fit(learner, 50.0 * x + shift, key=jax.random.key(0))
    xe_b = 50.0 * xe + shift
    ev_a = float(jd.explained_variance(xe, a.reconstruct(xe)))
    ev_b = float(jd.explained_variance(xe_b, b.reconstruct(xe_b)))
    assert ev_a == pytest.approx(ev_b, abs=2e-3)
    s = learner.init(jax.random.key(0), jnp.asarray(x))
    if normalize == "zscore":
        np.testing.assert_allclose(np.asarray(s.center), x.mean(0), atol=1e-5)
        np.testing.assert_allclose(np.asarray(s.scale), x.std(0), rtol=1e-4)
    else:
        u = x / np.asarray(s.scale)
        np.testing.assert_allclose((u**2).sum(1).mean(), x.shape[1], rtol=1e-4)


def _topk_loss_inputs(planted, aux_k):
    x = planted[0][:64]
    learner = jd.sae(20, kind="topk", k=3, aux_k=aux_k, aux_coef=0.5)
    state = learner.init(jax.random.key(3), jnp.asarray(x))
    u = jnp.asarray((x - np.asarray(state.center)) / np.asarray(state.scale))
    return state.params, u, dict(learner.update.settings)["config"]


def test_aux_k_loss_is_skipped_without_dead_latents_and_exact_with_them(planted):
    """The aux-k term runs under lax.cond: no dead latent gives the loss and gradients of aux_k=0;
    with dead latents it equals the aux-k loss written out in numpy."""
    params, u, config = _topk_loss_inputs(planted, aux_k=4)
    _, _, config0 = _topk_loss_inputs(planted, aux_k=0)
    grad = jax.grad(lambda p, c, dead: sae_loss(p, u, jnp.float32(0.0), dead, c)[0])
    none_dead = jnp.zeros(20, bool)
    for a, b in zip(jax.tree_util.tree_leaves(grad(params, config, none_dead)),
                    jax.tree_util.tree_leaves(grad(params, config0, none_dead))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    dead = np.zeros(20, bool)
    dead[[1, 4, 7, 9, 12, 15]] = True
    loss = float(sae_loss(params, u, jnp.float32(0.0), jnp.asarray(dead), config)[0])
    base = float(sae_loss(params, u, jnp.float32(0.0), jnp.asarray(dead), config0)[0])
    p = jax.tree_util.tree_map(np.asarray, params)
    un = np.asarray(u)
    pre = (un - p["b_dec"]) @ p["w_enc"] + p["b_enc"]
    top = np.argsort(-pre, axis=1)[:, :3]
    f = np.zeros_like(pre)
    np.put_along_axis(f, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    err = un - (f @ p["w_dec"] + p["b_dec"])
    masked = np.where(dead[None], pre, -np.inf)
    top_aux = np.argsort(-masked, axis=1)[:, :4]
    f_aux = np.zeros_like(pre)
    np.put_along_axis(f_aux, top_aux, np.maximum(np.take_along_axis(pre, top_aux, 1), 0), 1)
    aux = ((err - f_aux @ p["w_dec"]) ** 2).sum(1).mean()
    np.testing.assert_allclose(loss - base, 0.5 * aux, rtol=1e-4)


def test_aux_k_under_cond_equals_the_always_computed_loss_without_recompiling(planted):
    """With dead latents, the loss and gradients under lax.cond equal those of the aux-k term added
    unconditionally; one compiled program serves batches with and without dead latents."""
    params, u, config = _topk_loss_inputs(planted, aux_k=4)
    _, _, config0 = _topk_loss_inputs(planted, aux_k=0)

    def always(p, dead):   # the aux-k term computed on every call
        pre, f, w_dec, _ = _forward(p, u, config)
        err = u - (f @ w_dec + p["b_dec"][None, :])
        return sae_loss(p, u, jnp.float32(0.0), dead, config0)[0] + _aux_loss(pre, err, w_dec, dead, config=config)

    gated = jax.jit(jax.value_and_grad(lambda p, dead: sae_loss(p, u, jnp.float32(0.0), dead, config)[0]))
    dead = jnp.zeros(20, bool).at[jnp.asarray([0, 3, 8, 11, 19])].set(True)
    for mask in (dead, jnp.ones(20, bool), jnp.zeros(20, bool).at[5].set(True)):
        (loss, grads), (want, want_grads) = gated(params, mask), jax.value_and_grad(always)(params, mask)
        np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want_grads)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    gated(params, jnp.zeros(20, bool))
    assert gated._cache_size() == 1
