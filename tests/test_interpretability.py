"""Exemplars, similarities, Interpretability Index and in-silico 2AFC against loop references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxinterp.interpretability as interp
from jaxinterp import models
from jaxinterp.interpretability import index as index_module
from jaxinterp.interpretability import reference as ref
from jaxinterp.interpretability.similarity import pairwise

N = 1700  # the paper's 2AFC needs more than 4 * 20 * (1 + 9) = 800 inputs inside the [q, 1-q] range


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(N, 4, 4, 2)).astype(np.float32)
    w = rng.normal(size=(32, 5)).astype(np.float32)
    acts = np.tanh(items.reshape(N, -1) @ w) + 0.1 * rng.normal(size=(N, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=N).astype(np.int32)
    return items, acts.astype(np.float32), labels


# -- exemplars ------------------------------------------------------------------------------------


def test_top_bottom_matches_argsort_with_ties(data):
    _, acts, _ = data
    acts = np.round(acts, 1)  # many ties: broken by dataset index
    ex = interp.top_bottom_exemplars(acts, 7)
    for u in range(acts.shape[1]):
        np.testing.assert_array_equal(ex.top_indices[u], np.argsort(-acts[:, u], kind="stable")[:7])
        np.testing.assert_array_equal(ex.bottom_indices[u], np.argsort(acts[:, u], kind="stable")[:7])
        np.testing.assert_allclose(ex.top_values[u], acts[ex.top_indices[u], u])


def test_streamed_exemplars_equal_in_memory(data):
    _, acts, _ = data
    acts = np.round(acts, 1)
    a = interp.top_bottom_exemplars(acts, 6)
    b = interp.stream_exemplars(lambda x: x * 1.0, acts, 6, batch_size=64)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_two_afc_stimuli_streamed_equal_in_memory(data):
    _, acts, _ = data
    for q in (0.0, 0.25):
        a = interp.two_afc_stimuli(acts, q, protocol="ranked")
        bounds = (a.lower, a.upper) if q else None
        b = interp.stream_two_afc_stimuli(lambda x: x, acts, q, bounds=bounds, batch_size=100)
        np.testing.assert_array_equal(a.queries, b.queries)
        np.testing.assert_array_equal(a.references, b.references)
    # without bounds, the quantiles come from a histogram: within ~one bin width of the exact ones
    # (the histogram CDF and numpy's (n - 1) interpolation conventions differ slightly)
    bins = 2048
    c = interp.stream_two_afc_stimuli(lambda x: x, acts, 0.25, batch_size=100, bins=bins)
    width = 2 * (acts.max(0) - acts.min(0)) / bins
    assert np.all(np.abs(c.lower - a.lower) <= width) and np.all(np.abs(c.upper - a.upper) <= width)


def test_quantile_exemplars_in_memory_and_streamed(data):
    _, acts, _ = data
    levels = (0.0, 0.3, 0.5, 1.0)
    idx, resp = interp.quantile_exemplars(acts, levels, 3)
    targets = np.quantile(acts.astype(np.float64), levels, axis=0).T
    for u in range(acts.shape[1]):
        for li in range(len(levels)):
            dist = np.abs(acts[:, u] - targets[u, li])
            np.testing.assert_array_equal(np.sort(dist[idx[u, li]]), np.sort(dist)[:3] * 0 + np.sort(dist[idx[u, li]]))
            assert dist[idx[u, li]].max() <= np.sort(dist)[2] + 1e-6
            np.testing.assert_allclose(resp[u, li], acts[idx[u, li], u])
    np.testing.assert_array_equal(idx[:, 0, 0], acts.argmin(0))
    np.testing.assert_array_equal(idx[:, -1, 0], acts.argmax(0))
    s_idx, s_resp = interp.stream_quantile_exemplars(lambda x: x, acts, levels, 3, batch_size=128,
                                                     targets=np.quantile(acts, levels, axis=0).T)
    np.testing.assert_array_equal(s_idx, idx)
    np.testing.assert_allclose(s_resp, resp)


# -- similarities ------------------------------------------------------------------------------------


def test_builtin_similarities_against_loops(data):
    items, _, labels = data
    i, j = np.arange(10), np.arange(10, 20)
    pix = interp.pixel_l2()
    got = pairwise(pix, interp.embed_items(pix, items, i), interp.embed_items(pix, items, j))
    want = [[ref.pixel_l2_sim(items[a], items[b]) for b in j] for a in i]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    mc = interp.mean_colour_l2()
    got = pairwise(mc, interp.embed_items(mc, items, i), interp.embed_items(mc, items, j))
    want = [[-np.linalg.norm(items[a].mean((0, 1)) - items[b].mean((0, 1))) for b in j] for a in i]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    lab = interp.label_agreement(4)
    got = pairwise(lab, interp.embed_items(lab, labels, i), interp.embed_items(lab, labels, j))
    np.testing.assert_array_equal(got, labels[i][:, None] == labels[j][None, :])


def test_lpips_style_similarity_from_flax_network(data):
    items, _, _ = data
    model = models.CNN(channels=(4, 6), hidden=8, n_classes=3)
    params = models.init_params(model, items.shape[1:], key=jax.random.key(1))
    sim = interp.flax_deep_feature(model, params, layers=["Conv_*"])
    feats = interp.network_features(lambda x: model.apply(params, x), ["Conv_*"])(jnp.asarray(items[:6]))
    assert sorted(feats) == ["Conv_0/relu", "Conv_1/relu"] and feats["Conv_0/relu"].shape == (6, 4, 4, 4)
    emb = interp.embed_items(sim, items, np.arange(6))
    got = np.asarray(pairwise(sim, emb, emb))
    fl = [[np.asarray(feats[n][a]) for n in sorted(feats)] for a in range(6)]
    want = np.array([[ref.lpips_sim(fl[a], fl[b]) for b in range(6)] for a in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.diag(got), 0.0, atol=1e-6)
    with pytest.raises(KeyError):
        interp.network_features(lambda x: model.apply(params, x), ["Nope_*"])(jnp.asarray(items[:2]))


# -- Interpretability Index ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("self_pairs", [True, False])
def test_index_matches_loop_reference(data, k, self_pairs):
    items, acts, labels = data
    got = interp.interpretability_index(acts, items, interp.pixel_l2(), k=k, include_self_pairs=self_pairs)
    want = ref.loop_index(acts, items, ref.pixel_l2_sim, k, include_self_pairs=self_pairs)
    np.testing.assert_allclose(got.scores, want, rtol=1e-5)
    got = interp.interpretability_index(acts, labels, interp.label_agreement(4), k=k, unit_batch=2,
                                        include_self_pairs=self_pairs)
    want = ref.loop_index(acts, labels, ref.label_sim, k, include_self_pairs=self_pairs)
    np.testing.assert_allclose(got.scores, want, atol=1e-6)


def test_index_ranks_tied_exemplars_as_the_authors(data):
    items, acts, labels = data
    tied = np.round(acts, 1)  # many ties at the top
    got = interp.interpretability_index(tied, items, interp.pixel_l2(), k=5)
    for u in range(tied.shape[1]):
        np.testing.assert_array_equal(got.top_indices[u], np.argsort(tied[:, u], kind="stable")[::-1][:5])
    np.testing.assert_allclose(got.scores, ref.loop_index(tied, items, ref.pixel_l2_sim, 5, include_self_pairs=True),
                               rtol=1e-5)
    assert not np.array_equal(got.top_indices, interp.top_bottom_exemplars(tied, 5).top_indices)


@pytest.mark.parametrize("k", [2, 5, 9])
def test_self_pairs_are_k_minus_one_over_k_of_distinct_pairs(data, k):
    """Distances: II_all = (k-1)/k II_distinct; label agreement (self-similarity 1): + 1/k."""
    items, acts, labels = data
    for sim, table, self_sim in ((interp.pixel_l2(), items, 0.0), (interp.label_agreement(4), labels, 1.0)):
        both = interp.interpretability_index(acts, table, sim, k=k).scores
        distinct = interp.interpretability_index(acts, table, sim, k=k, include_self_pairs=False).scores
        np.testing.assert_allclose(both, (k - 1) / k * distinct + self_sim / k, rtol=1e-5, atol=1e-6)
        if self_sim == 0.0:
            assert np.all(both > distinct)  # minus distances: the zero self-pairs raise the mean


def test_index_from_embeddings_under_jit(data):
    items, acts, _ = data
    sim = interp.pixel_l2()
    top = interp.top_bottom_exemplars(acts, 5).top_indices
    emb = interp.embed_items(sim, items, top)
    f = jax.jit(lambda e: interp.index_from_embeddings(e, sim, unit_batch=3))
    np.testing.assert_allclose(f(emb), ref.loop_index(acts, items, ref.pixel_l2_sim, 5, include_self_pairs=True),
                               rtol=1e-5)


def test_precomputed_embeddings_give_the_same_scores(data):
    items, acts, _ = data
    sim = interp.pixel_l2()
    table = interp.embed_items(sim, items, np.arange(N))
    a = interp.interpretability_index(acts, items, sim).scores
    b = interp.interpretability_index(acts, np.asarray(table), interp.precomputed(sim)).scores
    np.testing.assert_allclose(a, b, rtol=1e-6)


# -- 2AFC ----------------------------------------------------------------------------------------------


def _paper_data(n=N, ties=False):
    rng = np.random.default_rng(5)
    items = rng.normal(size=(n, 3, 3, 2)).astype(np.float32)
    acts = (np.tanh(items.reshape(n, -1) @ rng.normal(size=(18, 4))) + 0.1 * rng.normal(size=(n, 4)))
    if ties:  # many equal responses, incl. at both ends of the kept range
        acts = np.clip(np.round(acts, 1), -0.8, 0.8)
    return items, acts.astype(np.float32), rng.integers(0, 3, size=n).astype(np.int32)


@pytest.mark.parametrize("ties", [False, True])
def test_paper_two_afc_matches_the_authors_construction(ties):
    """Default psychophysics == a plain loop following Klindt et al.'s code (shuffled queries, per-trial z)."""
    items, acts, labels = _paper_data(ties=ties)
    want_px = ref.loop_two_afc_paper(acts, items, ref.pixel_l2_sim)  # [units, quantiles, trials]
    want_lab = ref.loop_two_afc_paper(acts, labels, ref.label_sim)
    for qi, q in enumerate(interp.PAPER_QUANTILES):
        got = interp.psychophysics(acts, items, interp.pixel_l2(), q=q, unit_batch=3)
        np.testing.assert_allclose(got.trial_probs, want_px[:, qi], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.scores, want_px[:, qi].mean(1), rtol=0, atol=1e-6)
        got = interp.psychophysics(acts, labels, interp.label_agreement(3), q=q)
        np.testing.assert_allclose(got.trial_probs, want_lab[:, qi], rtol=0, atol=1e-6)


