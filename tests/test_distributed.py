"""Multi-process runs: 2 processes x 2 CPU devices give the numbers of 1 process x 4 devices.

The worker below runs in subprocesses (``python -m jaxinterp.launch``), on localhost with gloo
collectives and tiny sizes:

1. 1 process x 4 devices: a toy collisions sweep (its dynamics recorded) and a ReLU SAE trained through
   ``directions.fit(..., mesh=global_mesh())`` (the reference); then both again with
   checkpoints, the SAE interrupted (an exception after its 2nd of 4 chunks) and the sweep
   killed (``os._exit``, no clean-up) after its 2nd of 4 chunks: the launcher must report it;
2. 2 processes x 2 devices: the same two runs, compared with the reference, then both resumed
   from the checkpoints the one process left.

Toy seeds are independent of one another, so the sweep is bitwise equal however the seeds are
split. The SAE's gradients are means over the batch, all-reduced across devices: in one
process by XLA's in-process collective, across processes by gloo, which may add the partial
sums in another order, so its weights agree to 1e-5 (float32, 40 Adam steps), not bitwise.
"""

import filecmp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from jaxinterp import launch

ROOT = Path(__file__).resolve().parents[1]
SAE_ATOL = 1e-5
KILLED = 17   # exit status of the killed worker

_WORKER = textwrap.dedent("""
    import os, sys
    from jaxinterp import distributed
    distributed.initialize()
    import jax
    import numpy as np
    from jaxinterp import directions as jd, loop, sharding
    from jaxinterp.directions import learner as driver
    from jaxinterp.toy import IncidentalConfig, collisions_sweep, dynamics, training

    out, ckpt_dir, stage = sys.argv[1:4]
    assert jax.device_count() == 4, jax.devices()
    me, n_proc = jax.process_index(), jax.process_count()
    mesh = distributed.global_mesh()
    CFG = IncidentalConfig(n_features=6, n_hidden=8, steps=40, learning_rate=1e-2, l1=3e-3)
    B, STEPS = 16, 40
    X = np.random.default_rng(0).normal(size=(B * STEPS, 8)).astype(np.float32)
    starts = []

    class Interrupted(Exception):
        pass

    def stopping_after(k, kill):
        # run_chunks that records where it starts and stops (exception or hard exit) after chunk k
        def run_chunks(run_chunk, state, *, after_chunk=None, **kw):
            starts.append(kw.get("start", 0))
            def after(done, s):
                if after_chunk is not None:
                    after_chunk(done, s)
                if k and done == k * 10:
                    if kill:
                        os._exit(%(killed)d)
                    raise Interrupted
            return loop.run_chunks(run_chunk, state, after_chunk=after, **kw)
        return run_chunks

    def sweep(ckpt=None, kill_after=0, records=None):
        # recorded every 5 steps; only process 0 writes the folder and the checkpoint
        training.run_chunks = stopping_after(kill_after, True)
        r = collisions_sweep(jax.random.key(1), CFG, [8], 8, chunk_size=10, checkpoint_dir=ckpt,
                             record=dynamics.incidental_record(), record_every=5, record_dir=records)
        return {k: np.asarray(r[k]) for k in ("counts", "final_loss", "match_rate", "mean_rank")}

    LEARNER = jd.sae(16, kind="relu", batch_size=B, steps=STEPS, aux_k=0, grad_clip=0.0)

    def sae(ckpt=None, stop_after=0, parallel=True):
        # each process yields only its own rows of every global batch
        driver.run_chunks = stopping_after(stop_after, False)
        rows = distributed.local_rows(B, mesh) if parallel else slice(None)
        batches = [X[i * B:(i + 1) * B][rows] for i in range(STEPS)]
        d = jd.fit(LEARNER, batches, key=jax.random.key(2), mesh=mesh if parallel else None, chunk_size=10,
                   checkpoint_path=ckpt)
        return np.asarray(d.components)

    def sae_sampled():
        # minibatches drawn from the array; each process reads the rows of its devices
        return np.asarray(jd.fit(LEARNER, X, key=jax.random.key(3), mesh=mesh, chunk_size=10).components)

    def save(name, tree):
        np.savez(os.path.join(out, f"{name}_p{me}of{n_proc}.npz"), **tree)

    serial = {"sae_serial": sae(parallel=False)} if stage == "reference" else {}
    # replicate broadcasts process 0's value: copies agree even where the processes' values differ
    mine = {"i": np.arange(3) + me, "b": np.array([True, False]) ^ bool(me)}
    same = sharding.gather(sharding.replicate(mine, mesh))
    toy = sweep(records=os.path.join(out, f"rec_{n_proc}_p{me}"))
    save("full", dict(sae=sae(), sae_sampled=sae_sampled(), **serial, **toy, rep_i=same["i"], rep_b=same["b"]))
    if stage == "reference":
        try:
            sae(os.path.join(ckpt_dir, "sae.npz"), stop_after=2)
        except Interrupted:
            pass
        sweep(ckpt_dir, kill_after=2, records=os.path.join(ckpt_dir, "rec"))
    else:
        starts.clear()
        weights = sae(os.path.join(ckpt_dir, "sae.npz"))
        toy = sweep(ckpt_dir, records=os.path.join(ckpt_dir, "rec"))
        save("resumed", dict(sae=weights, starts=np.asarray(starts), **toy))
""") % {"killed": KILLED}


