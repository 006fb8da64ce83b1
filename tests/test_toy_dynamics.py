"""Streamed training records: equal to a step-by-step recomputation, bounded host memory, resumable."""

import filecmp
import tracemalloc

import jax
import numpy as np
import pytest

from jaxinterp.toy import dynamics, training
from jaxinterp.toy import incidental as inc

CFG = inc.IncidentalConfig(n_features=10, n_hidden=10, steps=200, learning_rate=5e-2, l1=1e-2)
REC = dynamics.incidental_record()


def _fit(keys, **kw):
    kw.setdefault("steps", CFG.steps)
    kw.setdefault("chunk_size", 40)
    return training.fit(inc.make_init(CFG), inc.make_loss_and_grad(CFG), inc.make_optimizer(CFG), keys, **kw)


def _reference(w0: np.ndarray, w: np.ndarray):
    """Count and argmax changes by numpy loops from the weights ``w [n_records, instances, n, m]``."""
    a = np.abs(np.asarray(w, np.float64))
    count = np.zeros(a.shape[:2], int)
    changes = np.zeros(a.shape[:2], int)
    for r in range(a.shape[0]):
        for i in range(a.shape[1]):
            per_neuron = [int(((a[r, i, :, k] >= 0.8) & (a[r, i, :, k] <= 1.2)).sum()) for k in range(a.shape[3])]
            count[r, i] = sum(c >= 2 for c in per_neuron)
            before = np.abs(w0[i]) if r == 0 else a[r - 1, i]
            changes[r, i] = sum(np.argmax(before[f]) != np.argmax(a[r, i, f]) for f in range(a.shape[2]))
    return count, changes


def test_streamed_record_equals_a_step_by_step_recomputation(tmp_path):
    keys = jax.random.split(jax.random.key(3), 3)
    # the record beside the raw trajectory, from one compiled program
    both = training.StateRecord(lambda prev, s: {"w": s.params, "step_loss": s.loss, "rec": REC.fn(prev, s)})
    res = _fit(keys, record=both, record_every=5, record_path=tmp_path / "rec")
    recs = dynamics.load_records(tmp_path / "rec")
    assert recs.written == 40 and list(recs.steps) == list(range(5, 205, 5))
    np.testing.assert_array_equal(res.record_steps, recs.steps)
    v = recs.values
    count, changes = _reference(training.initial_params(inc.make_init(CFG), keys), v["w"])
    np.testing.assert_array_equal(v["rec.polysemantic"], count)
    np.testing.assert_array_equal(v["rec.assignment_changes"], changes)
    np.testing.assert_array_equal(v["rec.loss"], v["step_loss"])
    # the problem is not trivial: neurons become polysemantic, features change neuron
    assert v["rec.polysemantic"][-1].sum() > 0 and v["rec.assignment_changes"].sum() > 0
    # the last record is the final weights' count
    np.testing.assert_array_equal(v["rec.polysemantic"][-1], inc.count_polysemantic(res.state.params))


def test_streamed_and_held_histories_agree(tmp_path):
    keys = jax.random.split(jax.random.key(3), 3)
    streamed = _fit(keys, record=REC, record_every=10, record_path=tmp_path / "rec")
    held = _fit(keys, record=REC, record_every=10)
    for name in ("loss", "polysemantic", "assignment_changes"):
        assert streamed.history[name].shape == (3, 20)
        np.testing.assert_array_equal(held.history[name], streamed.history[name])
    np.testing.assert_array_equal(streamed.history["polysemantic"][:, -1], inc.count_polysemantic(held.state.params))


def test_records_are_streamed_not_held(tmp_path):
    """Host memory of a streamed run does not grow with the number of records; a held run's does."""
    keys = jax.random.split(jax.random.key(4), 64)
    record = dict(record=lambda w: w, record_every=1, chunk_size=20)     # [10, 10] float32 per instance and step
    _fit(keys, steps=20, record_path=tmp_path / "warm", **record)        # compile outside the measurement

    def peak(**kw):
        tracemalloc.start()
        _fit(keys, steps=400, **record, **kw)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    total = 400 * 64 * 10 * 10 * 4                                        # 10 MB of records
    streamed = peak(record_path=tmp_path / "big")
    held = peak()
    assert streamed < total / 4, (streamed, total)                       # one chunk is total / 20
    assert held > total, (held, total)
    assert dynamics.load_records(tmp_path / "big").values["record"].shape == (400, 64, 10, 10)