def test_paper_queries_are_shuffled_and_differ_from_the_ranked_variant(data):
    items, acts, _ = data
    paper = interp.two_afc_stimuli(acts, 0.0)
    ranked = interp.two_afc_stimuli(acts, 0.0, protocol="ranked")
    top, bottom = interp.query_orders()
    rng = np.random.RandomState(42)  # the authors: np.random.seed(42); choice(20, 20, replace=False) twice
    np.testing.assert_array_equal(top, rng.choice(20, 20, replace=False))
    np.testing.assert_array_equal(bottom, rng.choice(20, 20, replace=False))
    np.testing.assert_array_equal(paper.queries[:, 0], ranked.queries[:, 0][:, top])
    np.testing.assert_array_equal(paper.queries[:, 1], ranked.queries[:, 1][:, bottom])
    np.testing.assert_array_equal(paper.references, ranked.references)  # no ties: same references
    assert not np.array_equal(paper.queries, ranked.queries)
    second = interp.two_afc_stimuli(acts, 0.25)  # q = 0.25 uses the authors' second pair of draws
    np.testing.assert_array_equal(second.queries, interp.two_afc_stimuli(acts, 0.25, draw=1).queries)
    assert not np.array_equal(second.queries, interp.two_afc_stimuli(acts, 0.25, draw=0).queries)
    a = interp.psychophysics(acts, items, interp.pixel_l2(), q=0.25).scores
    b = interp.psychophysics(acts, items, interp.pixel_l2(), q=0.25, protocol="ranked").scores
    assert np.max(np.abs(a - b)) > 1e-3  # the two constructions are different tasks


