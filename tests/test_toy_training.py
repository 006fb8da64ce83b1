"""The chunked, vmapped, resumable trainer: determinism, independence of instances, resume, records."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.toy import incidental as inc
from jaxinterp.toy import training

CFG = inc.IncidentalConfig(n_features=10, n_hidden=20, steps=200, learning_rate=1e-2, l1=3e-3)


def _fit(keys, **kw):
    kw.setdefault("steps", CFG.steps)
    kw.setdefault("chunk_size", 50)
    return training.fit(inc.make_init(CFG), inc.make_loss_and_grad(CFG), inc.make_optimizer(CFG), keys, **kw)


def _equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_same_key_same_result_and_instances_are_independent():
    keys = jax.random.split(jax.random.key(0), 4)
    a, b = _fit(keys), _fit(keys)
    _equal(a.state, b.state)
    assert a.state.params.shape == (4, 10, 20) and int(a.state.step[0]) == 200
    # instance 2 trained alone equals instance 2 of the batch
    alone = _fit(keys[2:3])
    np.testing.assert_allclose(alone.state.params[0], a.state.params[2], rtol=0, atol=1e-6)
    assert not np.allclose(a.state.params[0], a.state.params[1])
    # the loss went down from its initial value
    w0 = training.initial_params(inc.make_init(CFG), keys)
    first = jax.vmap(lambda w: inc.basis_loss_and_grad(w, CFG.l1)[0])(w0)
    assert np.all(np.asarray(a.state.loss) < np.asarray(first))


def test_seed_blocks_do_not_change_the_result():
    keys = jax.random.split(jax.random.key(6), 5)
    rec = dict(record=inc.fourth_norm, record_every=50)
    whole = _fit(keys, seed_block=None, **rec)
    blocked = _fit(keys, seed_block=2, **rec)        # 5 instances -> 3 blocks of 2 (one padded)
    np.testing.assert_allclose(blocked.state.params, whole.state.params, rtol=0, atol=1e-6)
    np.testing.assert_allclose(blocked.history, whole.history, rtol=1e-6)
    assert blocked.state.params.shape == (5, 10, 20) and blocked.history.shape == (5, 4)
    assert training._blocking(5, 1, 2) == (2, 2) and training._blocking(100, 1, 64) == (50, 50)
    assert training._blocking(16, 8, 64) == (8, None)
    with pytest.raises(ValueError, match="seed_block"):
        _fit(keys, seed_block=0)


def test_chunking_does_not_change_the_result():
    keys = jax.random.split(jax.random.key(1), 3)
    _equal(_fit(keys, chunk_size=200).state, _fit(keys, chunk_size=30).state)


def test_resume_equals_uninterrupted(tmp_path):
    keys = jax.random.split(jax.random.key(2), 3)
    record = dict(record=inc.fourth_norm, record_every=25)
    full = _fit(keys, **record)
    path = tmp_path / "run.npz"

    def interrupt(done, state):
        if done == 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(keys, checkpoint_path=path, run_id=CFG, callback=interrupt, **record)
    resumed = _fit(keys, checkpoint_path=path, run_id=CFG, **record)
    assert resumed.resumed_from == 100
    _equal(resumed.state, full.state)
    np.testing.assert_array_equal(resumed.history, full.history)
    np.testing.assert_array_equal(resumed.record_steps, full.record_steps)
    assert full.history.shape == (3, 8) and list(full.record_steps[:2]) == [25, 50]
    # a finished checkpoint resumes to the same final result without training
    again = _fit(keys, checkpoint_path=path, run_id=CFG, **record)
    assert again.resumed_from == 200
    _equal(again.state, full.state)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    keys = jax.random.split(jax.random.key(3), 2)
    path = tmp_path / "run.npz"
    _fit(keys, steps=50, checkpoint_path=path, run_id=CFG)
    with pytest.raises(ValueError, match="different run"):
        _fit(keys, steps=50, checkpoint_path=path, run_id=dataclasses.replace(CFG, l1=0.0))
    with pytest.raises(ValueError, match="different run"):
        _fit(jax.random.split(jax.random.key(4), 2), steps=50, checkpoint_path=path, run_id=CFG)


def test_per_instance_hyperparameters():
    """A hyperparameter passed as data gives the same result as baking it into the loss."""
    keys = jax.random.split(jax.random.key(5), 2)
    l1s = jnp.asarray([0.0, 0.01])

    def lg(w, key, hyper):
        return inc.basis_loss_and_grad(w, hyper["l1"])

    out = training.fit(inc.make_init(CFG), lg, inc.make_optimizer(CFG), keys, steps=60, chunk_size=60,
                       hyper={"l1": l1s})
    for i, l1 in enumerate([0.0, 0.01]):
        cfg = dataclasses.replace(CFG, l1=l1)
        ref = training.fit(inc.make_init(cfg), inc.make_loss_and_grad(cfg), inc.make_optimizer(cfg), keys[i:i + 1],
                           steps=60, chunk_size=60)
        np.testing.assert_allclose(out.state.params[i], ref.state.params[0], atol=1e-6)


def test_adamw_matches_torch_reference_loop():
    """optax.adamw with weight decay 0.01 reproduces torch.optim.AdamW on the reference loss."""
    torch = pytest.importorskip("torch")
    cfg = inc.IncidentalConfig(n_features=8, n_hidden=16, l1=1e-3, learning_rate=1e-2)
    w0 = np.asarray(inc.init_weights(jax.random.key(7), cfg))
    W = torch.nn.Parameter(torch.tensor(w0[None].copy()))        # [instances=1, n, m]
    opt = torch.optim.AdamW([W], lr=cfg.learning_rate)            # weight_decay default 0.01
    batch = torch.eye(8).expand(1, -1, -1)
    for _ in range(40):
        opt.zero_grad()
        hidden = torch.einsum("ibf,ifh->ibh", batch, W)
        out = torch.relu(torch.einsum("ibh,ifh->ibf", hidden, W))
        loss = torch.nn.functional.mse_loss(out, batch, reduction="sum") + cfg.l1 * torch.norm(W, p=1)
        loss.backward()
        opt.step()
    ours = training.fit(lambda k, h: jnp.asarray(w0), inc.make_loss_and_grad(cfg), inc.make_optimizer(cfg),
                        jax.random.split(jax.random.key(0), 1), steps=40, chunk_size=40)
    np.testing.assert_allclose(ours.state.params[0], W.detach().numpy()[0], rtol=1e-4, atol=2e-5)


def test_progress_bar_and_bad_inputs(capsys):
    keys = jax.random.split(jax.random.key(0), 2)
    _fit(keys, steps=20, chunk_size=10, progress=True)
    with pytest.raises(TypeError, match="typed PRNG keys"):
        _fit(jnp.zeros((2, 2), jnp.uint32))
    with pytest.raises(ValueError, match="instances"):
        _fit(jax.random.split(jax.random.key(0), 4).reshape(2, 2))
    with pytest.raises(ValueError, match="record_every"):
        _fit(keys, record=inc.fourth_norm, record_every=7)
    with pytest.raises(ValueError, match="leading axis"):
        _fit(keys, hyper={"l1": jnp.zeros(3)})
    with pytest.raises(ValueError, match="steps"):
        _fit(keys, steps=0)


def test_run_steps_and_step_compose():
    """``run_steps`` of n steps equals n explicit ``step`` calls (and compiles once for the scan)."""
    opt = optax.sgd(0.05)
    step = training.make_step(inc.make_loss_and_grad(CFG), opt)
    s0 = training.init_state(inc.make_init(CFG), opt, jax.random.key(0))
    s = s0
    for _ in range(5):
        s = step(s, None)
    scanned, rec = jax.jit(lambda st: training.run_steps(step, st, None, 5))(s0)
    assert rec is None
    np.testing.assert_allclose(scanned.params, s.params, atol=1e-6)
    assert int(scanned.step) == 5


_KILLED_RUN = """
import os, signal, sys
import jax
from jaxinterp.toy import incidental as inc, training
cfg = inc.IncidentalConfig(n_features=10, n_hidden=20, steps=200, learning_rate=1e-2, l1=3e-3)

