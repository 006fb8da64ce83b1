"""intervene(): edited forwards equal hand-edited ones; patching reproduces the other input; grads are right."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import models
from jaxinterp.capture import (add_direction, capture, intervene, mean_ablate, patch_all, project_out,
                               zero_ablate)

ATOL = 1e-5


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(6)(x))
        x = nn.relu(nn.Dense(5)(x))
        return nn.Dense(3)(x)


def hand_mlp(p, x, edit0=lambda h: h, edit1=lambda h: h):
    """MLP forward with ``edit0`` / ``edit1`` applied to the two ReLU outputs."""
    p = jax.tree_util.tree_map(np.asarray, p["params"])  # a numpy reference
    h = edit0(np.maximum(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0))
    h = edit1(np.maximum(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], 0))
    return h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]


@pytest.fixture
def mlp(key):
    model = MLP()
    x = jax.random.normal(key, (7, 4))
    return model, model.init(jax.random.key(1), x), x


def test_zero_ablating_a_relu_layer_equals_the_hand_edited_forward(mlp):
    model, params, x = mlp
    want = hand_mlp(params, np.asarray(x), edit0=np.zeros_like)
    for name in ("Dense_0/relu", "Dense_0/relu:post"):  # relu(0) == 0: editing input or output agrees
        np.testing.assert_allclose(intervene(model.apply, {name: zero_ablate()})(params, x), want, atol=ATOL)
    assert not np.allclose(want, model.apply(params, x), atol=1e-3)


def test_mean_ablation_and_directions(mlp):
    model, params, x = mlp
    mean = np.linspace(-0.5, 1.0, 5)
    d = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    u = d / np.linalg.norm(d)
    got = intervene(model.apply, {"Dense_1/relu:post": mean_ablate(mean)})(params, x)
    np.testing.assert_allclose(got, hand_mlp(params, np.asarray(x), edit1=lambda h: np.broadcast_to(mean, h.shape)),
                               atol=ATOL)
    got = intervene(model.apply, {"Dense_1/relu:post": project_out(d)})(params, x)
    np.testing.assert_allclose(got, hand_mlp(params, np.asarray(x), edit1=lambda h: h - np.outer(h @ u, u)),
                               atol=ATOL)
    # editing the pre-activation: the ReLU is applied to the edited value
    got = intervene(model.apply, {"Dense_1/relu": add_direction(d, 0.7)})(params, x)
    p = jax.tree_util.tree_map(np.asarray, params["params"])
    h0 = np.maximum(np.asarray(x) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    h1 = np.maximum(h0 @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"] + 0.7 * d, 0)
    np.testing.assert_allclose(got, h1 @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"], atol=ATOL)


def test_patching_every_activation_reproduces_the_other_input(key):
    model = models.CNN(channels=(4, 6), hidden=8, n_classes=3)
    x = jax.random.normal(key, (2, 12, 12, 1))
    other = jax.random.normal(jax.random.key(9), (2, 12, 12, 1))
    params = model.init(jax.random.key(1), x)
    _, cache = capture(model.apply, post_activations=True)(params, other)
    patched = jax.jit(intervene(model.apply, patch_all(cache)))(params, x)
    np.testing.assert_allclose(patched, model.apply(params, other), atol=ATOL)
    assert not np.allclose(patched, model.apply(params, x), atol=1e-3)


def test_transformer_softmax_and_gelu_edits(key):
    def net(w, x):  # x [batch, t, d]
        pattern = jax.nn.softmax(jnp.einsum("btd,bsd->bts", x @ w["q"], x), axis=-1)
        h = x + pattern @ x
        return jax.nn.gelu(h @ w["up"]) @ w["down"]

    ks = jax.random.split(key, 4)
    w = {"q": jax.random.normal(ks[0], (4, 4)), "up": jax.random.normal(ks[1], (4, 8)),
         "down": jax.random.normal(ks[2], (8, 2))}
    x = jax.random.normal(ks[3], (3, 5, 4))
    uniform = lambda p: jnp.full_like(p, 1.0 / p.shape[-1])
    got = intervene(net, {"softmax:post": uniform, "gelu": zero_ablate()}, rules="activations")(w, x)
    np.testing.assert_allclose(got, np.zeros((3, 5, 2)), atol=ATOL)  # gelu(0) = 0
    got = intervene(net, {"softmax:post": uniform}, rules="activations")(w, x)
    h = np.asarray(x) + np.asarray(x).mean(1, keepdims=True)
    np.testing.assert_allclose(got, jax.nn.gelu(h @ w["up"]) @ w["down"], atol=1e-4)


def test_grad_through_an_intervention_on_a_linear_case(key):
    w1 = jax.random.normal(key, (4, 5))
    w2 = jax.random.normal(jax.random.key(3), (5,))
    d = jax.random.normal(jax.random.key(4), (5,))
    x = jax.random.normal(jax.random.key(5), (6, 4))
    fn = lambda w1, x: jax.nn.relu(x @ w1) @ w2

    def out(scale, w1):
        return intervene(fn, {"relu:post": add_direction(d, scale)})(w1, x).sum()

    g_scale, g_w1 = jax.grad(out, argnums=(0, 1))(0.3, w1)
    np.testing.assert_allclose(g_scale, x.shape[0] * float(w2 @ d), rtol=1e-5)  # closed form
    g_plain = jax.grad(lambda w1: fn(w1, x).sum())(w1)
    np.testing.assert_allclose(g_w1, g_plain, atol=ATOL)  # adding a constant leaves d/dw1 unchanged
    assert np.isfinite(g_w1).all()
    batched = jax.vmap(intervene(fn, {"relu:post": zero_ablate()}), in_axes=(None, 0))(w1, x)
    np.testing.assert_allclose(batched, np.zeros(6), atol=ATOL)


def test_bad_edits_are_errors(mlp):
    model, params, x = mlp
    with pytest.raises(KeyError, match="Dense_0/relu"):
        intervene(model.apply, {"nope": zero_ablate()})(params, x)
    with pytest.raises(TypeError, match="`edits`"):
        intervene(model.apply, {"Dense_0/relu": 0.0})
    ws = jnp.ones((2, 3, 3))
    scanned = lambda ws, x: jax.lax.scan(lambda h, w: (jax.nn.relu(h @ w), None), x, ws)[0]
    with pytest.raises(ValueError, match="scanned"):
        intervene(scanned, {"relu": zero_ablate()})(ws, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="`direction`"):
        project_out(np.ones((2, 2)))
