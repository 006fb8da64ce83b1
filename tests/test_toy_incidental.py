"""Incidental-polysemanticity model: loss, closed-form gradient, init, count, fourth norm."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.toy import incidental as inc


def _np_loss(w, x, l1, noise=None):
    """Independent float64 reference of the loss: sum (ReLU((xW + noise) W^T) - x)^2 + l1 |W|_1."""
    w = np.asarray(w, np.float64)
    h = np.asarray(x, np.float64) @ w
    if noise is not None:
        h = h + np.asarray(noise, np.float64)
    y = np.maximum(h @ w.T, 0.0)
    return np.sum((y - x) ** 2) + l1 * np.sum(np.abs(w))


def _weights(seed, n=5, m=9, scale=0.6):
    return jax.random.normal(jax.random.key(seed), (n, m)) * scale


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_gradient_equals_autodiff_under_jit(seed):
    w, l1 = _weights(seed), 0.01
    value, grad = jax.jit(inc.basis_loss_and_grad)(w, l1)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(inc.loss))(w, jnp.eye(w.shape[0]), l1)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(value, _np_loss(w, np.eye(w.shape[0]), l1), rtol=1e-5)


def test_closed_form_gradient_equals_finite_differences():
    w, l1 = np.asarray(_weights(4, n=4, m=6)), 0.05
    _, grad = inc.basis_loss_and_grad(jnp.asarray(w), l1)
    eps, fd = 1e-6, np.zeros_like(w, dtype=np.float64)
    x = np.eye(4)
    for idx in np.ndindex(w.shape):
        wp, wm = w.astype(np.float64), w.astype(np.float64)
        wp[idx] += eps
        wm[idx] -= eps
        fd[idx] = (_np_loss(wp, x, l1) - _np_loss(wm, x, l1)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4)


def test_loss_with_noise_matches_reference_and_autodiff_path():
    cfg = inc.IncidentalConfig(n_features=5, n_hidden=9, noise="bernoulli", noise_scale=0.1, l1=0.0)
    w, key = _weights(1), jax.random.key(3)
    noise = inc.sample_noise(key, cfg)
    np.testing.assert_allclose(np.abs(np.asarray(noise)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(inc.loss(w, jnp.eye(5), 0.0, noise), _np_loss(w, np.eye(5), 0.0, noise), rtol=1e-5)
    value, _ = jax.jit(inc.make_loss_and_grad(cfg))(w, key, None)
    np.testing.assert_allclose(value, _np_loss(w, np.eye(5), 0.0, noise), rtol=1e-5)
    g = inc.sample_noise(key, dataclasses.replace(cfg, noise="gaussian", noise_scale=0.5))
    assert g.shape == (9,) and 0.1 < float(jnp.std(g)) < 1.5


def test_autodiff_and_closed_form_loss_and_grad_agree():
    cfg = inc.IncidentalConfig(n_features=6, n_hidden=10, l1=1e-3)
    w = _weights(2, 6, 10)
    a = inc.make_loss_and_grad(cfg)(w, jax.random.key(0), None)
    b = inc.make_loss_and_grad(cfg, closed_form=False)(w, jax.random.key(0), None)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-5)


def test_init_scale_padding_and_determinism():
    cfg = inc.IncidentalConfig(n_features=64, n_hidden=256)
    w = inc.init_weights(jax.random.key(0), cfg)
    assert w.shape == (64, 256) and w.dtype == jnp.float32
    assert abs(float(jnp.std(w)) * 16 - 1) < 0.03          # N(0, 1/m): std 1/16
    np.testing.assert_array_equal(w, inc.init_weights(jax.random.key(0), cfg))
    padded = inc.init_weights(jax.random.key(0), dataclasses.replace(cfg, pad_hidden=300))
    assert padded.shape == (64, 300)
    np.testing.assert_array_equal(padded[:, :256], w)
    assert not np.any(np.asarray(padded[:, 256:]))
    via_hyper = inc.make_init(dataclasses.replace(cfg, n_hidden=300, pad_hidden=300))(
        jax.random.key(0), {"n_hidden": jnp.asarray(256)})
    np.testing.assert_allclose(via_hyper, padded, rtol=1e-6)


def test_count_on_hand_made_weights():
    w = np.zeros((4, 5), np.float32)
    w[0, 0], w[1, 0] = 1.0, -0.8          # neuron 0: two features (boundary 0.8 included) -> polysemantic
    w[2, 1], w[3, 1] = 1.2, 0.79          # neuron 1: 0.79 is out -> monosemantic
    w[0, 2], w[1, 2], w[2, 2] = 0.9, 1.1, -1.0   # neuron 2: three features -> polysemantic
    w[3, 3] = 1.21                         # neuron 3: out of range
    w[:, 4] = 0.5                          # neuron 4: weak everywhere
    assert int(inc.count_polysemantic(jnp.asarray(w))) == 2
    assert int(inc.count_polysemantic(jnp.asarray(w), min_features=3)) == 1
    assert int(inc.count_polysemantic(jnp.asarray(w), low=0.4, high=0.6)) == 1
    stack = jnp.stack([jnp.asarray(w), jnp.zeros((4, 5)), jnp.asarray(np.abs(w))])
    np.testing.assert_array_equal(jax.jit(inc.count_polysemantic)(stack), [2, 0, 2])
    # brute force on random weights
    r = np.asarray(jax.random.uniform(jax.random.key(1), (6, 30, 40), minval=-1.5, maxval=1.5))
    brute = [sum(sum(0.8 <= abs(r[s, i, k]) <= 1.2 for i in range(30)) >= 2 for k in range(40)) for s in range(6)]
    np.testing.assert_array_equal(inc.count_polysemantic(jnp.asarray(r)), brute)


def test_fourth_norm():
    assert float(inc.fourth_norm(jnp.eye(3, 7))) == pytest.approx(1.0)
    w = jnp.full((2, 4), 0.5)                 # unit rows spread over 4 neurons
    assert float(inc.fourth_norm(w)) == pytest.approx(0.25)
    np.testing.assert_allclose(inc.fourth_norm(jnp.stack([w, jnp.eye(2, 4)])), [0.25, 1.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_hidden"):
        inc.IncidentalConfig(n_hidden=0)
    with pytest.raises(TypeError, match="n_features"):
        inc.IncidentalConfig(n_features=2.5)
    with pytest.raises(ValueError, match="l1"):
        inc.IncidentalConfig(l1=-1.0)
    with pytest.raises(ValueError, match="noise"):
        inc.IncidentalConfig(noise="uniform")
    with pytest.raises(ValueError, match="optimizer"):
        inc.IncidentalConfig(optimizer="adam")
    with pytest.raises(ValueError, match="pad_hidden"):
        inc.IncidentalConfig(n_hidden=10, pad_hidden=5)
    with pytest.raises(TypeError, match="floating"):
        inc.count_polysemantic(jnp.ones((3, 4), jnp.int32))
    with pytest.raises(ValueError, match="rank"):
        inc.count_polysemantic(jnp.ones((3,)))
    with pytest.raises(ValueError, match="low <= high"):
        inc.count_polysemantic(jnp.ones((3, 4)), low=1.2, high=0.8)
    with pytest.raises(ValueError, match="x"):
        inc.forward(jnp.ones((3, 4)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="noise"):
        inc.forward(jnp.ones((3, 4)), jnp.ones((2, 3)), jnp.ones(3))


def test_optimizer_defaults():
    cfg = inc.IncidentalConfig()
    assert (cfg.n_features, cfg.n_hidden, cfg.l1, cfg.learning_rate, cfg.weight_decay, cfg.steps) == \
        (256, 256, 1e-3, 1e-3, 0.01, 7500)
    # the weight decay is in effect: a zero gradient still shrinks the weights by lr * wd
    opt = inc.make_optimizer(cfg)
    w = jnp.ones((2, 2))
    upd, _ = opt.update(jnp.zeros_like(w), opt.init(w), w)
    np.testing.assert_allclose(upd, -1e-3 * 0.01 * w, rtol=1e-6)


@pytest.mark.parametrize("field", ["l1", "learning_rate", "weight_decay", "noise_scale", "init_scale", "eps"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_config_rejects_non_finite_and_negative_settings_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}` must be a finite number"):
        inc.IncidentalConfig(**{field: value})


def test_config_rejects_zero_rates_and_non_numbers():
    for field in ("learning_rate", "init_scale"):
        with pytest.raises(ValueError, match=field):
            inc.IncidentalConfig(**{field: 0.0})
    with pytest.raises(TypeError, match="l1"):
        inc.IncidentalConfig(l1="0.001")
    with pytest.raises(TypeError, match="pad_hidden"):
        inc.IncidentalConfig(pad_hidden=300.0)
    inc.IncidentalConfig(l1=0.0, weight_decay=0.0, noise_scale=0.0)       # zero is allowed where it means "off"


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_weights_are_computed_in_float32(dtype):
    w16 = _weights(3).astype(dtype)
    w32 = jnp.asarray(w16, jnp.float32)
    value, grad = inc.basis_loss_and_grad(w16, 1e-3)
    ref_value, ref_grad = inc.basis_loss_and_grad(w32, 1e-3)
    assert value.dtype == dtype and grad.dtype == dtype
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(ref_grad.astype(dtype), np.float32))
    x = jnp.eye(5, dtype=dtype)
    np.testing.assert_array_equal(np.asarray(inc.forward(w16, x), np.float32),
                                  np.asarray(inc.forward(w32, jnp.eye(5)).astype(dtype), np.float32))
    assert inc.loss(w16, x, 1e-3).dtype == dtype
    np.testing.assert_array_equal(inc.count_polysemantic(w16), inc.count_polysemantic(w32))
    assert inc.fourth_norm(w16).dtype == dtype
