"""Memory-bounded 2AFC: units are scored in blocks whose stimulus embeddings fit a budget."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jaxinterp.interpretability as interp
from jaxinterp.interpretability.similarity import embed_items

psy = importlib.import_module("jaxinterp.interpretability.psychophysics")  # the name is shadowed by the function
T, R = interp.N_TRIALS, interp.N_REFS


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(7)
    acts = rng.normal(size=(900, 11)).astype(np.float32)
    items = rng.normal(size=(900, 6)).astype(np.float32)
    return acts, items


def test_blocked_scores_equal_the_unblocked_computation(task):
    """With the same vectorisation width (``unit_batch``), blocks of 1 or 2 units (11 or 6 blocks) give
    bitwise the numbers of embedding every unit's stimuli at once and comparing them in one call (the
    computation before blocking), and the default budget (one block) too. Other widths change only
    float32 rounding (rtol 1e-6)."""
    acts, items = task
    sim = interp.pixel_l2()
    stim = interp.two_afc_stimuli(acts)
    qe, re = embed_items(sim, items, stim.queries), embed_items(sim, items, stim.references)
    for ub in (1, 2):
        budget = psy.stimulus_block_bytes(ub, T, R, 6, ub)
        assert psy.block_units(11, T, R, 6, ub, budget) == ub
        blocked = interp.psychophysics(acts, items, sim, memory_budget_bytes=budget, unit_batch=ub)
        whole = interp.two_afc_from_embeddings(qe, re, sim, zscore="trial", unit_batch=ub)
        np.testing.assert_array_equal(blocked.trial_probs, whole)
    default = interp.psychophysics(acts, items, sim).trial_probs  # 1 GiB: all 11 units in one block
    np.testing.assert_array_equal(default, interp.two_afc_from_embeddings(qe, re, sim, zscore="trial", unit_batch=16))
    np.testing.assert_allclose(blocked.trial_probs, default, rtol=1e-6)


def test_arrays_held_per_block_respect_the_budget(task, monkeypatch):
    """The embeddings built per block (recorded from the real calls) plus the comparison's
    [unit_batch, 2, 2, T, R, e] difference stay within the budget, and the units are split."""
    acts, items = task
    seen = []
    real = psy.two_afc_from_embeddings

    def spy(qe, re, similarity, **kw):
        seen.append((qe.shape, re.shape, kw["unit_batch"]))
        return real(qe, re, similarity, **kw)

    monkeypatch.setattr(psy, "two_afc_from_embeddings", spy)
    budget = 200_000
    interp.psychophysics(acts, items, interp.pixel_l2(), memory_budget_bytes=budget, unit_batch=2)
    assert sum(q[0] for q, _, _ in seen) == 11 and len(seen) > 2
    for qs, rs, ub in seen:
        units, e = qs[0], qs[-1]
        stimuli = 4 * (np.prod(qs) + np.prod(rs))  # float32 query and reference embeddings
        table = stimuli  # distinct stimuli embedded once: at most as many rows
        compare = 4 * min(ub, units) * 4 * T * R * e
        assert stimuli + table + stimuli + compare <= budget  # gathered, table, padded copy, difference
        assert rs == (units, 2, T, R, e)


def test_a_budget_below_one_unit_is_refused(task):
    acts, items = task
    with pytest.raises(ValueError, match="`memory_budget_bytes`"):
        interp.psychophysics(acts, items, interp.pixel_l2(), memory_budget_bytes=1000)
    for bad in (0, -5, 2.5, None):
        with pytest.raises((ValueError, TypeError), match="`memory_budget_bytes`"):
            interp.psychophysics(acts, items, interp.pixel_l2(), memory_budget_bytes=bad)


@pytest.mark.slow
def test_224_units_of_60k_dim_embeddings_stay_under_4_gb():
    """Issue-sized run (224 units, 59,552-dim embeddings, 1 GiB budget) in a fresh process: peak
    resident memory below 4 GB. The items are a precomputed embedding table [1000, 59552] (238 MB)."""
    code = textwrap.dedent("""
        import resource, numpy as np, jaxinterp.interpretability as interp
        rng = np.random.default_rng(0)
        acts = rng.normal(size=(1000, 224)).astype(np.float32)
        table = rng.normal(size=(1000, 59552)).astype(np.float32)
        s = interp.psychophysics(acts, table, interp.precomputed(interp.pixel_l2())).scores
        assert s.shape == (224,) and np.all(np.isfinite(s))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3000, check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak < 4e9, f"peak resident memory {peak / 1e9:.2f} GB"


def test_streamed_paper_stimuli_equal_in_memory():
    """Paper protocol streamed (batches of 128, rows reversed for the top ranks) == in memory, with
    tied responses (rounded to 0.25) so the tie rules matter, at q = 0 and at q = 0.25 (exact bounds)."""
    rng = np.random.default_rng(11)
    data = rng.normal(size=(1700, 5)).astype(np.float32)
    w = rng.normal(size=(5, 3)).astype(np.float32)

    def response(b):
        return (b @ w * 4.0).round() / 4.0

    acts = np.asarray(response(data))
    for q in (0.0, 0.25):
        bounds = None if q == 0.0 else tuple(np.quantile(acts.astype(np.float64), [q, 1 - q], axis=0))
        got = interp.stream_two_afc_stimuli(response, data, q, protocol="paper", bounds=bounds, batch_size=128)
        want = interp.two_afc_stimuli(acts, q, protocol="paper")
        np.testing.assert_array_equal(got.queries, want.queries)
        np.testing.assert_array_equal(got.references, want.references)
    with pytest.raises(ValueError, match="`bounds`"):
        interp.stream_two_afc_stimuli(response, data, 0.25, protocol="paper")
    with pytest.raises(ValueError, match="`protocol`"):
        interp.stream_two_afc_stimuli(response, data, protocol="nope")