def test_paper_rule_needs_more_than_800_inputs_in_range():
    items, acts, _ = _paper_data(n=801)
    interp.psychophysics(acts, items, interp.pixel_l2())  # q = 0 keeps all 801
    with pytest.raises(ValueError, match="at least 801"):
        interp.psychophysics(acts[:800], items[:800], interp.pixel_l2())
    interp.psychophysics(acts[:800], items[:800], interp.pixel_l2(), protocol="ranked")  # ranked: 400 suffice
    with pytest.raises(ValueError, match="fewer than 801 inputs between their 0.25"):
        interp.psychophysics(acts, items, interp.pixel_l2(), q=0.25)


@pytest.mark.parametrize("q,zscore", [(0.0, "unit"), (0.25, "unit"), (0.25, "trial")])
def test_two_afc_matches_loop_reference(data, q, zscore):
    items, acts, _ = data
    got = interp.psychophysics(acts, items, interp.pixel_l2(), q=q, zscore=zscore, unit_batch=2, protocol="ranked")
    want, want_trials = ref.loop_two_afc(acts, items, ref.pixel_l2_sim, q=q, zscore=zscore)
    np.testing.assert_allclose(got.trial_probs, want_trials, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.scores, want, rtol=1e-4, atol=1e-5)
    assert np.all((got.scores > 0) & (got.scores < 1))


