"""The midrange trainer: the per-epoch cosine schedule against PyTorch's recursive
CosineAnnealingLR formula, the nn.Linear initialisation bounds, one full-batch Adam step with
BatchNorm statistics carried, and bad arguments."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.midrange.lenet import LeNet, LinearHead
from jaxinterp.midrange.training import cosine_epoch_schedule, takes_train, torch_linear, train_epochs


def test_schedule_matches_pytorch_recursive_cosine_annealing():
    """PyTorch's CosineAnnealingLR (eta_min 0) updates lr_e = lr_{e-1} (1 + cos(pi e / T)) / (1 + cos(pi (e - 1) / T))
    once per epoch; evaluate that recursion for 80 epochs of 6 steps with T = 100."""
    lr0, spe, period = 1e-3, 6, 100
    expected, lr = [], lr0
    for e in range(80):
        if e > 0:
            lr = lr * (1 + math.cos(math.pi * e / period)) / (1 + math.cos(math.pi * (e - 1) / period))
        expected += [lr] * spe
    schedule = cosine_epoch_schedule(lr0, spe, period)
    ours = np.asarray(jax.vmap(schedule)(jnp.arange(80 * spe)))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    assert ours[-1] == pytest.approx(lr0 * (1 + math.cos(math.pi * 0.79)) / 2, rel=1e-5)


def test_torch_linear_init_is_uniform_within_one_over_sqrt_fan_in(key):
    params = torch_linear(400, 300).init(key, jnp.zeros((1, 400)))["params"]
    bound = 1 / math.sqrt(400)
    w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
    assert w.shape == (400, 300) and b.shape == (300,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # uniform on [-bound, bound]: variance bound^2 / 3 (120000 draws: relative error about 0.4 %)
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.02)
    assert np.abs(w).max() > 0.99 * bound


def test_one_full_batch_step_carries_batch_statistics_and_takes_an_adam_step(key):
    """One epoch of one full batch: the running statistics are those of the forward pass at the
    initial parameters, and every parameter moves by Adam's first step, -lr * g / (|g| + eps)."""
    model = LeNet(feat_size=5, dense=(6,), n_classes=3)
    x = np.asarray(jax.random.uniform(key, (24, 16, 16, 1)))
    y = np.arange(24) % 3
    init = jax.jit(model.init)(jax.random.key(1), jnp.asarray(x[:1]))
    out, losses = train_epochs(model, x, y, key=jax.random.key(2), epochs=1, batch_size=24, learning_rate=1e-2,
                               variables=init)

    def loss(params):
        logits, upd = model.apply({"params": params, "batch_stats": init["batch_stats"]}, jnp.asarray(x),
                                  train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean(), upd["batch_stats"]

    (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(init["params"])
    assert losses.shape == (1,) and losses[0] == pytest.approx(float(value), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(out["batch_stats"]), jax.tree_util.tree_leaves(stats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for p0, p1, g in zip(*(jax.tree_util.tree_leaves(t) for t in (init["params"], out["params"], grads))):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(np.asarray(p1) - np.asarray(p0), -1e-2 * g / (np.abs(g) + 1e-8),
                                   rtol=1e-3, atol=1e-6)


def test_rejects_bad_arguments(key):
    x, y = np.zeros((10, 4), np.float32), np.arange(10) % 2
    head = torch_linear(4, 2)
    with pytest.raises(ValueError, match="epochs"):
        train_epochs(head, x, y, key=key, epochs=0, batch_size=5)
    with pytest.raises(ValueError, match="batch_size"):
        train_epochs(head, x, y, key=key, epochs=1, batch_size=11)
    with pytest.raises(TypeError, match="floating"):
        train_epochs(head, x.astype(int), y, key=key, epochs=1, batch_size=5)
    with pytest.raises(ValueError, match="period_epochs"):
        cosine_epoch_schedule(1e-3, 6, 0)
    with pytest.raises(ValueError, match="in_features"):
        torch_linear(0, 2)


def test_dropout_networks_train_with_a_dropout_key_per_step(key):
    """A LeNet with dropout trains (each step gets its own dropout key) and the same key gives the
    same parameters."""
    x = np.asarray(jax.random.uniform(key, (40, 20, 20, 1)), np.float32)
    y = np.arange(40) % 3
    kw = dict(key=jax.random.key(1), epochs=2, batch_size=20)
    model = LeNet(feat_size=5, dense=(6,), dropout=0.3)
    a, losses_a = train_epochs(model, x, y, **kw)
    b, _ = train_epochs(model, x, y, **kw)
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(p, q)
    _, losses_plain = train_epochs(LeNet(feat_size=5, dense=(6,)), x, y, **kw)
    assert losses_a.shape == losses_plain.shape == (4,)
    assert losses_a[0] != losses_plain[0]  # the same initialisation and batch, units dropped


def test_modules_taking_train_get_a_dropout_key_and_batch_stats_need_train(key):
    """A module whose __call__ takes ``train`` trains with train=True (the authors' dropped-logit
    head learns, and the same key gives the same head); BatchNorm statistics on a module that
    cannot be put in training mode are refused."""
    x = np.asarray(jax.random.normal(key, (300, 5)), np.float32)
    y = (x[:, 0] > 0).astype(int)
    head = LinearHead(2, dropout=0.2)
    assert takes_train(head) and not takes_train(torch_linear(5, 2))
    kw = dict(key=jax.random.key(1), epochs=30, batch_size=100, learning_rate=1e-2)
    a, losses = train_epochs(head, x, y, **kw)
    b, _ = train_epochs(head, x, y, **kw)
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(p, q)
    assert np.mean(np.asarray(head.apply(a, x)).argmax(-1) == y) > 0.9  # a linearly separable task (chance 0.5)
    plain, _ = train_epochs(LinearHead(2), x, y, **kw)
    assert not np.array_equal(jax.tree.leaves(a)[0], jax.tree.leaves(plain)[0])  # logits were dropped
    dense = torch_linear(5, 2)
    variables = dense.init(key, x[:1])
    with pytest.raises(ValueError, match="train"):
        train_epochs(dense, x, y, key=key, epochs=1, batch_size=100,
                     variables={**variables, "batch_stats": {"mean": jnp.zeros(2)}})
