"""The authors' LeNet-style encoder: parameter counts of their EncoderCore (closed form), and the
forward pass (both BatchNorm modes) and running-average update against a numpy loop implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.midrange.lenet import LeNet, LinearHead


def test_parameter_counts_match_the_authors_encoder_at_64_pixels(key):
    variables = jax.eval_shape(LeNet(n_classes=3).init, key, jnp.zeros((1, 64, 64, 1)))  # shapes only
    sizes = sorted(int(np.size(p)) for p in jax.tree_util.tree_leaves(variables["params"]))
    # EncoderCore(feat_size=84) on 1 x 64 x 64: conv 1->6 and 6->16 (5 x 5), 60 -> 30 -> 26 -> 13
    # pixels, so 16 * 13 * 13 = 2704 inputs to dense 120, 84, 84; a linear head to 3 classes
    expected = sorted([6 * 25, 6, 6 * 16 * 25, 16, 2704 * 120, 120, 120 * 84, 84, 84 * 84, 84, 84 * 3, 3])
    assert sizes == expected
    # affine-free BatchNorms (no parameters): a running mean and variance per channel or unit
    stats = variables["batch_stats"]
    assert sorted(stats) == [f"BatchNorm_{i}" for i in range(5)]
    assert [stats[f"BatchNorm_{i}"]["mean"].shape[0] for i in range(5)] == [6, 16, 120, 84, 84]
    assert "batch_stats" not in jax.eval_shape(LeNet(batch_norm=False).init, key, jnp.zeros((1, 20, 20, 1)))


def _numpy_forward(variables, x, *, train):
    """The same network written with explicit loops (valid correlation, 2 x 2 mean pool, and
    BatchNorm over all axes but the last with the batch's or the running statistics).

    Returns logits, features and the batch statistics ``[(mean, biased var)]`` per BatchNorm."""
    p, stats = variables["params"], variables.get("batch_stats")
    batch_stats = []

    def norm(h, i):
        if stats is None:
            return h
        axes = tuple(range(h.ndim - 1))
        mean, var = h.mean(axes), ((h - h.mean(axes)) ** 2).mean(axes)
        batch_stats.append((mean, var))
        if not train:
            mean, var = (np.asarray(stats[f"BatchNorm_{i}"][k], np.float64) for k in ("mean", "var"))
        return (h - mean) / np.sqrt(var + 1e-5)

    h = x
    for i, name in enumerate(("Conv_0", "Conv_1")):
        k, b = np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])
        kh, kw = k.shape[:2]
        n, hh, ww, _ = h.shape
        out = np.zeros((n, hh - kh + 1, ww - kw + 1, k.shape[-1]))
        for r in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[:, r, c] = np.einsum("nabc,abcd->nd", h[:, r:r + kh, c:c + kw], k) + b
        out = np.maximum(out, 0)
        m, q = out.shape[1] // 2, out.shape[2] // 2
        h = norm(out[:, :2 * m, :2 * q].reshape(n, m, 2, q, 2, -1).mean((2, 4)), i)
    h = h.reshape(h.shape[0], -1)
    for i, name in enumerate(("Dense_0", "Dense_1", "Dense_2")):
        h = norm(np.maximum(h @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"]), 0), 2 + i)
    return h @ np.asarray(p["Dense_3"]["kernel"]) + np.asarray(p["Dense_3"]["bias"]), h, batch_stats


def _with_running_stats(variables, key):
    """The variables with random running statistics (so evaluation mode is not the identity)."""
    leaves, tree = jax.tree_util.tree_flatten(variables["batch_stats"])
    keys = jax.random.split(key, len(leaves))
    new = [jax.random.uniform(k, v.shape, minval=0.5, maxval=2.0) for k, v in zip(keys, leaves)]
    return {"params": variables["params"], "batch_stats": jax.tree_util.tree_unflatten(tree, new)}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_evaluation_forward_matches_a_numpy_loop(key, batch_norm):
    model = LeNet(feat_size=7, dense=(9, 8), n_classes=3, batch_norm=batch_norm)
    x = np.asarray(jax.random.uniform(key, (2, 20, 20, 1)))
    variables = jax.jit(model.init)(jax.random.key(1), jnp.asarray(x))
    if batch_norm:
        variables = _with_running_stats(variables, jax.random.key(2))
    logits, feats = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, jnp.asarray(x))
    ref_logits, ref_feats, _ = _numpy_forward(variables, x.astype(np.float64), train=False)
    assert feats.shape == (2, 7) and logits.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(feats), ref_feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-4, atol=1e-5)


def test_training_forward_uses_batch_statistics_and_updates_running_averages(key):
    """Batch mean and biased variance normalise; running = 0.9 running + 0.1 batch (PyTorch's
    momentum 0.1; the variance as Flax keeps it, biased)."""
    model = LeNet(feat_size=7, dense=(9, 8), n_classes=3)
    x = np.asarray(jax.random.uniform(key, (16, 20, 20, 1)))
    variables = _with_running_stats(jax.jit(model.init)(jax.random.key(1), jnp.asarray(x)), jax.random.key(2))
    (logits, feats), upd = jax.jit(lambda v, x: model.apply(v, x, return_features=True, train=True,
                                                            mutable=["batch_stats"]))(variables, jnp.asarray(x))
    ref_logits, ref_feats, batch = _numpy_forward(variables, x.astype(np.float64), train=True)
    np.testing.assert_allclose(np.asarray(feats), ref_feats, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.asarray(feats).mean(0), 0.0, atol=1e-4)  # features standardised over the batch
    for i, (mean, var) in enumerate(batch):
        old = variables["batch_stats"][f"BatchNorm_{i}"]
        new = upd["batch_stats"][f"BatchNorm_{i}"]
        np.testing.assert_allclose(np.asarray(new["mean"]), 0.9 * np.asarray(old["mean"]) + 0.1 * mean,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(new["var"]), 0.9 * np.asarray(old["var"]) + 0.1 * var,
                                   rtol=1e-4, atol=1e-5)


def test_rejects_inputs_too_small_or_not_images():
    with pytest.raises(ValueError, match="too small"):
        LeNet().init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    with pytest.raises(ValueError, match="batch, h, w"):
        LeNet().init(jax.random.key(0), jnp.zeros((1, 20, 20)))
    with pytest.raises(TypeError, match="batch_norm"):
        LeNet(batch_norm=1)
    with pytest.raises(ValueError, match="dropout"):
        LeNet(dropout=1.0)
    with pytest.raises(TypeError, match="dropout"):
        LeNet(dropout="0.2")


def test_dropout_acts_while_training_only_and_before_each_batch_norm(key):
    """Evaluation ignores dropout (the same outputs as without it); training drops a fraction p of
    the first pool's outputs and scales the rest by 1 / (1 - p), before the BatchNorm."""
    x = jax.random.uniform(key, (64, 20, 20, 1))
    plain, dropping = LeNet(feat_size=7, dense=(9, 8)), LeNet(feat_size=7, dense=(9, 8), dropout=0.5)
    variables = jax.jit(plain.init)(jax.random.key(1), x)
    np.testing.assert_array_equal(plain.apply(variables, x), dropping.apply(variables, x))

    def sown_first_pool(model, rng):
        # the input of the first BatchNorm, through Flax's intermediates of its Dropout
        _, state = model.apply(variables, x, train=True, rngs={"dropout": rng},
                               mutable=["batch_stats", "intermediates"],
                               capture_intermediates=lambda m, _: m.name in ("Dropout_0", "Conv_0"))
        return state["intermediates"]

    inter = sown_first_pool(dropping, jax.random.key(2))
    dropped = np.asarray(inter["Dropout_0"]["__call__"][0])
    conv = np.maximum(np.asarray(inter["Conv_0"]["__call__"][0]), 0.0)
    pooled = conv.reshape(64, 8, 2, 8, 2, 6).mean(axis=(2, 4))
    kept = dropped != 0
    assert 0.45 < kept[pooled > 0].mean() < 0.55
    np.testing.assert_allclose(dropped[kept], 2.0 * pooled[kept], rtol=1e-5)
    other = np.asarray(sown_first_pool(dropping, jax.random.key(3))["Dropout_0"]["__call__"][0])
    assert not np.array_equal(other != 0, kept)


def test_torch_init_draws_every_layer_uniformly_within_one_over_sqrt_fan_in(key):
    """PyTorch's nn.Conv2d / nn.Linear defaults: weights and biases uniform in +/- 1 / sqrt(fan_in),
    fan_in = in_channels * 25 for the 5 x 5 convs and in_features for the dense layers; Flax's
    defaults (torch_init=False) leave the biases at zero."""
    params = LeNet(n_classes=3).init(key, jnp.zeros((1, 32, 32, 1)))["params"]
    fan_in = {"Conv_0": 25, "Conv_1": 6 * 25, "Dense_0": 16 * 5 * 5, "Dense_1": 120, "Dense_2": 84, "Dense_3": 84}
    assert sorted(params) == sorted(fan_in)
    for name, d in fan_in.items():
        bound = 1 / np.sqrt(d)
        w, b = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
        assert np.abs(w).max() <= bound and np.abs(b).max() <= bound, name
        assert np.abs(w).max() > 0.9 * bound and np.abs(b).max() > 0.1 * bound, name
        if w.size > 2000:  # uniform: variance bound^2 / 3 (relative error below 4 % at this size)
            assert w.var() == pytest.approx(bound**2 / 3, rel=0.1), name
    flax_params = LeNet(n_classes=3, torch_init=False).init(key, jnp.zeros((1, 32, 32, 1)))["params"]
    assert all(not np.asarray(flax_params[name]["bias"]).any() for name in fan_in)
    with pytest.raises(TypeError, match="torch_init"):
        LeNet(torch_init=1)


def test_dropout_drops_the_logits_while_training_as_the_authors_classifier(key):
    """The authors' classifier is nn.Sequential(nn.Linear, nn.Dropout(p)): training zeroes about
    p of the logits; evaluation is the plain linear map."""
    x = jax.random.uniform(key, (200, 20, 20, 1))
    model = LeNet(feat_size=7, dense=(9, 8), dropout=0.5)
    variables = jax.jit(model.init)(jax.random.key(1), x)
    logits, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    assert 0.4 < float(np.mean(np.asarray(logits) == 0.0)) < 0.6
    _, feats = model.apply(variables, x, return_features=True)
    p = variables["params"]["Dense_3"]  # dense 9, 8, the feature layer 7, then the logits
    expected = np.asarray(feats) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_linear_head_is_affine_in_evaluation_and_drops_logits_while_training(key):
    x = jax.random.normal(key, (500, 84))
    head = LinearHead(3, dropout=0.2)
    variables = head.init(jax.random.key(1), x)
    w, b = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
    assert np.abs(np.asarray(w)).max() <= 1 / np.sqrt(84) and np.abs(np.asarray(b)).max() <= 1 / np.sqrt(84)
    plain = np.asarray(x) @ np.asarray(w) + np.asarray(b)
    np.testing.assert_allclose(head.apply(variables, x), plain, rtol=1e-5, atol=1e-6)
    dropped = np.asarray(head.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)}))
    kept = dropped != 0.0
    assert 0.77 < kept.mean() < 0.83
    np.testing.assert_allclose(dropped[kept], plain[kept] / 0.8, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dropout"):
        LinearHead(3, dropout=1.0)
    with pytest.raises(ValueError, match="n_classes"):
        LinearHead(0)
