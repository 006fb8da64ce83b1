"""Mesh helpers, and sharded == unsharded training on 8 forced CPU devices (in a subprocess)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import sharding

ROOT = Path(__file__).resolve().parents[1]


def test_padded_size():
    assert [sharding.padded_size(n, 8) for n in (0, 1, 8, 9, 16)] == [0, 8, 8, 16, 16]
    with pytest.raises(ValueError):
        sharding.padded_size(3, 0)


def test_pad_and_unpad_leading_repeat_the_last_entry():
    tree = {"a": jnp.arange(5), "k": jax.random.split(jax.random.key(0), 5)}
    padded, n = sharding.pad_leading(tree, 4)
    assert n == 5 and padded["a"].shape == (8,)
    np.testing.assert_array_equal(padded["a"], [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(jax.random.key_data(padded["k"][7]), jax.random.key_data(tree["k"][4]))
    back = sharding.unpad_leading(padded, n)
    np.testing.assert_array_equal(back["a"], tree["a"])
    same, n2 = sharding.pad_leading(tree, 5)
    assert n2 == 5 and same is tree


def test_bad_inputs():
    with pytest.raises(ValueError, match="leading axis"):
        sharding.pad_leading({"a": jnp.zeros(3), "b": jnp.zeros(4)}, 2)
    with pytest.raises(ValueError, match="scalar"):
        sharding.pad_leading({"a": jnp.zeros(())}, 2)
    with pytest.raises(ValueError, match="devices"):
        sharding.leading_axis_mesh([])
    mesh = sharding.leading_axis_mesh()
    if mesh.size > 1:
        with pytest.raises(ValueError, match="pad it first"):
            sharding.shard_leading(jnp.zeros(mesh.size + 1), mesh)
    with pytest.raises(ValueError):
        sharding.leading_sharding(mesh, 0)


def test_single_device_mesh_round_trip():
    mesh = sharding.leading_axis_mesh(jax.devices()[:1])
    x = sharding.shard_leading({"x": jnp.arange(6.0).reshape(3, 2)}, mesh)
    assert x["x"].sharding.mesh.size == 1
    np.testing.assert_array_equal(np.asarray(x["x"]), np.arange(6.0).reshape(3, 2))
    r = sharding.replicate(jnp.ones(3), mesh)
    assert r.sharding.is_fully_replicated


_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jaxinterp import sharding
    from jaxinterp.toy import IncidentalConfig, count_polysemantic, fit, make_init, make_loss_and_grad, make_optimizer
    assert jax.device_count() == 8, jax.devices()
    mesh = sharding.leading_axis_mesh()
    x = sharding.shard_leading(jnp.arange(16.0), mesh)
    assert len(x.addressable_shards) == 8 and x.addressable_shards[3].data.shape == (2,)
    cfg = IncidentalConfig(n_features=12, n_hidden=24, steps=300, learning_rate=1e-2, l1=3e-3)
    keys = jax.random.split(jax.random.key(3), 12)   # 12 seeds: padded to 16 over 8 devices
    args = (make_init(cfg), make_loss_and_grad(cfg), make_optimizer(cfg), keys)
    seen = []
    sharded = fit(*args, steps=cfg.steps, chunk_size=100, shard=True,
                  callback=lambda done, st: seen.append(len(st.params.sharding.device_set)))
    plain = fit(*args, steps=cfg.steps, chunk_size=100, shard=False)
    blocked = fit(*args, steps=cfg.steps, chunk_size=100, shard=True, seed_block=1)  # 2 blocks per device
    np.testing.assert_allclose(np.asarray(blocked.state.params), np.asarray(plain.state.params), rtol=0, atol=1e-6)
    assert seen == [8, 8, 8], seen
    np.testing.assert_allclose(np.asarray(sharded.state.params), np.asarray(plain.state.params), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(count_polysemantic(sharded.state.params), count_polysemantic(plain.state.params))
    np.testing.assert_allclose(np.asarray(sharded.state.loss), np.asarray(plain.state.loss), rtol=1e-6)
    print("max abs diff", float(np.max(np.abs(np.asarray(sharded.state.params) - np.asarray(plain.state.params)))))
    print("OK")
""")


def test_sharded_equals_unsharded_on_8_cpu_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout


_CACHE_PROBE = """
import jax, jax.numpy as jnp
from jaxinterp import sharding
hits = []
jax.monitoring.register_event_listener(lambda e, **k: hits.append(e) if e.endswith("cache_hits") else None)
print(sharding.enable_compilation_cache())
print(float(jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)(jnp.ones((7, 7))).sum()))
print(len(hits))
"""


def test_persistent_compilation_cache_is_on_by_default_and_can_be_turned_off(tmp_path):
    """Two processes: the first fills the cache folder, the second loads its program from it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", sharding.CACHE_ENV)}
    env.update(PYTHONPATH=root, XDG_CACHE_HOME=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def run(**extra):
        out = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env={**env, **extra}, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    folder = tmp_path / "jaxinterp" / "xla"
    cold = run()
    assert cold[0] == str(folder) and cold[2] == "0" and any(folder.iterdir())
    warm = run()
    assert warm[1] == cold[1] and int(warm[2]) >= 1          # same answer, loaded from the cache
    off = run(JAXINTERP_COMPILATION_CACHE="0")
    assert off[0] == "None" and off[2] == "0"
    own = run(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert own[0] == str(tmp_path / "mine")                   # the user's folder is respected
