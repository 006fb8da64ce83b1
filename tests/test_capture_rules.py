"""capture(rules=...): GELU, softmax, layer-norm and residual outputs of transformers equal hand-written forwards."""

import math

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import models
from jaxinterp.capture import (FunctionRule, activation_names, capture, intervene, register_rule, token_mean,
                               zero_ablate)
from jaxinterp.capture.rules import RULES

ATOL = 1e-5  # float32 forward passes computed two ways
D, HEADS, SEQ = 8, 2, 5


def hand_layer_norm(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(scale) + np.asarray(bias)


def hand_gelu(z, approximate):
    if approximate:
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    return 0.5 * z * (1 + np.vectorize(math.erf)(z / np.sqrt(2)))


def hand_attention(h, wq, bq, wk, bk, wv, bv):
    """Attention logits ``[..., heads, q, k]``, pattern, and mixed values ``[..., q, heads, hd]``."""
    q, k, v = (np.einsum("...sd,dhk->...shk", h, w) + b for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    logits = np.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(q.shape[-1])
    pattern = np.exp(logits - logits.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    return logits, pattern, np.einsum("...hqk,...khd->...qhd", pattern, v)


# -- Flax Linen ---------------------------------------------------------------------------------
class LinenBlock(nn.Module):
    approximate: bool = False

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(name="ln1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS, name="attn")(h, h)
        h = nn.LayerNorm(name="ln2")(x)
        h = nn.gelu(nn.Dense(4 * D, name="up")(h), approximate=self.approximate)
        return x + nn.Dense(D, name="down")(h)


class LinenTransformer(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = LinenBlock(approximate=False, name="block0")(x)
        return LinenBlock(approximate=True, name="block1")(x)


def hand_linen_block(p, x, approximate):
    """Every activation of LinenBlock, written out in float64."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x, np.float64)
    h = hand_layer_norm(x, p["ln1"]["scale"], p["ln1"]["bias"], 1e-6)
    a = p["attn"]
    logits, pattern, mixed = hand_attention(h, a["query"]["kernel"], a["query"]["bias"], a["key"]["kernel"],
                                            a["key"]["bias"], a["value"]["kernel"], a["value"]["bias"])
    attn_out = np.einsum("...qhd,hdo->...qo", mixed, a["out"]["kernel"]) + a["out"]["bias"]
    resid = x + attn_out
    h2 = hand_layer_norm(resid, p["ln2"]["scale"], p["ln2"]["bias"], 1e-6)
    pre = h2 @ p["up"]["kernel"] + p["up"]["bias"]
    out = resid + hand_gelu(pre, approximate) @ p["down"]["kernel"] + p["down"]["bias"]
    return dict(ln1=x, ln1_post=h, logits=logits, pattern=pattern, ln2=resid, gelu=pre, out=out)


@pytest.fixture
def linen_transformer(key):
    model = LinenTransformer()
    x = jax.random.normal(key, (3, SEQ, D))
    return model, model.init(jax.random.key(1), x), x


def _check_block(acts, prefix, want, atol=ATOL):
    np.testing.assert_allclose(acts[f"{prefix}/ln1/layer_norm"], want["ln1"], atol=atol)
    np.testing.assert_allclose(acts[f"{prefix}/ln1/layer_norm:post"], want["ln1_post"], atol=atol)
    np.testing.assert_allclose(acts[f"{prefix}/attn/softmax"], want["logits"], atol=atol)
    np.testing.assert_allclose(acts[f"{prefix}/attn/softmax:post"], want["pattern"], atol=atol)
    np.testing.assert_allclose(acts[f"{prefix}/ln2/layer_norm"], want["ln2"], atol=atol)
    np.testing.assert_allclose(acts[f"{prefix}/up/gelu"], want["gelu"], atol=atol)


def test_linen_transformer_matches_hand_written(linen_transformer):
    model, params, x = linen_transformer
    out, acts = capture(model.apply, rules="activations", post_activations=True, modules=["block*"])(params, x)
    want0 = hand_linen_block(params["params"]["block0"], x, approximate=False)
    want1 = hand_linen_block(params["params"]["block1"], want0["out"], approximate=True)
    _check_block(acts, "block0", want0)
    _check_block(acts, "block1", want1)
    np.testing.assert_allclose(acts["block0"], want0["out"], atol=ATOL)  # residual stream after block 0
    np.testing.assert_allclose(out, want1["out"], atol=ATOL)
    np.testing.assert_allclose(acts["block1/up/gelu:post"], hand_gelu(want1["gelu"], True), atol=ATOL)
    np.testing.assert_allclose(acts["block0/up/gelu:post"], hand_gelu(want0["gelu"], False), atol=ATOL)


def test_transformer_names_are_module_paths(linen_transformer):
    model, params, x = linen_transformer
    names = activation_names(model.apply, params, x, rules="activations")
    assert names == [f"block{i}/{n}" for i in range(2)
                     for n in ("ln1/layer_norm", "attn/softmax", "ln2/layer_norm", "up/gelu")]
    assert not any("->" in n for n in activation_names(model.apply, params, x, rules="activations", modules=True))


def test_jit_vmap_grad_compose_and_gradients_are_unchanged(linen_transformer):
    model, params, x = linen_transformer
    f = capture(model.apply, rules="activations", names="*/up/gelu")
    _, plain = f(params, x)
    _, jitted = jax.jit(f)(params, x)
    _, vmapped = jax.vmap(f, in_axes=(None, 0))(params, x)
    for k in plain:
        np.testing.assert_allclose(jitted[k], plain[k], atol=ATOL)
        np.testing.assert_allclose(vmapped[k], plain[k], atol=ATOL)

    def loss(fn, p):
        out = fn(p, x)
        return jnp.sum(jnp.sin(out[0] if isinstance(out, tuple) else out))

    g_plain = jax.grad(lambda p: loss(model.apply, p))(params)
    g_capt = jax.grad(lambda p: loss(f, p))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_capt)):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_scan_over_layers_stacks_activations(key):
    ws = jax.random.normal(key, (3, D, D)) / np.sqrt(D)

    def net(ws, x):
        return jax.lax.scan(lambda h, w: (jax.nn.gelu(h @ w), None), x, ws)[0]

    x = jax.random.normal(jax.random.key(2), (4, D))
    _, acts = capture(net, rules=("gelu",))(ws, x)
    h, want = np.asarray(x), []
    for w in np.asarray(ws):
        want.append(h @ w)
        h = np.asarray(jax.nn.gelu(want[-1]))
    assert list(acts) == ["gelu"]
    np.testing.assert_allclose(acts["gelu"], np.stack(want), atol=ATOL)


# -- Equinox ------------------------------------------------------------------------------------
class EqxBlock(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(D), eqx.nn.LayerNorm(D)
        self.attn = eqx.nn.MultiheadAttention(HEADS, D, use_query_bias=True, use_key_bias=True,
                                              use_value_bias=True, use_output_bias=True, key=k1)
        self.up, self.down = eqx.nn.Linear(D, 4 * D, key=k2), eqx.nn.Linear(4 * D, D, key=k3)

    def __call__(self, x):  # x: [seq, d]
        h = jax.vmap(self.ln1)(x)
        x = x + self.attn(h, h, h)
        h = jax.nn.gelu(jax.vmap(self.up)(jax.vmap(self.ln2)(x)))
        return x + jax.vmap(self.down)(h)


def hand_eqx_block(b, x):
    a = b.attn
    split = lambda lin: (np.asarray(lin.weight).T.reshape(D, HEADS, -1), np.asarray(lin.bias).reshape(HEADS, -1))
    x = np.asarray(x, np.float64)
    h = hand_layer_norm(x, b.ln1.weight, b.ln1.bias, b.ln1.eps)
    logits, pattern, mixed = hand_attention(h, *split(a.query_proj), *split(a.key_proj), *split(a.value_proj))
    resid = x + mixed.reshape(*mixed.shape[:-2], D) @ np.asarray(a.output_proj.weight).T + np.asarray(a.output_proj.bias)
    h2 = hand_layer_norm(resid, b.ln2.weight, b.ln2.bias, b.ln2.eps)
    pre = h2 @ np.asarray(b.up.weight).T + np.asarray(b.up.bias)
    return dict(ln1=x, ln1_post=h, logits=logits, pattern=pattern, ln2=resid, gelu=pre)


def test_equinox_transformer_matches_hand_written(key):
    block = EqxBlock(jax.random.key(3))
    x = jax.random.normal(key, (SEQ, D))
    _, acts = capture(block, rules="activations", post_activations=True)(x)
    _check_block({f"block/{k}": v for k, v in acts.items()}, "block", hand_eqx_block(block, x))


# -- plain functions ----------------------------------------------------------------------------
def plain_transformer(params, x):
    """Two pre-LN blocks written with jnp only: x [batch, seq, d]."""
    for p in params:
        mu = x.mean(-1, keepdims=True)
        h = (x - mu) * jax.lax.rsqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
        logits = jnp.einsum("bqd,bkd->bqk", h @ p["wq"], h @ p["wk"]) / np.sqrt(D)
        x = x + jax.nn.softmax(logits, axis=-1) @ (h @ p["wv"])
        x = x + jax.nn.gelu(x @ p["up"], approximate=False) @ p["down"]
    return x


def test_plain_function_transformer_names_by_call_order(key):
    ks = jax.random.split(key, 10)
    shapes = dict(wq=(D, D), wk=(D, D), wv=(D, D), up=(D, 4 * D), down=(4 * D, D))
    params = [{n: jax.random.normal(ks[5 * i + j], s) / np.sqrt(s[0]) for j, (n, s) in enumerate(shapes.items())}
              for i in range(2)]
    x = jax.random.normal(jax.random.key(7), (2, SEQ, D))
    _, acts = capture(plain_transformer, rules=("softmax", "gelu"), post_activations=True)(params, x)
    assert list(acts) == ["softmax_0", "softmax_0:post", "gelu_0", "gelu_0:post",
                          "softmax_1", "softmax_1:post", "gelu_1", "gelu_1:post"]
    h = np.asarray(x, np.float64)
    for i, p in enumerate(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)):
        n = hand_layer_norm(h, 1.0, 0.0, 1e-5)
        logits = np.einsum("bqd,bkd->bqk", n @ p["wq"], n @ p["wk"]) / np.sqrt(D)
        pattern = np.exp(logits - logits.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        np.testing.assert_allclose(acts[f"softmax_{i}"], logits, atol=ATOL)
        np.testing.assert_allclose(acts[f"softmax_{i}:post"], pattern, atol=ATOL)
        h = h + pattern @ (n @ p["wv"])
        np.testing.assert_allclose(acts[f"gelu_{i}"], h @ p["up"], atol=ATOL)
        np.testing.assert_allclose(acts[f"gelu_{i}:post"], hand_gelu(h @ p["up"], False), atol=ATOL)
        h = h + hand_gelu(h @ p["up"], False) @ p["down"]


@pytest.mark.parametrize("rule,fn,ref", [
    ("sigmoid", jax.nn.sigmoid, lambda z: 1 / (1 + np.exp(-z))),
    ("tanh", jnp.tanh, np.tanh),
    ("silu", jax.nn.swish, lambda z: z / (1 + np.exp(-z))),
    ("softplus", jax.nn.softplus, lambda z: np.log1p(np.exp(z))),
])
def test_elementwise_activations(key, rule, fn, ref):
    w = jax.random.normal(key, (4, 6))
    x = jax.random.normal(jax.random.key(1), (3, 4))
    _, acts = capture(lambda w, x: fn(x @ w).sum(-1), rules=rule, post_activations=True)(w, x)
    z = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    np.testing.assert_allclose(acts[rule], z, atol=ATOL)
    np.testing.assert_allclose(acts[f"{rule}:post"], ref(z), atol=ATOL)


def test_user_registered_function_rule(key):
    def squash(z):
        return z / (1.0 + jnp.abs(z))

    rule = FunctionRule("squash_test", {"test_user_registered_function_rule.<locals>.squash"}, label="squash")
    register_rule(rule)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_rule(rule)
        x = jax.random.normal(key, (5, 3))
        _, acts = capture(lambda x: squash(2.0 * x) + squash(x - 1.0), rules=("squash_test",),
                          post_activations=True)(x)
        assert list(acts) == ["squash_0", "squash_0:post", "squash_1", "squash_1:post"]
        np.testing.assert_allclose(acts["squash_0"], 2 * np.asarray(x), atol=ATOL)
        np.testing.assert_allclose(acts["squash_1:post"], squash(x - 1.0), atol=ATOL)
    finally:
        RULES.pop("squash_test")


def test_module_outputs_of_the_transformer_are_named_by_module_path(key):
    """Residual stream per block under its module path, equal to Flax's own record of each module's output.

    ``jnp.tril`` / ``jnp.where`` inside the attention are jitted programs; values they return must
    not be taken for outputs of the enclosing modules (they once came out as ``Block_0_0``, ...).
    """
    from jaxinterp.transformer import Transformer

    model = Transformer(vocab=8, n_out=7, d_model=16, n_heads=2, d_mlp=32, n_layers=2)
    tokens = jnp.array([[1, 2, 7], [3, 4, 7]])
    params = model.init(key, tokens)
    names = activation_names(model.apply, params, tokens, rules="activations", modules=True)
    block = ["LayerNorm_0/layer_norm", "Attention_0/query", "Attention_0/key", "Attention_0/value",
             "Attention_0/softmax", "Attention_0/out", "Attention_0", "LayerNorm_1/layer_norm", "mlp_in",
             "mlp_in/gelu", "mlp_out"]
    assert names == ["embed", *[f"Block_0/{n}" for n in block], "Block_0",
                     *[f"Block_1/{n}" for n in block], "Block_1", "ln_final/layer_norm", "unembed"]
    _, acts = capture(model.apply, rules="activations", modules=True)(params, tokens)
    _, state = model.apply(params, tokens, capture_intermediates=True, mutable=["intermediates"])
    flax_outputs = state["intermediates"]
    for name in ("Block_0", "Block_1", "Block_0/Attention_0", "Block_1/mlp_in"):
        want = flax_outputs
        for part in name.split("/"):
            want = want[part]
        np.testing.assert_allclose(acts[name], want["__call__"][0], atol=ATOL)


def test_post_name_without_post_activations_suggests_the_flag(key):
    x = jax.random.normal(key, (2, 3))
    fn = lambda x: jax.nn.relu(x) * 2
    with pytest.raises(KeyError, match="post_activations=True"):
        capture(fn, names="relu:post")(x)
    with pytest.raises(KeyError, match="post_activations=True"):
        capture(fn, reduce={"relu:post": token_mean(axis=-2)})(x)
    with pytest.raises(KeyError, match="'Dense_0' has no post-activation"):
        model = models.MLP(hidden=(4,), n_classes=2)
        params = model.init(key, x)
        intervene(model.apply, {"Dense_0:post": zero_ablate()}, modules=True)(params, x)
    with pytest.raises(ValueError, match="rules='activations'"):
        capture(lambda x: jax.nn.gelu(x))(x)


# -- max-pools found in the traced program (polytope units) ---------------------------------------
def _pooled_cnn(window, stride, padding):
    """A 2-D ReLU conv net pooling with any window / stride / padding via lax.reduce_window."""
    k = jax.random.normal(jax.random.key(4), (3, 3, 1, 2))

    def fn(x):
        z = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.lax.reduce_window(jax.nn.relu(z), -jnp.inf, jax.lax.max, (1, *window, 1), (1, *stride, 1), padding)
        return h.sum((1, 2, 3))

    return fn, k


def _brute_pairs(z, window, stride, pad):
    """``z_a - z_b`` per window and pair, by explicit loops (+1 for padded elements)."""
    b, hgt, wid, c = z.shape
    out_h = (hgt + sum(pad[0]) - window[0]) // stride[0] + 1
    out_w = (wid + sum(pad[1]) - window[1]) // stride[1] + 1
    rows = []
    for i in range(out_h):
        for j in range(out_w):
            cells = [(i * stride[0] + di - pad[0][0], j * stride[1] + dj - pad[1][0])
                     for di in range(window[0]) for dj in range(window[1])]
            pairs = []
            for a in range(len(cells)):
                for bb in range(a + 1, len(cells)):
                    (ra, ca), (rb, cb) = cells[a], cells[bb]
                    inside = all(0 <= r < hgt for r in (ra, rb)) and all(0 <= q < wid for q in (ca, cb))
                    pairs.append(z[:, ra, ca] - z[:, rb, cb] if inside else np.ones((b, c)))
            rows.append(np.stack(pairs, -1))
    return np.stack(rows, 1).reshape(b, out_h, out_w, c, -1)


@pytest.mark.parametrize("window,stride,padding,pad", [
    ((2, 2), (2, 2), "VALID", ((0, 0), (0, 0))),
    ((3, 3), (2, 2), "SAME", ((1, 1), (0, 1))),  # overlapping windows, padded edges (5 x 6 input)
    ((2, 3), (1, 2), "VALID", ((0, 0), (0, 0))),
])
def test_maxpool_units_are_found_in_the_traced_program(key, window, stride, padding, pad):
    from jaxinterp.polytope.network import relu_preactivations

    fn, k = _pooled_cnn(window, stride, padding)
    x = jax.random.normal(key, (2, 5, 6, 1))
    acts = relu_preactivations(fn, maxpool="auto")(x)
    assert list(acts) == ["relu", "relu/maxpool"]
    z = np.asarray(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    np.testing.assert_allclose(acts["relu"], z, atol=ATOL)
    np.testing.assert_allclose(acts["relu/maxpool"], _brute_pairs(z, window, stride, pad), atol=ATOL)


def test_auto_maxpool_equals_the_hand_declaration_and_bad_declarations_are_errors(key):
    from jaxinterp import models
    from jaxinterp.polytope.network import relu_preactivations

    model = models.CNN(channels=(3, 4), hidden=5, n_classes=2)
    params = model.init(jax.random.key(0), jnp.zeros((1, 12, 1)))
    x = jax.random.normal(key, (4, 12, 1))
    fn = lambda v: model.apply(params, v)  # noqa: E731
    auto = relu_preactivations(fn, maxpool="auto")(x)
    hand = relu_preactivations(fn, maxpool={"Conv_0/relu": 2, "Conv_1/relu": 2})(x)
    assert list(auto) == list(hand) == ["Conv_0/relu", "Conv_0/relu/maxpool", "Conv_1/relu", "Conv_1/relu/maxpool",
                                        "Dense_0/relu"]
    for name in auto:
        np.testing.assert_array_equal(auto[name], hand[name])
    z0 = np.asarray(auto["Conv_0/relu"])
    np.testing.assert_allclose(auto["Conv_0/relu/maxpool"][..., 0], z0[:, 0::2] - z0[:, 1::2], atol=ATOL)
    with pytest.raises(ValueError, match="does not max-pool"):
        relu_preactivations(fn, maxpool={"Dense_0/relu": 2})(x)
    with pytest.raises(KeyError, match="unknown layers"):
        relu_preactivations(fn, maxpool={"nope": 2})(x)
    with pytest.raises(ValueError, match="window"):
        relu_preactivations(fn, maxpool={"Conv_0/relu": 3})(x)