def test_resumed_run_writes_the_identical_record_file(tmp_path):
    keys = jax.random.split(jax.random.key(5), 3)
    kw = dict(record=REC, record_every=10, run_id=CFG)
    _fit(keys, record_path=tmp_path / "full", **kw)

    def interrupt(done, state):
        if done == 80:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        _fit(keys, record_path=tmp_path / "resumed", checkpoint_path=ckpt, callback=interrupt, **kw)
    assert dynamics.load_records(tmp_path / "resumed").written == 8
    resumed = _fit(keys, record_path=tmp_path / "resumed", checkpoint_path=ckpt, **kw)
    assert resumed.resumed_from == 80
    names = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert names == ["assignment_changes.npy", "loss.npy", "polysemantic.npy", "records.json"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "full", tmp_path / "resumed", names, shallow=False)
    assert match == names and not mismatch and not errors
    # resuming needs the folder the run wrote to
    with pytest.raises(ValueError, match="record_path"):
        _fit(keys, record_path=tmp_path / "elsewhere", checkpoint_path=ckpt, **kw)


def test_bad_arguments():
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="record_path"):
        _fit(keys, record_path="x")
    with pytest.raises(ValueError, match="low <= high"):
        dynamics.incidental_record(low=2.0, high=1.0)
    with pytest.raises(ValueError, match="quantiles"):
        dynamics.count_quantiles(np.zeros((3, 2)), quantiles=(1.5,))
    with pytest.raises(ValueError, match="holds no records"):
        dynamics.load_records("/nonexistent/folder")


def test_count_quantiles_match_numpy_blockwise():
    values = np.random.default_rng(0).integers(0, 20, (37, 11))
    np.testing.assert_allclose(dynamics.count_quantiles(values, (0.1, 0.5, 0.9), block=5),
                               np.quantile(values, (0.1, 0.5, 0.9), axis=1))


@pytest.mark.parametrize("pad", [pytest.param(False, marks=pytest.mark.slow), True])
def test_recorded_sweep_gives_the_unrecorded_counts_and_its_dynamics(tmp_path, pad):
    """One training gives both: the recorded sweep's numbers equal the unrecorded sweep's bitwise, and the
    last record of every seed is its final count."""
    from jaxinterp.toy.sweep import collisions_sweep

    base = inc.IncidentalConfig(n_features=8, n_hidden=8, steps=200, learning_rate=5e-2, l1=1e-2)
    key = jax.random.key(7)
    plain = collisions_sweep(key, base, [8, 16], 4, chunk_size=100, pad=pad)
    sweep = collisions_sweep(key, base, [8, 16], 4, chunk_size=100, pad=pad, record=REC, record_every=20,
                             record_dir=tmp_path)
    for name in ("counts", "final_loss", "match_rate", "mean_rank"):
        np.testing.assert_array_equal(sweep[name], plain[name], err_msg=name)
    assert plain["record_paths"] == [None, None]
    dyn = dynamics.sweep_dynamics(sweep)
    np.testing.assert_array_equal(dyn["final_counts"], sweep["counts"])
    assert dyn["count_quantiles"].shape == (2, len(dynamics.QUANTILES), 10) and list(dyn["steps"]) == list(
        range(20, 220, 20))
    # each size's seeds, read back by hand from the folder (padded: one folder, size-major columns)
    folder, (lo, hi) = sweep["record_paths"][1], sweep["record_columns"][1]
    assert (folder, lo, hi) == ((str(tmp_path / "padded_8-16"), 4, 8) if pad else (str(tmp_path / "m16"), 0, 4))
    recs = dynamics.load_records(folder).values
    np.testing.assert_allclose(dyn["count_quantiles"][1], np.quantile(recs["polysemantic"][:, lo:hi],
                                                                      dynamics.QUANTILES, axis=1))
    np.testing.assert_allclose(dyn["count_mean"][1], np.mean(recs["polysemantic"][:, lo:hi], axis=1))
    lo, hi = sweep["record_columns"][0]
    np.testing.assert_allclose(dyn["loss_median"][0], np.median(
        dynamics.load_records(sweep["record_paths"][0]).values["loss"][:, lo:hi], axis=1), rtol=1e-6)
    if pad:   # the wrapper is the same recorded sweep (once: its programs are compiled already)
        again = dynamics.collisions_dynamics(key, base, [8, 16], 4, record_every=20, chunk_size=100, pad=pad)
        for name, value in dyn.items():
            np.testing.assert_array_equal(again[name], value, err_msg=name)
    with pytest.raises(ValueError, match="record_dir"):
        collisions_sweep(key, base, [8], 2, record=REC, record_every=20)
    with pytest.raises(ValueError, match="not recorded"):
        dynamics.sweep_dynamics(plain)