def test_two_afc_small_task_and_label_similarity(data):
    _, acts, labels = data
    got = interp.psychophysics(acts, labels, interp.label_agreement(4), q=0.25, n_trials=5, n_refs=3,
                               protocol="ranked")
    want, _ = ref.loop_two_afc(acts, labels, ref.label_sim, q=0.25, n_trials=5, n_refs=3)
    np.testing.assert_allclose(got.scores, want, rtol=1e-5, atol=1e-6)


# -- laws -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e3])
def test_scores_invariant_to_positive_rescaling_of_a_unit(data, scale):
    items, acts, _ = data
    sim = interp.pixel_l2()
    scaled = acts.copy()
    scaled[:, 2] *= np.float32(scale)
    scaled[:, 4] *= np.float32(1.0 / scale)
    np.testing.assert_array_equal(interp.interpretability_index(acts, items, sim).scores,
                                  interp.interpretability_index(scaled, items, sim).scores)
    for q in (0.0, 0.25):
        np.testing.assert_allclose(interp.psychophysics(acts, items, sim, q=q).scores,
                                   interp.psychophysics(scaled, items, sim, q=q).scores, rtol=1e-6)


def test_identical_exemplars_get_the_maximal_score():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(N, 3, 3, 1)).astype(np.float32)
    acts = rng.normal(size=(N, 3)).astype(np.float32)
    order = np.argsort(-acts[:, 0], kind="stable")
    items[order[:200]] = items[order[0]]  # unit 0: every top input is the same image ...
    items[order[-200:]] = items[order[-1]]  # ... and every bottom input another one
    sim = interp.pixel_l2()
    ii = interp.interpretability_index(acts, items, sim).scores
    assert ii[0] == sim.maximum == 0.0 and np.all(ii[1:] < 0.0)
    afc = interp.psychophysics(acts, items, sim).scores
    np.testing.assert_allclose(afc[0], interp.max_score(), rtol=1e-6)
    np.testing.assert_allclose(interp.max_score(), 1 / (1 + np.exp(-4.0)))
    assert np.all(afc[1:] < afc[0])


def test_all_equal_similarities_give_chance():
    items = np.zeros((N, 2, 2, 1), np.float32)  # every input identical: nothing to tell apart
    acts = np.random.default_rng(0).normal(size=(N, 2)).astype(np.float32)
    np.testing.assert_allclose(interp.psychophysics(acts, items, interp.pixel_l2()).scores, 0.5)


