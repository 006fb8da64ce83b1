"""SAE training options: resampling dead latents, learning-rate and coefficient schedules, the
directly trained JumpReLU threshold with a target L0, and the unconstrained decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp import directions as jd
from jaxinterp.datasets import make_superposition_data
from jaxinterp.directions._sae import resample, sae_loss


@pytest.fixture(scope="module")
def planted():
    x, z, w = make_superposition_data(0, 12000, 32, 16, 0.04)
    return np.asarray(x[:10000]), np.asarray(z[:10000]), np.asarray(x[10000:]), np.asarray(z[10000:]), w


def _config(learner):
    return dict(learner.update.settings)["config"]


def _silence(learner, n):
    """``learner`` whose first ``n`` encoder columns start nearly silent (they die under TopK)."""
    def init(key, sample):
        state = learner.init(key, sample)
        return state._replace(params=dict(state.params, w_enc=state.params["w_enc"].at[:, :n].multiply(0.01)))

    return learner._replace(init=init)


def _scan_updates(learner, state, batch, n):
    """``n`` updates on the same ``batch``; the per-step states stacked."""
    def body(s, _):
        s = learner.update(s, batch)
        return s, s

    return jax.jit(lambda s: jax.lax.scan(body, s, None, length=n)[1])(state)


# ---------------------------------------------------------------- resampling


def test_resampling_revives_dead_latents(planted):
    """16 of 32 latents start silent: without a remedy most of them stay dead; resampling revives them."""
    x, _, xe, _, _ = planted
    dead, ev = {}, {}
    for every in (0, 50):
        learner = jd.sae(32, kind="topk", k=2, steps=300, batch_size=128, aux_k=0, dead_window=512,
                         resample_every=every, resample_until=200)
        d = jd.fit(_silence(learner, 16), x, key=jax.random.key(0))
        dead[every] = int(np.sum(np.asarray(jd.feature_density(d.codes(xe)))[:16] == 0))
        ev[every] = float(jd.explained_variance(xe, d.reconstruct(xe)))
        assert (int(d.info["n_resampled"]) > 0) == (every > 0)
    assert dead[0] >= 12
    assert dead[50] <= 2
    assert ev[50] > ev[0] + 0.05  # the revived latents are used


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_resample_step_matches_its_definition(planted):
    """Dead latents: decoder row = unit(u_i - b_dec) for distinct batch rows i, encoder column = that row
    times 0.2 times the live latents' mean encoder norm, bias 0, Adam moments 0; live latents untouched."""
    learner = jd.sae(12, kind="topk", k=2, resample_scale=0.2)
    config = _config(learner)
    x = planted[0][:40]
    state = learner.init(jax.random.key(1), jnp.asarray(x))
    batch = jnp.asarray(planted[0][40:80])
    state = jax.jit(learner.update)(state, batch)  # non-zero moments
    u = (batch - state.center[None, :]) / state.scale[None, :]
    dead = np.zeros(12, bool)
    dead[[2, 5, 6, 11]] = True
    params, opt = jax.jit(resample, static_argnums=5)(state.params, state.opt_state, u, jnp.asarray(dead),
                                                      jax.random.key(7), config)
    p0 = jax.tree_util.tree_map(np.asarray, state.params)
    p1 = jax.tree_util.tree_map(np.asarray, params)
    v = np.asarray(u) - p0["b_dec"]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = [int(np.argmax(v @ p1["w_dec"][j])) for j in np.flatnonzero(dead)]
    assert len(set(rows)) == 4  # distinct inputs
    enc_norm = np.linalg.norm(p0["w_enc"], axis=0)[~dead].mean()
    for j, i in zip(np.flatnonzero(dead), rows):
        np.testing.assert_allclose(p1["w_dec"][j], v[i], atol=1e-6)
        np.testing.assert_allclose(p1["w_enc"][:, j], 0.2 * enc_norm * v[i], atol=1e-6)
        assert p1["b_enc"][j] == 0.0
    for name in ("w_dec", "b_enc"):
        np.testing.assert_array_equal(p1[name][~dead], p0[name][~dead])
    np.testing.assert_array_equal(p1["w_enc"][:, ~dead], p0["w_enc"][:, ~dead])
    adam0 = [s for s in jax.tree_util.tree_leaves(state.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)][0]
    adam1 = [s for s in jax.tree_util.tree_leaves(opt, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)][0]
    for moments0, moments1 in ((adam0.mu, adam1.mu), (adam0.nu, adam1.nu)):
        assert np.all(np.asarray(moments1["w_dec"])[dead] == 0) and np.all(np.asarray(moments1["w_enc"])[:, dead] == 0)
        np.testing.assert_array_equal(np.asarray(moments1["w_dec"])[~dead], np.asarray(moments0["w_dec"])[~dead])
        np.testing.assert_array_equal(np.asarray(moments1["b_dec"]), np.asarray(moments0["b_dec"]))
        assert np.any(np.asarray(moments0["w_dec"])[dead] != 0)


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_resampling_is_decided_by_the_state_and_vmaps(planted):
    """Under jit(vmap) over the learning rate, each member resamples as it would alone."""
    x = planted[0]

    def run(lr):
        learner = jd.sae(32, kind="topk", k=2, steps=60, batch_size=64, aux_k=0, dead_window=128,
                         resample_every=20, learning_rate=lr)
        return jd.fit(_silence(learner, 16), x, key=jax.random.key(2))

    lrs = jnp.asarray([1e-3, 3e-3])
    both = jax.jit(jax.vmap(run))(lrs)
    for i, got in enumerate(jd.unstack(both)):
        alone = run(float(lrs[i]))
        assert int(got.info["n_resampled"]) == int(alone.info["n_resampled"]) > 0
        np.testing.assert_allclose(np.asarray(got.components), np.asarray(alone.components), atol=2e-4)


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_learning_rate_schedule_equals_optax(planted, decay):
    """Warm-up: ``lr * (t + 1) / W`` (SAELens), i.e. optax.linear_schedule(0, lr, W) at t + 1; decay over
    the last D steps equals optax's linear / cosine decay; the coefficient warm-up likewise."""
    lr, steps, warm, dec, end = 4e-3, 40, 8, 12, 0.1
    learner = jd.sae(16, kind="relu", coef=0.5, learning_rate=lr, steps=steps, lr_warmup_steps=warm,
                     lr_decay_steps=dec, lr_decay=decay, lr_end=end, coef_warmup_steps=5)
    x = jnp.asarray(planted[0][:64])
    states = _scan_updates(learner, learner.init(jax.random.key(0), x), x, steps)
    t = np.arange(steps)
    tail = (optax.linear_schedule(lr, lr * end, dec) if decay == "linear"
            else optax.cosine_decay_schedule(lr, dec, alpha=end))
    with jax.numpy_dtype_promotion("standard"):  # optax's schedules mix integer steps with Python floats
        want = [float(optax.linear_schedule(0.0, lr, warm)(i + 1)) if i < warm else
                lr if i < steps - dec else float(tail(i - (steps - dec))) for i in t]
    np.testing.assert_allclose(np.asarray(states.lr), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states.coef_now), 0.5 * np.minimum(1.0, (t + 1) / 5), rtol=1e-6)


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_scheduled_step_is_adam_with_that_learning_rate(planted):
    """Three updates equal optax.adam driven by a warm-up schedule on the same gradients."""
    warm = 4
    learner = jd.sae(16, kind="topk", k=3, learning_rate=1e-2, steps=50, lr_warmup_steps=warm, aux_k=0,
                     grad_clip=0.0, decoder="free", resample_every=0)
    config = _config(learner)
    x = jnp.asarray(planted[0][:64])
    state = learner.init(jax.random.key(0), x)
    u = (x - state.center[None, :]) / state.scale[None, :]
    adam = optax.adam(optax.linear_schedule(1e-2 / warm, 1e-2, warm - 1))

    @jax.jit
    def reference(params, opt):
        grads = jax.grad(lambda p: sae_loss(p, u, 0.0, jnp.zeros(16, bool), config)[0])(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with Python floats
            upd, opt = adam.update(grads, opt, params)
        return optax.apply_updates(params, upd), opt

    params, opt = state.params, adam.init(state.params)
    update = jax.jit(learner.update)
    for _ in range(3):
        state = update(state, x)
        params, opt = reference(params, opt)
    for name in params:
        np.testing.assert_allclose(np.asarray(state.params[name]), np.asarray(params[name]), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- JumpReLU threshold


def _target_l0_run(x, steps, threshold_param="direct", target=3.0):
    learner = jd.sae(32, kind="jumprelu", target_l0=target, coef=10.0, init_threshold=0.01, bandwidth=0.05,
                     threshold_param=threshold_param, steps=steps, batch_size=256, learning_rate=3e-3)
    return jd.fit(learner, x, key=jax.random.key(0))


def test_jumprelu_threshold_trained_directly_moves_toward_target_l0(planted):
    """With the target-L0 loss the direct threshold moves far from its small initial value and the L0
    approaches the target; the log-parameterised threshold barely moves in the same steps."""
    x, _, xe, _, _ = planted
    direct, log = _target_l0_run(x, 300), _target_l0_run(x, 300, "log")
    moved = {name: float(np.median(np.asarray(d.encoder.threshold))) for name, d in (("direct", direct), ("log", log))}
    assert moved["direct"] > 10 * 0.01
    assert moved["log"] < moved["direct"] / 2
    assert float(jd.l0(direct.encode(xe))) == pytest.approx(3.0, rel=0.3)
    assert float(jd.l0(log.encode(xe))) > 2 * float(jd.l0(direct.encode(xe)))


@pytest.mark.slow
@pytest.mark.parametrize("target", [3.0, 6.0])
def test_jumprelu_target_l0_is_reached(planted, target):
    """After 600 steps the held-out L0 is within 10 % of the target."""
    x, _, xe, _, _ = planted
    assert float(jd.l0(_target_l0_run(x, 600, target=target).encode(xe))) == pytest.approx(target, rel=0.1)


def test_target_l0_loss_matches_formula(planted):
    x = planted[0][:64]
    learner = jd.sae(20, kind="jumprelu", coef=0.7, target_l0=2.5, aux_k=0)
    state = learner.init(jax.random.key(3), jnp.asarray(x))
    p = jax.tree_util.tree_map(np.asarray, state.params)
    p["threshold"] = np.random.default_rng(0).uniform(0.05, 0.6, 20).astype(np.float32)
    u = (x - np.asarray(state.center)) / np.asarray(state.scale)
    pre = (u - p["b_dec"]) @ p["w_enc"] + p["b_enc"]
    f = np.where(pre > p["threshold"], pre, 0)
    err = u - (f @ p["w_dec"] + p["b_dec"])
    want = (err**2).sum(1).mean() + 0.7 * ((pre > p["threshold"]).sum(1).mean() / 2.5 - 1) ** 2
    loss = sae_loss(p, jnp.asarray(u), jnp.float32(0.7), jnp.zeros(20, bool), _config(learner), jnp.float32(2.5))[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


# ---------------------------------------------------------------- unconstrained decoder


def _free_params(learner, x, seed=0):
    state = learner.init(jax.random.key(seed), jnp.asarray(x))
    rng = np.random.default_rng(seed)
    p = jax.tree_util.tree_map(np.asarray, state.params)
    p["w_dec"] = p["w_dec"] * rng.uniform(0.2, 3.0, (p["w_dec"].shape[0], 1)).astype(np.float32)
    p["b_enc"] = (rng.normal(size=p["b_enc"].shape) * 0.1).astype(np.float32)
    u = (x - np.asarray(state.center)) / np.asarray(state.scale)
    return state, p, u


def test_free_decoder_relu_loss_is_norm_weighted_l1(planted):
    """loss = mean ||u - f W_dec - b_dec||^2 + coef * mean sum_i f_i ||W_dec,i|| with non-unit rows."""
    x = planted[0][:64]
    learner = jd.sae(20, kind="relu", coef=0.3, decoder="free", aux_k=0)
    _, p, u = _free_params(learner, x)
    f = np.maximum((u - p["b_dec"]) @ p["w_enc"] + p["b_enc"], 0)
    err = u - (f @ p["w_dec"] + p["b_dec"])
    want = (err**2).sum(1).mean() + 0.3 * (f * np.linalg.norm(p["w_dec"], axis=1)).sum(1).mean()
    loss = sae_loss(p, jnp.asarray(u), jnp.float32(0.3), jnp.zeros(20, bool), _config(learner))[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_free_decoder_topk_selects_by_norm_scaled_preactivation(planted):
    x = planted[0][:64]
    learner = jd.sae(20, kind="topk", k=3, decoder="free", aux_k=0)
    state, p, u = _free_params(learner, x, seed=1)
    n = np.linalg.norm(p["w_dec"], axis=1)
    s = ((u - p["b_dec"]) @ p["w_enc"] + p["b_enc"]) * n
    top = np.argsort(-s, axis=1)[:, :3]
    f = np.zeros_like(s)
    np.put_along_axis(f, top, np.maximum(np.take_along_axis(s, top, 1), 0), 1)
    err = u - ((f / n) @ p["w_dec"] + p["b_dec"])
    loss = sae_loss(p, jnp.asarray(u), jnp.float32(0.0), jnp.zeros(20, bool), _config(learner))[0]
    np.testing.assert_allclose(float(loss), (err**2).sum(1).mean(), rtol=1e-5)
    # finalize folds the norms: unit components, the same reconstruction as the training forward pass
    d = learner.finalize(state._replace(params=jax.tree_util.tree_map(jnp.asarray, p)))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d.components), axis=1), 1.0, atol=1e-5)
    u_hat = (f / n) @ p["w_dec"] + p["b_dec"]
    want = u_hat * np.asarray(state.scale) + np.asarray(state.center)
    np.testing.assert_allclose(np.asarray(d.reconstruct(x)), want, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("kind", ["relu", "topk", "jumprelu"])
def test_free_decoder_trains_with_unconstrained_norms(planted, kind):
    x, _, xe, _, _ = planted
    learner = jd.sae(32, kind=kind, k=3, coef={"relu": 0.3, "jumprelu": 0.05}.get(kind), decoder="free",
                     steps=150, batch_size=128, learning_rate=3e-3)
    state = learner.init(jax.random.key(0), jnp.asarray(x))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(state.params["w_dec"]), axis=1), 0.1, rtol=1e-5)
    d = jd.fit(learner, x, key=jax.random.key(0))
    assert float(jd.explained_variance(xe, d.reconstruct(xe))) > 0.5
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d.components), axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- bad options


@pytest.mark.parametrize("kwargs, match", [
    (dict(decoder="tied"), "`decoder` must be one of"),
    (dict(threshold_param="softplus"), "`threshold_param` must be one of"),
    (dict(kind="topk", k=2, target_l0=3.0), "`target_l0` applies to kind='jumprelu'"),
    (dict(kind="jumprelu", target_l0=0.0), "`target_l0` must be a finite number in \\(0"),
    (dict(lr_warmup_steps=-1), "`lr_warmup_steps` must be an int >= 0"),
    (dict(steps=10, lr_warmup_steps=6, lr_decay_steps=6), "at most `steps`"),
    (dict(lr_decay="step"), "`lr_decay` must be one of"),
    (dict(lr_end=1.5), "`lr_end` must be a finite number"),
    (dict(coef_warmup_steps=2.5), "`coef_warmup_steps` must be an int >= 0"),
    (dict(resample_every=-3), "`resample_every` must be an int >= 0"),
    (dict(resample_scale=0.0), "`resample_scale` must be a finite number in \\(0"),
    (dict(decoder="free", decoder_init_norm=-1.0), "`decoder_init_norm`"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jd.sae(16, **kwargs)