def _launch(tmp_path, n_processes, stage, timeout=170):
    """Run the worker as ``n_processes`` processes of 4 // n_processes CPU devices each."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    for sub in ("out", "ckpt"):
        (tmp_path / sub).mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "JAXINTERP_COMPILATION_CACHE": "0"}
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "jaxinterp.launch", "-n", str(n_processes), "--cpu-devices", str(4 // n_processes),
           "--grace", "20", "--", sys.executable, str(script), str(tmp_path / "out"), str(tmp_path / "ckpt"), stage]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _load(tmp_path, name, n_processes):
    return [dict(np.load(tmp_path / "out" / f"{name}_p{p}of{n_processes}.npz")) for p in range(n_processes)]


def test_two_processes_match_one_and_resume_on_another_count(tmp_path):
    from jaxinterp import checkpoint

    start = time.perf_counter()
    ref = _launch(tmp_path, 1, "reference")              # ends killed, see below
    assert (tmp_path / "out" / "full_p0of1.npz").exists(), ref.stderr[-3000:]
    (want,) = _load(tmp_path, "full", 1)
    assert want["counts"].shape == (1, 8)
    # data-parallel over 4 devices = one device, up to the order of the batch sums
    np.testing.assert_allclose(want["sae"], want["sae_serial"], rtol=0, atol=SAE_ATOL)
    assert ref.returncode == KILLED, ref.stderr[-3000:]
    sae_meta = checkpoint.read_metadata(tmp_path / "ckpt" / "sae.npz")
    (toy_ckpt,) = (tmp_path / "ckpt").glob("incidental_*.npz")
    assert sae_meta["steps_done"] == 20 and checkpoint.read_metadata(toy_ckpt)["steps_done"] == 20

    two = _launch(tmp_path, 2, "compare")
    assert two.returncode == 0, two.stderr[-3000:]
    for p, got in enumerate(_load(tmp_path, "full", 2)):      # every process holds the whole result
        np.testing.assert_array_equal(got["rep_i"], [0, 1, 2])
        np.testing.assert_array_equal(got["rep_b"], [True, False])
        for name in ("counts", "final_loss", "match_rate", "mean_rank"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        np.testing.assert_allclose(got["sae"], want["sae"], rtol=0, atol=SAE_ATOL)
        np.testing.assert_allclose(got["sae_sampled"], want["sae_sampled"], rtol=0, atol=SAE_ATOL)
        print(f"process {p}: SAE 2 x 2 against 1 x 4, max |difference|", np.abs(got["sae"] - want["sae"]).max(),
              np.abs(got["sae_sampled"] - want["sae_sampled"]).max())
    # the records: written by process 0 alone, identical to one process's; the killed run's, resumed with 2, too
    names = sorted(p.name for p in (tmp_path / "out" / "rec_1_p0" / "m8").iterdir())
    assert len(names) == 4 and not (tmp_path / "out" / "rec_2_p1").exists()
    for folder in (tmp_path / "out" / "rec_2_p0", tmp_path / "ckpt" / "rec"):
        assert filecmp.cmpfiles(tmp_path / "out" / "rec_1_p0" / "m8", folder / "m8", names, shallow=False)[0] == names
    for got in _load(tmp_path, "resumed", 2):                 # killed with 1 process, resumed with 2
        np.testing.assert_array_equal(got["starts"], [20, 20])
        for name in ("counts", "final_loss", "match_rate", "mean_rank"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        np.testing.assert_allclose(got["sae"], want["sae"], rtol=0, atol=SAE_ATOL)
    print(f"2 launches in {time.perf_counter() - start:.1f}s")


# ---------------------------------------------------------------- the launcher alone (no JAX)


def _run_launcher(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "jaxinterp.launch", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_launcher_sets_each_process_env_and_returns_the_failure():
    show = ("import os; print(os.environ['JAX_COORDINATOR_ADDRESS'], os.environ['JAXINTERP_NUM_PROCESSES'], "
            "os.environ['JAXINTERP_PROCESS_ID'], os.environ['JAX_NUM_CPU_DEVICES'])")
    ok = _run_launcher("-n", "3", "--cpu-devices", "2", "--", sys.executable, "-c", show)
    assert ok.returncode == 0, ok.stderr
    lines = sorted(ok.stdout.split("\n")[:3])
    addresses = {line.split()[0] for line in lines}
    assert len(addresses) == 1 and addresses.pop().startswith("127.0.0.1:")
    assert [line.split()[1:] for line in lines] == [["3", str(i), "2"] for i in range(3)]
    # process 1 fails with 5, process 0 would run for a minute: stopped after the grace period
    fail = ("import os, sys, time; i = int(os.environ['JAXINTERP_PROCESS_ID']); "
            "time.sleep(60) if i == 0 else sys.exit(5)")
    start = time.perf_counter()
    bad = _run_launcher("-n", "2", "--grace", "1", "--", sys.executable, "-c", fail)
    assert bad.returncode == 5 and time.perf_counter() - start < 30
    assert _run_launcher("-n", "2").returncode == 2       # no command
    missing = _run_launcher("-n", "2", "--", "/nonexistent/program")
    assert missing.returncode == 127 and "/nonexistent/program" in missing.stderr
    assert _run_launcher("-n", "0", "--", "true").returncode == 2


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_launcher_forwards_sigterm_to_every_process(tmp_path):
    body = ("import os, signal, sys, time, pathlib\n"
            "d = pathlib.Path(sys.argv[1]); i = os.environ['JAXINTERP_PROCESS_ID']\n"
            "signal.signal(signal.SIGTERM, lambda *a: ((d / ('term' + i)).write_text('x'), sys.exit(3)))\n"
            "(d / ('up' + i)).write_text('x'); time.sleep(60)\n")
    script = tmp_path / "sleeper.py"
    script.write_text(body)
    proc = subprocess.Popen([sys.executable, "-m", "jaxinterp.launch", "-n", "2", "--", sys.executable, str(script),
                             str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"up{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3
    assert all((tmp_path / f"term{i}").exists() for i in range(2))


def test_launch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="command"):
        launch.launch([], 2)
    with pytest.raises(ValueError, match="num_processes"):
        launch.launch(["true"], 0)
    with pytest.raises(ValueError, match="cpu_devices"):
        launch.launch(["true"], 1, cpu_devices=0)
    env = launch.process_env(1, 2, "127.0.0.1:1234", base={"A": "b"})
    assert env == {"A": "b", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAXINTERP_NUM_PROCESSES": "2",
                   "JAXINTERP_PROCESS_ID": "1"}


# ---------------------------------------------------------------- distributed helpers in one process


def test_initialize_checks_its_settings_before_starting_anything():
    from jaxinterp import distributed

    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("127.0.0.1:1234", 2)
    with pytest.raises(ValueError, match="host:port"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize("127.0.0.1:1234", 0, 0)
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False      # one process: nothing to join
    assert not distributed.is_initialized() and distributed.is_main_process()


def test_one_process_helpers_are_the_identity():
    import jax

    from jaxinterp import distributed

    mesh = distributed.global_mesh()
    assert mesh.size == jax.device_count()
    n = 2 * mesh.size
    assert distributed.local_rows(n, mesh) == slice(0, n)
    local = np.arange(3.0 * n).reshape(n, 3)
    whole = distributed.from_process_local(local, mesh)
    assert whole.shape == (n, 3)
    keys = jax.random.split(jax.random.key(0), 2)
    got = distributed.gather({"x": whole, "k": keys})
    assert isinstance(got["x"], np.ndarray)
    np.testing.assert_array_equal(got["x"], local)
    np.testing.assert_array_equal(jax.random.key_data(got["k"]), jax.random.key_data(keys))
    with pytest.raises(ValueError, match="n_rows"):
        distributed.local_rows(0, mesh)
    with pytest.raises(TypeError, match="mesh"):
        distributed.from_process_local(local, "mesh")
    with pytest.raises(ValueError, match="axis"):
        distributed.from_process_local(local, mesh, axis=2)


def test_fit_mesh_is_checked():
    import jax

    from jaxinterp import directions as jd
    from jaxinterp import distributed

    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="mesh"):
        jd.fit(jd.pca(2), x, key=jax.random.key(0), mesh=distributed.global_mesh())
    with pytest.raises(TypeError, match="mesh"):
        jd.fit(jd.sae(4, batch_size=8, steps=2), x, key=jax.random.key(0), mesh="devices")


def test_cli_processes_relaunches_the_same_command(monkeypatch, tmp_path, capsys):
    from jaxinterp import cli

    seen = []
    monkeypatch.setattr(launch, "launch", lambda command, n: seen.append((command, n)) or 0)
    argv = ["run", "incidental", "--quick", "--processes", "2", "--seeds", "3", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert seen == [([sys.executable, "-m", "jaxinterp.cli", "run", "incidental", "--quick", "--seeds", "3",
                      "--out", str(tmp_path)], 2)]
    assert cli.main(["run", "incidental", "--processes=0"]) == 2
    assert cli.main(["run", "incidental", "--processes", "2", "--seeds", "0"]) == 2    # checked before launching
    assert "--seeds" in capsys.readouterr().err and len(seen) == 1