# -- bad input ------------------------------------------------------------------------------------------


def test_bad_input(data):
    items, acts, labels = data
    sim = interp.pixel_l2()
    with pytest.raises(ValueError, match=f"`k` must be <= {N}"):
        interp.interpretability_index(acts, items, sim, k=N + 1)
    with pytest.raises(ValueError, match="`k` must be >= 2"):
        interp.interpretability_index(acts, items, sim, k=1)
    const = acts.copy()
    const[:, 3] = 1.5
    with pytest.raises(ValueError, match=r"constant response.*units \[3\]"):
        interp.interpretability_index(const, items, sim)
    with pytest.raises(ValueError, match="constant response"):
        interp.psychophysics(const, items, sim)
    with pytest.raises(ValueError, match="constant response"):
        interp.stream_exemplars(lambda x: x, const, 5)
    with pytest.raises(ValueError, match="one row per row of `acts`"):
        interp.interpretability_index(acts, items[:-1], sim)
    with pytest.raises(ValueError, match="rank 2"):
        interp.interpretability_index(acts[:, 0], items, sim)
    with pytest.raises(ValueError, match="at least 400"):
        interp.psychophysics(acts[:399], items[:399], sim, protocol="ranked")
    with pytest.raises(ValueError, match="`q`"):
        interp.psychophysics(acts, items, sim, q=0.6)
    with pytest.raises(ValueError, match="fewer than 801 inputs between"):
        interp.psychophysics(acts, items, sim, q=0.3)
    with pytest.raises(ValueError, match="`protocol` must be one of"):
        interp.psychophysics(acts, items, sim, protocol="zimmermann")
    with pytest.raises(ValueError, match="`draw`"):
        interp.query_orders(20, 42, -1)
    with pytest.raises(TypeError, match="`include_self_pairs`"):
        interp.interpretability_index(acts, items, sim, include_self_pairs="yes")
    with pytest.raises(ValueError, match="do not match"):
        interp.two_afc_from_embeddings(jnp.zeros((3, 2, 20, 8)), jnp.zeros((3, 2, 20, 9, 7)), sim)
    with pytest.raises(ValueError, match="rank 3"):
        interp.index_from_embeddings(jnp.zeros((3, 8)), sim)
    with pytest.raises(ValueError, match="at least 2 exemplars"):
        interp.index_from_embeddings(jnp.zeros((3, 1, 8)), sim)
    with pytest.raises(ValueError, match=rf"`top_indices` must lie in \[0, {N}\)"):
        interp.index_of_exemplars(np.full((2, 5), N), items, sim)
    with pytest.raises(ValueError, match="NaN"):
        interp.top_bottom_exemplars(np.full((5, 2), np.nan, np.float32), 2)
    with pytest.raises(ValueError, match="mean-colour"):
        interp.embed_items(interp.mean_colour_l2(), items.reshape(N, -1), np.arange(3))
    with pytest.raises(TypeError, match="integer labels"):
        interp.embed_items(interp.label_agreement(4), items, np.arange(3))
    with pytest.raises(ValueError, match="`targets` must have shape"):
        interp.quantile_exemplars(acts, (0.5,), targets=np.zeros((2, 1)))


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(1e-2, 1e2), min_size=5, max_size=5))
def test_index_invariant_to_any_positive_unit_scales(data, scales):
    items, acts, _ = data
    scaled = acts * np.asarray(scales, np.float32)[None, :]
    sim = interp.pixel_l2()
    np.testing.assert_array_equal(interp.interpretability_index(acts, items, sim).scores,
                                  interp.interpretability_index(scaled, items, sim).scores)


def test_unit_counts_in_one_bucket_share_one_compilation(data):
    items, acts, _ = data
    sim = interp.pixel_l2()
    emb = interp.embed_items(sim, items, interp.top_bottom_exemplars(acts, 5).top_indices)
    interp.index_from_embeddings(emb[:5], sim)
    before = index_module._index_jit._cache_size()
    for units in (6, 7, 8):  # padded to the same power of two: no new trace
        interp.index_from_embeddings(np.concatenate([emb] * 2)[:units], sim)
    assert index_module._index_jit._cache_size() == before


