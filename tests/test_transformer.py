"""The modular-addition transformer: data, training, Fourier sparsity, and capture against a hand-written forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jaxinterp import transformer as T
from jaxinterp.capture import capture


def test_modular_addition_data():
    data = T.modular_addition(7, train_fraction=0.6, key=jax.random.key(0))
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    assert len(data.y_train) == round(0.6 * 49) and len(y) == 49
    pairs = {(int(a), int(b)) for a, b, _ in x}
    assert pairs == {(a, b) for a in range(7) for b in range(7)}
    np.testing.assert_array_equal(x[:, 2], 7)
    np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1]).astype(int) % 7)


@pytest.mark.parametrize("kwargs", [dict(p=1), dict(p=5, train_fraction=1.0), dict(p=5, train_fraction=0.0)])
def test_modular_addition_refuses_bad_input(kwargs):
    p = kwargs.pop("p")
    with pytest.raises(ValueError, match="p|train_fraction"):
        T.modular_addition(p, key=jax.random.key(0), **kwargs)


def test_fourier_sparsity_against_closed_form():
    p, a = 31, np.arange(31)
    pure = np.stack([np.cos(2 * np.pi * 3 * a / p), np.sin(2 * np.pi * 3 * a / p), np.cos(2 * np.pi * 7 * a / p)], 1)
    assert T.fourier_sparsity(pure, top=2) == pytest.approx(1.0, abs=1e-12)
    assert T.fourier_sparsity(pure[:, :2], top=1) == pytest.approx(1.0, abs=1e-12)
    # one of two frequencies of equal power: exactly half of the power
    assert T.fourier_sparsity(pure[:, [0, 2]], top=1) == pytest.approx(0.5, abs=1e-12)
    noise = np.random.default_rng(0).normal(size=(p, 64))
    assert T.fourier_sparsity(noise, top=2) < 0.35
    with pytest.raises(ValueError, match="embedding"):
        T.fourier_sparsity(np.ones(5))


def _layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _reference(params, tokens, n_heads):
    """Float64 numpy forward of ``Transformer``; returns the activations by capture name and the logits."""
    P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
    t = tokens.shape[1]
    x = P["embed"]["embedding"][tokens] + P["pos_embed"][:t]
    acts = {}
    for i in range(sum(k.startswith("Block_") for k in P)):
        B, name = P[f"Block_{i}"], f"Block_{i}"
        acts[f"{name}/LayerNorm_0/layer_norm"] = x
        h = _layer_norm(x, B["LayerNorm_0"])
        A = B["Attention_0"]
        b, d = h.shape[0], h.shape[-1]
        q, k, v = (h @ A[n]["kernel"] for n in ("query", "key", "value"))
        q, k, v = (a.reshape(b, t, n_heads, d // n_heads) for a in (q, k, v))
        scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d // n_heads)
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        acts[f"{name}/Attention_0/softmax:post"] = pattern
        attn = np.einsum("bhts,bshd->bthd", pattern, v).reshape(b, t, d) @ A["out"]["kernel"]
        acts[f"{name}/Attention_0"] = attn
        x = x + attn
        acts[f"{name}/LayerNorm_1/layer_norm"] = x
        pre = _layer_norm(x, B["LayerNorm_1"]) @ B["mlp_in"]["kernel"] + B["mlp_in"]["bias"]
        acts[f"{name}/mlp_in/gelu"] = pre
        hidden = 0.5 * pre * (1 + erf(pre / np.sqrt(2)))
        x = x + hidden @ B["mlp_out"]["kernel"] + B["mlp_out"]["bias"]
    acts["ln_final/layer_norm"] = x
    logits = _layer_norm(x, P["ln_final"])[:, -1] @ P["unembed"]["kernel"]
    return acts, logits


def test_capture_equals_hand_written_forward():
    model = T.Transformer(vocab=12, n_out=11, d_model=16, n_heads=2, d_mlp=32, n_layers=2)
    params = model.init(jax.random.key(1), jnp.zeros((1, 3)))
    tokens = np.array(jax.random.randint(jax.random.key(2), (5, 3), 0, 12))
    out, acts = capture(model.apply, rules="activations", modules=True, post_activations=True)(params, tokens)
    ref, logits = _reference(params, tokens, n_heads=2)
    for name, value in ref.items():
        np.testing.assert_allclose(np.asarray(acts[name]), value, rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(np.asarray(out), logits, rtol=1e-4, atol=1e-5)
    # the GELU's output and the residual stream entering block 1 are the same values the next ops see
    np.testing.assert_allclose(np.asarray(acts["Block_1/LayerNorm_0/layer_norm"]),
                               np.asarray(acts["Block_0/LayerNorm_1/layer_norm"]) + np.asarray(
                                   acts["Block_0/mlp_out"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_trains_to_high_accuracy_on_a_tiny_config():
    tt = T.train_modular_addition(23, key=jax.random.key(0), steps=2000, train_fraction=0.6, d_model=64, d_mlp=128)
    assert tt.train_accuracy == 1.0
    assert tt.test_accuracy >= 0.95
    assert tt.losses.shape == (2000,) and tt.losses[-1] < 0.1 * tt.losses[0]


def test_train_refuses_indivisible_heads():
    with pytest.raises(ValueError, match="n_heads"):
        T.train_modular_addition(5, key=jax.random.key(0), steps=1, d_model=10, n_heads=3)
