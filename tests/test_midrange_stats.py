"""Activation-range bins, exemplars and per-bin attribute statistics against numpy/scipy/sklearn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency
from sklearn.metrics import mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from jaxinterp import midrange
from jaxinterp.midrange import binning

RTOL = 1e-5  # float32 arithmetic against float64 references


def _values(n=500, seed=0):
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


@pytest.mark.parametrize("n_bins", [1, 4, 10])
def test_quantile_and_uniform_edges_match_numpy(n_bins):
    v = _values()
    np.testing.assert_allclose(midrange.bin_edges(v, n_bins), np.quantile(v.astype(np.float64), np.linspace(0, 1, n_bins + 1)),
                               rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(midrange.bin_edges(v, n_bins, method="uniform"),
                               np.linspace(v.min(), v.max(), n_bins + 1), rtol=RTOL, atol=1e-6)


def test_assign_bins_matches_digitize_and_quantile_bins_are_equal():
    v = _values(1000)
    edges = np.asarray(midrange.bin_edges(v, 10))
    bins = np.asarray(midrange.assign_bins(v, edges))
    np.testing.assert_array_equal(bins, np.digitize(v, edges[1:-1]))
    counts = np.asarray(binning.bin_counts(bins, 10))
    assert counts.sum() == 1000 and counts.max() - counts.min() <= 2
    # the jitted path gives the same bins
    jitted = jax.jit(lambda x: midrange.assign_bins(x, midrange.bin_edges(x, 10)))(jnp.asarray(v))
    np.testing.assert_array_equal(np.asarray(jitted), bins)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, width=32), min_size=4, max_size=60), st.integers(1, 4))
def test_assign_bins_property(values, n_bins):
    v = np.asarray(values, np.float32)
    if v.min() == v.max():
        return
    edges = np.asarray(midrange.bin_edges(v, n_bins, method="uniform"))
    bins = np.asarray(midrange.assign_bins(v, edges))
    np.testing.assert_array_equal(bins, np.digitize(v, edges[1:-1]))
    assert bins.min() >= 0 and bins.max() < n_bins
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(bins[order]) >= 0)  # bins are monotone in the value


def test_exemplars_come_from_their_bin(key):
    bins = np.array([0] * 20 + [1] * 3 + [2] * 30)
    ex = np.asarray(midrange.bin_exemplars(bins, 4, 5, key=key))
    assert ex.shape == (4, 5)
    for b in range(3):
        got = ex[b][ex[b] >= 0]
        assert len(got) == min(5, int((bins == b).sum())) and len(set(got)) == len(got)
        assert np.all(bins[got] == b)
    assert np.all(ex[1, 3:] == -1) and np.all(ex[3] == -1)  # short bin padded, empty bin all -1
    np.testing.assert_array_equal(ex, midrange.bin_exemplars(bins, 4, 5, key=key))
    assert not np.array_equal(ex, midrange.bin_exemplars(bins, 4, 5, key=jax.random.key(1)))


def _random_table_data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, 5, n)
    attr = (bins + rng.integers(0, 3, n)) % 4  # associated with the bin
    return bins, attr


def test_contingency_and_mutual_information_match_sklearn():
    bins, attr = _random_table_data()
    table = midrange.contingency_table(bins, attr, 5, 4)
    np.testing.assert_array_equal(np.asarray(table), contingency_matrix(bins, attr))
    np.testing.assert_allclose(midrange.mutual_information(table), mutual_info_score(bins, attr), rtol=RTOL)
    np.testing.assert_allclose(jax.jit(midrange.mutual_information)(table), mutual_info_score(bins, attr), rtol=RTOL)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 6, 1000), rng.integers(0, 2, 1000)  # independent: small MI
    np.testing.assert_allclose(midrange.mutual_information(midrange.contingency_table(a, b, 6, 2)),
                               mutual_info_score(a, b), rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("correction", [True, False])
def test_chi_square_matches_scipy(correction):
    bins, attr = _random_table_data(1)
    table = np.asarray(midrange.contingency_table(bins, attr, 5, 4))
    ref = chi2_contingency(table, correction=correction)
    got = midrange.chi_square(table, correction=correction)
    np.testing.assert_allclose(got.statistic, ref.statistic, rtol=1e-4)
    np.testing.assert_allclose(got.p_value, ref.pvalue, rtol=1e-3, atol=1e-30)
    assert int(got.dof) == ref.dof
    # 2 x 2 table: Yates' correction applies when asked
    t2 = np.array([[12.0, 5.0], [7.0, 16.0]])
    ref2, got2 = chi2_contingency(t2, correction=correction), midrange.chi_square(t2, correction=correction)
    np.testing.assert_allclose(got2.statistic, ref2.statistic, rtol=1e-5)
    np.testing.assert_allclose(got2.p_value, ref2.pvalue, rtol=1e-4)


def test_chi_square_of_large_counts_is_finite_and_matches_scipy():
    # (observed - expected)^2 of counts near 1e25 overflows float32; proportions do not
    t = np.array([[12.0, 5.0, 3.0], [7.0, 16.0, 9.0]]) * 1e25
    ref = chi2_contingency(t, correction=False)
    got = midrange.chi_square(t.astype(np.float32), correction=False)
    np.testing.assert_allclose(got.statistic, ref.statistic, rtol=1e-4)
    assert float(got.p_value) == pytest.approx(ref.pvalue, abs=1e-30)


def test_chi_square_ignores_empty_rows_and_columns():
    t = np.array([[10.0, 0.0, 4.0], [0.0, 0.0, 0.0], [3.0, 0.0, 9.0], [5.0, 0.0, 5.0]])
    ref = chi2_contingency(t[[0, 2, 3]][:, [0, 2]])
    got = jax.jit(lambda x: midrange.chi_square(x))(jnp.asarray(t))
    np.testing.assert_allclose(got.statistic, ref.statistic, rtol=1e-5)
    np.testing.assert_allclose(got.p_value, ref.pvalue, rtol=1e-4)
    assert int(got.dof) == ref.dof == 2
    one_row = midrange.chi_square(np.array([[3.0, 4.0]]))  # dof 0, as scipy: statistic 0, p 1
    assert float(one_row.statistic) == 0.0 and float(one_row.p_value) == 1.0


def test_attribute_stats_with_string_attribute():
    bins = np.array([0, 0, 1, 1, 1, 2])
    attr = np.array(["a", "b", "a", "a", "c", "c"])
    s = midrange.attribute_stats(bins, attr, 3)
    assert list(s.values) == ["a", "b", "c"]
    np.testing.assert_allclose(s.frequencies, [[0.5, 0.5, 0], [2 / 3, 0, 1 / 3], [0, 0, 1]], rtol=RTOL)
    np.testing.assert_allclose(s.mutual_information, mutual_info_score(bins, attr), rtol=RTOL)


def test_range_analysis_bins_exemplars_and_attributes(key):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 600)
    v = (label + 0.5 * rng.normal(size=600)).astype(np.float32)
    ra = midrange.range_analysis(v, {"label": label, "noise": rng.integers(0, 3, 600)}, n_bins=6,
                                 n_exemplars=4, key=key)
    np.testing.assert_allclose(ra.edges, np.quantile(v.astype(np.float64), np.linspace(0, 1, 7)), rtol=RTOL, atol=1e-6)
    assert ra.counts.sum() == 600 and ra.exemplars.shape == (6, 4)
    assert np.all(ra.bins[ra.exemplars] == np.arange(6)[:, None])
    freq = np.asarray(ra.attributes["label"].frequencies)[:, 1]
    assert freq[-1] > 0.9 and freq[0] < 0.1  # the label follows the value
    assert ra.attributes["label"].mutual_information > 10 * ra.attributes["noise"].mutual_information


def test_unit_scores_match_a_loop_over_units():
    rng = np.random.default_rng(0)
    n, d = 300, 5
    attr = rng.integers(0, 3, n)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    feats[:, 1] += 2 * attr
    feats[:, 2] = np.maximum(feats[:, 2], 0)  # ReLU-like with ties at zero
    feats[:, 4] = 0.0  # dead unit
    got = midrange.unit_attribute_scores(feats, attr, n_bins=4)
    for j in range(d - 1):
        v = feats[:, j]
        bins = np.digitize(v, np.asarray(midrange.bin_edges(v, 4))[1:-1])
        np.testing.assert_allclose(got.mutual_information[j], mutual_info_score(bins, attr), rtol=1e-4, atol=1e-6)
        table = contingency_matrix(bins, attr)
        ref = chi2_contingency(table, correction=False)
        np.testing.assert_allclose(got.chi2[j], ref.statistic, rtol=1e-4)
    assert bool(got.constant[4]) and float(got.mutual_information[4]) == 0 and float(got.p_value[4]) == 1
    assert int(np.argmax(got.mutual_information)) == 1


def test_direction_values():
    f = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    d = np.array([3.0, 0.0, 4.0], np.float32)
    np.testing.assert_allclose(midrange.direction_values(f, d), f @ (d / 5), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(midrange.direction_values(f, d, normalize=False), f @ d, rtol=RTOL, atol=1e-5)


def test_bad_input(key):
    v = _values(20)
    with pytest.raises(ValueError, match="fewer than n_bins"):
        midrange.bin_edges(v[:3], 5)
    with pytest.raises(ValueError, match="constant"):
        midrange.bin_edges(np.ones(10, np.float32), 2)
    with pytest.raises(ValueError, match="constant"):
        midrange.range_analysis(np.ones(10, np.float32), n_bins=2, key=key)
    with pytest.raises(ValueError, match="same length"):
        midrange.range_analysis(v, {"label": np.zeros(19)}, n_bins=2, key=key)
    with pytest.raises(ValueError, match="same length"):
        midrange.unit_attribute_scores(v[:, None], np.zeros(5), n_bins=2)
    with pytest.raises(ValueError, match="fewer than n_bins"):
        midrange.unit_attribute_scores(v[:3, None], np.zeros(3), n_bins=4)
    with pytest.raises(ValueError, match="rank"):
        midrange.bin_edges(v[:, None], 2)
    with pytest.raises(ValueError, match="method"):
        midrange.bin_edges(v, 2, method="log")
    with pytest.raises(ValueError, match="NaN"):
        midrange.bin_edges(np.array([1.0, np.nan, 2.0]), 2)
    with pytest.raises(ValueError, match="edges"):
        midrange.range_analysis(v, n_bins=3, edges=np.arange(3.0), key=key)
    with pytest.raises(ValueError, match="zero vector"):
        midrange.direction_values(np.ones((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        midrange.chi_square(np.array([[1.0, -1.0], [2.0, 3.0]]))


def test_range_analysis_accepts_streamed_quantile_edges(key):
    from jaxinterp import stream

    v = _values(2000)
    levels = np.linspace(0, 1, 6)
    st = stream(lambda b: {"v": b}, v[:, None], batch_size=256, quantiles=levels, bins=2048)
    edges = np.asarray(st["v"].quantiles).reshape(-1)
    ra = midrange.range_analysis(v, n_bins=5, edges=edges, key=key)
    assert ra.method == "given"
    exact = np.quantile(v, levels)
    width = (v.max() - v.min()) / 2048
    np.testing.assert_allclose(edges, exact, atol=2 * width)  # the sketch is within a bin width or two
    assert np.abs(ra.counts - 400).max() <= 10