# -- bad values: NaN, inf, half precision -------------------------------------------------------------


def test_nan_or_inf_items_raise_naming_items(data):
    items, acts, _ = data
    sim = interp.pixel_l2()
    top = int(np.argmax(acts[:, 0]))
    bad = items.copy()
    bad[top, 0, 0, 0] = np.nan  # one top exemplar of unit 0
    with pytest.raises(ValueError, match=rf"`items` contains NaN or infinite values \(rows \[{top}\]\)"):
        interp.interpretability_index(acts, bad, sim)
    with pytest.raises(ValueError, match=rf"`items`: 1 item\(s\) have NaN or infinite 'pixel_l2' embeddings.*\[{top}\]"):
        interp.interpretability_index(acts, bad, sim, check_finite=False)  # the compared exemplars still are
    with pytest.raises(ValueError, match="`items`.*NaN or infinite"):
        interp.psychophysics(acts, np.full_like(items, np.nan), sim)  # not a chance score of 0.5
    bad[top, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="`items`"):
        interp.psychophysics(acts, bad, sim)
    with pytest.raises(ValueError, match="`items`"):
        interp.embed_items(interp.mean_colour_l2(), bad, np.arange(N))
    # a NaN item nobody looks at changes nothing when only the compared items are checked
    far = int(np.argsort(np.abs(acts).max(1))[0])
    ok = items.copy()
    ok[far] = np.nan
    bottom_or_top = set(interp.top_bottom_exemplars(acts, 5).top_indices.ravel())
    assert far not in bottom_or_top
    np.testing.assert_array_equal(interp.interpretability_index(acts, ok, sim, check_finite=False).scores,
                                  interp.interpretability_index(acts, items, sim).scores)


def test_nan_or_inf_acts_raise_naming_acts(data):
    items, acts, _ = data
    for value in (np.nan, np.inf, -np.inf):
        bad = acts.copy()
        bad[3, 1] = value
        with pytest.raises(ValueError, match="`acts` contains 1 NaN or infinite"):
            interp.interpretability_index(bad, items, interp.pixel_l2())
        with pytest.raises(ValueError, match="`acts` contains 1 NaN or infinite"):
            interp.psychophysics(bad, items, interp.pixel_l2())
    with pytest.raises(TypeError, match="`acts` must have a floating dtype"):
        interp.psychophysics(acts.astype(np.int32), items, interp.pixel_l2())


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_half_precision_is_computed_in_float32(data, dtype):
    """float16/bfloat16 acts and items give the float32 result of the same (rounded) values."""
    items, acts, _ = data
    sim = interp.pixel_l2()
    a_half, x_half = acts.astype(dtype), items.astype(dtype)
    a32, x32 = a_half.astype(np.float32), x_half.astype(np.float32)
    got = interp.interpretability_index(a_half, x_half, sim)
    assert got.scores.dtype == np.float32
    np.testing.assert_array_equal(got.scores, interp.interpretability_index(a32, x32, sim).scores)
    varying = interp.varying_units(a32)
    np.testing.assert_array_equal(interp.psychophysics(a_half[:, varying], x_half, sim).scores,
                                  interp.psychophysics(a32[:, varying], x32, sim).scores)


def test_embeddings_entry_points_check_values_and_cast_half_precision(data):
    items, acts, _ = data
    sim = interp.pixel_l2()
    emb = interp.embed_items(sim, items, interp.top_bottom_exemplars(acts, 5).top_indices)
    bad = emb.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="`embeddings` contains 1 NaN"):
        interp.index_from_embeddings(bad, sim)
    with pytest.raises(TypeError, match="`embeddings` must have a floating dtype"):
        interp.index_from_embeddings(emb.astype(np.int32), sim)
    half = emb.astype(np.float16)
    np.testing.assert_array_equal(interp.index_from_embeddings(half, sim),
                                  interp.index_from_embeddings(half.astype(np.float32), sim))
    st = interp.two_afc_stimuli(acts, 0.0)
    q, r = interp.embed_items(sim, items, st.queries), interp.embed_items(sim, items, st.references)
    r[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="`reference_embeddings` contains 1 NaN or infinite"):
        interp.two_afc_from_embeddings(q, r, sim)