def kill(done, state):
    if done == 150:
        os.kill(os.getpid(), signal.SIGKILL)

training.fit(inc.make_init(cfg), inc.make_loss_and_grad(cfg), inc.make_optimizer(cfg),
             jax.random.split(jax.random.key(2), 3), steps=200, chunk_size=50, record=inc.fourth_norm,
             record_every=25, checkpoint_path=sys.argv[1], callback=kill)
"""


def test_killed_run_with_corrupted_latest_checkpoint_resumes_from_the_previous(tmp_path):
    """SIGKILL after the checkpoint at step 150, then the newest file is damaged: the run resumes
    from step 100 with a warning naming the damaged file, and ends where an uninterrupted run does."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from jaxinterp import checkpoint

    path = tmp_path / "run.npz"
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script), str(path)], env=env, capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert checkpoint.read_metadata(path)["steps_done"] == 150
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    keys = jax.random.split(jax.random.key(2), 3)
    record = dict(record=inc.fourth_norm, record_every=25)
    with pytest.warns(RuntimeWarning, match=f"{path}.*previous checkpoint"):
        resumed = _fit(keys, checkpoint_path=path, **record)
    assert resumed.resumed_from == 100
    full = _fit(keys, **record)
    _equal(resumed.state, full.state)
    np.testing.assert_array_equal(resumed.history, full.history)


