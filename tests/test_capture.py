"""capture(): pre-activations equal hand-written forward passes, for every kind of model."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import activation_names, capture, models

ATOL = 1e-5  # float32 forward passes computed two ways


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(6)(x))
        x = nn.relu(nn.Dense(5)(x))
        return nn.Dense(3)(x)


def hand_mlp(params, x):
    """The two hidden pre-activations of LinenMLP, written out."""
    p = params["params"]
    z0 = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None, :]
    z1 = jnp.maximum(z0, 0) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"][None, :]
    return [z0, z1]


@pytest.fixture
def linen_mlp(key):
    model = LinenMLP()
    x = jax.random.normal(key, (7, 4))
    return model, model.init(jax.random.key(1), x), x


def test_linen_mlp_matches_hand_written(linen_mlp):
    model, params, x = linen_mlp
    out, acts = capture(model.apply)(params, x)
    assert list(acts) == ["Dense_0/relu", "Dense_1/relu"]
    for got, want in zip(acts.values(), hand_mlp(params, x)):
        np.testing.assert_allclose(got, want, atol=ATOL)
    np.testing.assert_allclose(out, model.apply(params, x), atol=ATOL)


def test_jit_and_vmap_compose(linen_mlp):
    model, params, x = linen_mlp
    _, jitted = jax.jit(capture(model.apply))(params, x)
    out_v, vmapped = jax.vmap(capture(model.apply), in_axes=(None, 0))(params, x[:, None, :])
    for got_j, got_v, want in zip(jitted.values(), vmapped.values(), hand_mlp(params, x)):
        np.testing.assert_allclose(got_j, want, atol=ATOL)
        np.testing.assert_allclose(got_v[:, 0], want, atol=ATOL)
    assert out_v.shape == (7, 1, 3)


def test_names_are_stable_across_calls(linen_mlp):
    model, params, x = linen_mlp
    f = capture(model.apply)
    assert list(f(params, x)[1]) == list(f(params, x[:2] * 3.0)[1]) == activation_names(model.apply, params, x)


def test_linen_cnn_matches_hand_written(key):
    model = models.CNN(channels=(4, 6), hidden=8, n_classes=3)
    x = jax.random.normal(key, (2, 12, 12, 1))
    params = model.init(jax.random.key(1), x)
    _, acts = capture(model.apply)(params, x)
    assert list(acts) == ["Conv_0/relu", "Conv_1/relu", "Dense_0/relu"]
    p = params["params"]

    def conv(h, layer):
        y = jax.lax.conv_general_dilated(h, p[layer]["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p[layer]["bias"][None, None, None, :]

    def pool(h):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    z0 = conv(x, "Conv_0")
    z1 = conv(pool(jnp.maximum(z0, 0)), "Conv_1")
    h = pool(jnp.maximum(z1, 0)).reshape(2, -1)
    z2 = h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None, :]
    for got, want in zip(acts.values(), [z0, z1, z2]):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_nnx_module_is_named_by_attribute_paths(key):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(4, 6, rngs=rngs)
            self.out = nnx.Linear(6, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.hidden(x)))

    net = Net(nnx.Rngs(0))
    x = jax.random.normal(key, (5, 4))
    out, acts = capture(net)(x)
    assert list(acts) == ["hidden/relu"]
    want = x @ net.hidden.kernel[...] + net.hidden.bias[...][None, :]
    np.testing.assert_allclose(acts["hidden/relu"], want, atol=ATOL)
    np.testing.assert_allclose(out, net(x), atol=ATOL)
    # the class is restored after tracing
    assert "named_scope" not in repr(type(net.hidden).__call__)


def test_equinox_mlp(key):
    mlp = eqx.nn.MLP(4, 2, 8, 2, key=key)
    x = jax.random.normal(jax.random.key(3), (5, 4))
    _, acts = capture(jax.vmap(mlp), module=mlp)(x)
    assert list(acts) == ["layers/0/relu", "layers/1/relu"]
    l0, l1 = mlp.layers[0], mlp.layers[1]
    z0 = x @ l0.weight.T + l0.bias[None, :]
    z1 = jnp.maximum(z0, 0) @ l1.weight.T + l1.bias[None, :]
    np.testing.assert_allclose(acts["layers/0/relu"], z0, atol=ATOL)
    np.testing.assert_allclose(acts["layers/1/relu"], z1, atol=ATOL)


def test_plain_function_maximum_and_relu(key):
    w = jax.random.normal(key, (3, 4))

    def f(x):
        h = jnp.maximum(x @ w, 0.0)
        return jax.nn.relu(0.0 + h.sum(-1)) + jnp.maximum(0, x).sum()

    x = jax.random.normal(jax.random.key(2), (6, 3))
    _, acts = capture(f, post_activations=True)(x)
    assert list(acts) == ["relu_0", "relu_0:post", "relu_1", "relu_1:post", "relu_2", "relu_2:post"]
    np.testing.assert_allclose(acts["relu_0"], x @ w, atol=ATOL)
    np.testing.assert_allclose(acts["relu_2"], x, atol=ATOL)
    for name in ["relu_0", "relu_1", "relu_2"]:
        np.testing.assert_allclose(acts[name + ":post"], np.maximum(acts[name], 0), atol=ATOL)


def test_scan_body_activations_are_stacked(key):
    w = jax.random.normal(key, (3, 3))

    def f(xs):
        def body(c, x):
            h = jax.nn.relu(c @ w + x)
            return h, h.sum()

        return jax.lax.scan(body, jnp.zeros(3), xs)

    xs = jax.random.normal(jax.random.key(1), (5, 3))
    (carry, ys), acts = capture(f)(xs)
    want, c = [], jnp.zeros(3)
    for x in xs:
        want.append(c @ w + x)
        c = jnp.maximum(want[-1], 0)
    np.testing.assert_allclose(acts["relu"], jnp.stack(want), atol=ATOL)
    np.testing.assert_allclose(carry, c, atol=ATOL)


def test_inside_jit_and_custom_jvp_gradients_unchanged(linen_mlp):
    model, params, x = linen_mlp
    inner = jax.jit(model.apply)
    loss = lambda p: (inner(p, x) ** 2).sum()
    cap_loss = lambda p: (capture(inner)(p, x)[0] ** 2).sum()
    g1, g2 = jax.grad(loss)(params), jax.grad(cap_loss)(params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=ATOL), g1, g2)
    _, acts = capture(inner)(params, x)
    assert list(acts) == ["Dense_0/relu", "Dense_1/relu"]


def test_module_outputs_and_name_filter(linen_mlp):
    model, params, x = linen_mlp
    _, acts = capture(model.apply, modules=["Dense_*"], names=["Dense_1*", "Dense_2"])(params, x)
    assert list(acts) == ["Dense_1", "Dense_1/relu", "Dense_2"]
    np.testing.assert_allclose(acts["Dense_2"], model.apply(params, x), atol=ATOL)


def test_unknown_name_lists_available(linen_mlp):
    model, params, x = linen_mlp
    with pytest.raises(KeyError, match="Dense_0/relu"):
        capture(model.apply, names=["Dense_7/relu"])(params, x)


def test_nothing_to_capture_says_so():
    with pytest.raises(ValueError, match="applies no ReLU"):
        capture(lambda x: jnp.tanh(x))(jnp.ones(3))
    with pytest.raises(TypeError, match="`fn` must be callable"):
        capture(3)


class _Boom(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.hidden(x))


def test_exception_inside_model_leaves_class_unpatched(key):
    net = _Boom(nnx.Rngs(0))
    original = nnx.Linear.__dict__["__call__"]

    def failing(x):
        net(x)
        raise RuntimeError("model failure")

    with pytest.raises(RuntimeError, match="model failure"):
        capture(failing, module=net)(jnp.ones((2, 3)))
    assert nnx.Linear.__dict__["__call__"] is original


def test_two_threads_capture_at_once(key):
    """Concurrent captures of NNX models get their own names and restore the shared class."""
    import threading

    nets = [_Boom(nnx.Rngs(i)) for i in range(2)]
    original = nnx.Linear.__dict__["__call__"]
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                barrier.wait(timeout=60)
                x = jax.random.normal(jax.random.key(i), (5, 3))
                _, acts = capture(nets[i])(x)
                results[i] = (x, acts)
        except Exception as err:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (x, acts) in results.items():
        assert list(acts) == ["hidden/relu"]
        want = x @ nets[i].hidden.kernel[...] + nets[i].hidden.bias[...][None, :]
        np.testing.assert_allclose(acts["hidden/relu"], want, atol=ATOL)
    assert nnx.Linear.__dict__["__call__"] is original


def test_piecewise_linear_rules_record_every_kink(key):
    from jaxinterp.capture import PIECEWISE_LINEAR

    w = jax.random.normal(key, (3, 4))

    def f(x):
        z = x @ w
        return (jax.nn.leaky_relu(z[:, 0]) + jnp.abs(z[:, 1]) + jnp.clip(z[:, 2], -1.0, 1.0)
                + jnp.maximum(z[:, 3], z[:, 0]) + jax.nn.relu6(z[:, 1]))

    x = jax.random.normal(jax.random.key(1), (6, 3))
    z = np.asarray(x @ w)
    _, acts = capture(f, rules=PIECEWISE_LINEAR)(x)
    assert list(acts) == ["leaky_relu", "abs", "clip_0", "clip_1", "max", "relu", "relu6"]
    np.testing.assert_allclose(acts["leaky_relu"], z[:, 0], atol=ATOL)
    np.testing.assert_allclose(acts["abs"], z[:, 1], atol=ATOL)
    np.testing.assert_allclose(acts["clip_0"], z[:, 2] + 1.0, atol=ATOL)  # the kink at -1
    np.testing.assert_allclose(acts["clip_1"], np.maximum(z[:, 2], -1.0) - 1.0, atol=ATOL)  # kink at +1
    np.testing.assert_allclose(acts["max"], z[:, 3] - z[:, 0], atol=ATOL)
    np.testing.assert_allclose(acts["relu"], z[:, 1], atol=ATOL)
    np.testing.assert_allclose(acts["relu6"], np.maximum(z[:, 1], 0) - 6.0, atol=ATOL)
    # the default rules still record only the ReLU
    assert activation_names(f, x) == ["relu"]


def test_registered_rule_and_bad_rules(key):
    from jaxinterp.capture import RULES, Rule, Tap, register_rule

    rule = Rule("tanh_test", frozenset({"tanh"}), lambda site: [Tap("tanh", site.invals[0], site.outvals[0])])
    try:
        register_rule(rule)
        x = jax.random.normal(key, (4, 3))
        _, acts = capture(lambda v: jnp.tanh(2.0 * v), rules=["tanh_test"], post_activations=True)(x)
        np.testing.assert_allclose(acts["tanh"], 2.0 * x, atol=ATOL)
        np.testing.assert_allclose(acts["tanh:post"], np.tanh(2.0 * np.asarray(x)), atol=ATOL)
        with pytest.raises(ValueError, match="already registered"):
            register_rule(rule)
    finally:
        RULES.pop("tanh_test", None)
    with pytest.raises(ValueError, match="`rules`"):
        capture(jnp.tanh, rules=["no_such_rule"])
    with pytest.raises(ValueError, match="no equation matched"):
        capture(jnp.tanh, rules=["abs"])(jnp.ones(3))


def test_promote_evaluates_lax_ops_in_float64(key):
    """float32 parameters of lax-level ops are computed in float64 (equal to a float64 numpy forward)."""
    w = np.asarray(jax.random.normal(key, (3, 3, 1, 2)), np.float32)

    def f(x):
        y = jax.lax.conv_general_dilated(x, jnp.asarray(w), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y).sum()

    x = np.random.default_rng(0).normal(size=(2, 5, 5, 1))
    with jax.enable_x64(True):
        _, acts = capture(f, promote=jnp.float64)(jnp.asarray(x))
        got = acts["relu"]
    assert got.dtype == np.float64
    want = np.zeros((2, 3, 3, 2))
    w64 = w.astype(np.float64)
    for i in range(3):
        for j in range(3):
            want[:, i, j] = np.einsum("bhwc,hwco->bo", x[:, i:i + 3, j:j + 3], w64)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_jitted_capture_traces_once(linen_mlp):
    import chex

    model, params, x = linen_mlp

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(p, xb):
        return capture(model.apply)(p, xb)

    f(params, x)
    f(params, x + 1.0)
    chex.clear_trace_counter()


def test_capture_module_is_callable(linen_mlp):
    import jaxinterp
    import jaxinterp.capture.rules  # noqa: F401 - the submodule import must not shadow the function

    model, params, x = linen_mlp
    _, acts = jaxinterp.capture(model.apply)(params, x)
    assert list(acts) == ["Dense_0/relu", "Dense_1/relu"]


def test_package_import_is_lazy():
    """`import jaxinterp` imports neither JAX nor scikit-learn, matplotlib or tqdm, and takes < 1 s."""
    import json
    import subprocess
    import sys

    code = ("import sys, time, json; t = time.perf_counter(); import jaxinterp; dt = time.perf_counter() - t; "
            "print(json.dumps([dt, [m for m in ('jax', 'sklearn', 'matplotlib', 'tqdm') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    seconds, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []
    assert seconds < 1.0


def test_every_public_name_resolves():
    import jaxinterp

    for name in jaxinterp.__all__:
        assert getattr(jaxinterp, name) is not None, name
    assert set(dir(jaxinterp)) >= set(jaxinterp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'fit_nothing'"):
        jaxinterp.fit_nothing  # noqa: B018