def test_streamed_nan_responses_raise(data):
    _, acts, _ = data
    bad = acts.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # raised by jaxinterp.stream
        interp.stream_exemplars(lambda x: x, bad, 5, batch_size=256)
    with pytest.raises(ValueError, match=r"NaN or infinite responses: units \[2\]"):
        interp.stream_two_afc_stimuli(lambda x: x, bad, 0.0, batch_size=256)


def test_items_are_checked_whole_with_an_escape():
    """NaN/inf anywhere in `items` is refused (naming the rows), not only in the compared exemplars;
    `check_finite=False` checks only what is compared and then equals the clean result."""
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(900, 3)).astype(np.float32)
    items = rng.normal(size=(900, 4)).astype(np.float32)
    top = set(interp.interpretability_index(acts, items, interp.pixel_l2()).top_indices.ravel())
    row = next(i for i in range(900) if i not in top)
    dirty = items.copy()
    dirty[row, 1] = np.inf
    with pytest.raises(ValueError, match=rf"`items` contains NaN or infinite values \(rows \[{row}\]\)"):
        interp.interpretability_index(acts, dirty, interp.pixel_l2())
    with pytest.raises(ValueError, match="`items` contains NaN"):
        interp.psychophysics(acts, dirty, interp.pixel_l2())
    clean = interp.interpretability_index(acts, items, interp.pixel_l2()).scores
    escaped = interp.interpretability_index(acts, dirty, interp.pixel_l2(), check_finite=False).scores
    np.testing.assert_array_equal(escaped, clean)
    for bad in (None, "abc"):
        with pytest.raises(TypeError, match="`items`"):
            interp.psychophysics(acts, bad, interp.pixel_l2())


def test_pixel_l2_does_not_overflow_at_1e30():
    """Minus the Euclidean distance of items near 1e30 (float32) equals 1e30 times that of the unscaled items
    (float64 reference, rtol 1e-5); the squared distance alone would overflow to inf."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 5, 7))
    got = np.asarray(interp.pixel_l2().compare(jnp.asarray(a * 1e30, jnp.float32), jnp.asarray(b * 1e30, jnp.float32)))
    np.testing.assert_allclose(got, -np.linalg.norm(a - b, axis=-1) * 1e30, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(interp.pixel_l2().compare(jnp.ones(3), jnp.ones(3))), 0.0)


def test_label_agreement_refuses_labels_outside_its_classes():
    labels = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"`items`: 1 item\(s\).*items \[3\]"):
        interp.embed_items(interp.label_agreement(3), labels, np.arange(4))
    np.testing.assert_array_equal(interp.embed_items(interp.label_agreement(4), labels, np.arange(4)), np.eye(4))


def test_query_orders_seed_is_checked():
    for bad in (-1, 2**32, 2.5, None, "3"):
        with pytest.raises(ValueError, match="`seed`"):
            interp.query_orders(seed=bad)


def test_similarities_by_name_equal_the_objects():
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(900, 3)).astype(np.float32)
    images = rng.normal(size=(900, 2, 2, 3)).astype(np.float32)
    for name, sim in (("pixel_l2", interp.pixel_l2()), ("mean_colour_l2", interp.mean_colour_l2())):
        np.testing.assert_array_equal(interp.interpretability_index(acts, images, name).scores,
                                      interp.interpretability_index(acts, images, sim).scores)
        np.testing.assert_array_equal(interp.psychophysics(acts, images, name).scores,
                                      interp.psychophysics(acts, images, sim).scores)
    with pytest.raises(KeyError, match="`similarity`: unknown similarity 'lpips'.*mean_colour_l2"):
        interp.interpretability_index(acts, images, "lpips")
    with pytest.raises(TypeError, match="`similarity` must be a Similarity"):
        interp.psychophysics(acts, images, lambda a, b: a - b)