def test_resume_under_a_changed_hyperparameter_is_refused(tmp_path):
    """Without a run_id, the optimiser's learning rate and the loss's l1 are still part of the
    fingerprint: resuming with either changed is a clear error naming what differs."""
    keys = jax.random.split(jax.random.key(3), 2)
    path = tmp_path / "run.npz"
    training.fit(inc.make_init(CFG), inc.make_loss_and_grad(CFG), inc.make_optimizer(CFG), keys, steps=50,
                 chunk_size=25, checkpoint_path=path)
    lr = dataclasses.replace(CFG, learning_rate=2e-2)
    with pytest.raises(ValueError, match="different run: optimizer differ"):
        training.fit(inc.make_init(CFG), inc.make_loss_and_grad(CFG), inc.make_optimizer(lr), keys, steps=50,
                     chunk_size=25, checkpoint_path=path)
    with pytest.raises(ValueError, match="different run: optimizer differ"):   # a plain optax optimiser too
        training.fit(inc.make_init(CFG), inc.make_loss_and_grad(CFG), optax.adamw(CFG.learning_rate), keys,
                     steps=50, chunk_size=25, checkpoint_path=path)
    l1 = dataclasses.replace(CFG, l1=0.0)
    with pytest.raises(ValueError, match="different run: loss_and_grad differ"):
        training.fit(inc.make_init(CFG), inc.make_loss_and_grad(l1), inc.make_optimizer(CFG), keys, steps=50,
                     chunk_size=25, checkpoint_path=path)
    with pytest.raises(ValueError, match="different run: hyper differ"):
        training.fit(inc.make_init(CFG), lambda w, k, h: inc.basis_loss_and_grad(w, h), inc.make_optimizer(CFG),
                     keys, steps=50, chunk_size=25, checkpoint_path=tmp_path / "h.npz", hyper=jnp.asarray([0., 1e-3]))
        training.fit(inc.make_init(CFG), lambda w, k, h: inc.basis_loss_and_grad(w, h), inc.make_optimizer(CFG),
                     keys, steps=50, chunk_size=25, checkpoint_path=tmp_path / "h.npz", hyper=jnp.asarray([0., 2e-3]))
    # the same settings, rebuilt from scratch, resume (a finished run: nothing left to train)
    again = training.fit(inc.make_init(CFG), inc.make_loss_and_grad(CFG), inc.make_optimizer(CFG), keys, steps=50,
                         chunk_size=10, checkpoint_path=path)
    assert again.resumed_from == 50


class _Compiles:
    """Records the traces and XLA compilations (function names) made while active.

    Traces are counted per function: a program loaded from the persistent compilation cache is
    traced but not compiled, so traces say how many programs a run needed.
    """

    def __enter__(self):
        self.names, self.traced = [], []

        def listener(event, duration, **kw):
            if event == "/jax/core/compile/backend_compile_duration":
                self.names.append(kw.get("fun_name", "?"))
            elif event == "/jax/core/compile/jaxpr_trace_duration":
                self.traced.append(kw.get("fun_name", "?"))

        self._listener = listener
        jax.monitoring.register_event_duration_secs_listener(listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)

    def count(self, name):
        return self.traced.count(name)


def test_repeated_fits_compile_nothing_new():
    """Rebuilt factories of an equal config hit jax.jit's cache: nothing is compiled again."""
    cfg = dataclasses.replace(CFG, n_features=9)
    keys = jax.random.split(jax.random.key(8), 3)

    def run(chunk):
        return training.fit(inc.make_init(cfg), inc.make_loss_and_grad(cfg), inc.make_optimizer(cfg), keys,
                            steps=60, chunk_size=chunk)

    with _Compiles() as c:
        first = run(20)
    # three chunks, one program; the init is traced for its shapes (seed blocks) and for the devices
    assert c.count("_run_chunk") == 1 and c.count("_batched_init") <= 2
    with _Compiles() as c:
        second = run(20)
    assert c.names == [] and c.traced == []
    _equal(first.state, second.state)


def test_one_collisions_sweep_compiles_one_chunk_program_per_size_and_a_rerun_none():
    from jaxinterp.toy import collisions_sweep

    base = inc.IncidentalConfig(n_features=7, n_hidden=7, steps=60, learning_rate=1e-2)
    with _Compiles() as c:
        collisions_sweep(jax.random.key(0), base, [7, 11], 3, chunk_size=20)      # 3 chunks per size
    assert c.count("_run_chunk") == 2 and c.count("_batched_init") <= 4
    with _Compiles() as c:
        collisions_sweep(jax.random.key(1), base, [7, 11], 3, chunk_size=20)      # other seeds, same shapes
    assert c.names == [] and c.traced == []
    with _Compiles() as c:
        collisions_sweep(jax.random.key(0), base, [7, 11], 3, chunk_size=20, pad=True)
    assert c.count("_run_chunk") == 1                                          # padded: one program for all


def test_no_keys_and_missing_keys_are_clear_errors():
    with pytest.raises(ValueError, match="at least one key"):
        _fit(jax.random.split(jax.random.key(0), 0))
    with pytest.raises(TypeError, match="typed PRNG keys"):
        _fit(None)
    from jaxinterp.toy import collisions_sweep

    with pytest.raises(TypeError, match="`key` must be one typed PRNG key"):
        collisions_sweep(None, CFG, [4], 2)
    with pytest.raises(TypeError, match="hidden_sizes"):
        collisions_sweep(jax.random.key(0), CFG, [2.7], 2)
    with pytest.raises(ValueError, match="hidden_sizes"):
        collisions_sweep(jax.random.key(0), CFG, [], 2)
    with pytest.raises(ValueError, match="hidden_sizes"):
        collisions_sweep(jax.random.key(0), CFG, [0], 2)
