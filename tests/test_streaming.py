"""stream(): per-unit statistics over a dataset equal full-data numpy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import apply_in_batches, capture, reduce_spatial, stream


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1003, 5)).astype(np.float32)
    w = rng.normal(size=(5, 7)).astype(np.float32)
    fn = lambda xb: capture(lambda v: jax.nn.relu(v @ w))(xb)[1]
    return x, x @ w, fn


def test_moments_and_topk_equal_full_sort(data):
    x, pre, fn = data
    st = stream(fn, x, batch_size=100, top_k=4)["relu"]  # 11 batches, last one padded
    assert st.count == 1003
    np.testing.assert_allclose(st.mean, pre.mean(0), atol=1e-5)
    np.testing.assert_allclose(st.var, pre.var(0), rtol=1e-4)
    np.testing.assert_array_equal(st.top_indices, np.argsort(-pre, 0, kind="stable")[:4].T)
    np.testing.assert_array_equal(st.bottom_indices, np.argsort(pre, 0, kind="stable")[:4].T)
    np.testing.assert_allclose(st.top_values, -np.sort(-pre, 0)[:4].T, atol=1e-5)
    np.testing.assert_allclose(st.min, pre.min(0), atol=1e-6)
    np.testing.assert_allclose(st.max, pre.max(0), atol=1e-6)


def test_quantiles_within_one_bin(data):
    x, pre, fn = data
    bins = 256
    st = stream(fn, x, batch_size=128, quantiles=(0.05, 0.5, 0.95), bins=bins)["relu"]
    bin_width = (pre.max(0) - pre.min(0)) / bins
    err = np.abs(st.quantiles - np.quantile(pre, [0.05, 0.5, 0.95], axis=0).T)
    assert np.all(err <= bin_width[:, None] + 1e-5)


def test_memmap_dataset_and_single_compilation(tmp_path, data):
    x, pre, fn = data
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    counted = chex.assert_max_traces(fn, n=2)  # eval_shape once, jit once: padding keeps one program
    st = stream(counted, mm, batch_size=64, top_k=2)["relu"]
    np.testing.assert_allclose(st.mean, pre.mean(0), atol=1e-5)
    chex.clear_trace_counter()


def test_reduce_spatial_and_apply_in_batches():
    a = jnp.arange(2 * 3 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 3, 4)
    out = reduce_spatial({"conv": a, "dense": a[:, 0, 0]}, "max")
    np.testing.assert_allclose(out["conv"], a.max((1, 2)))
    assert out["dense"].shape == (2, 4)
    np.testing.assert_allclose(reduce_spatial({"c": a}, "center")["c"], a[:, 1, 1])
    y = apply_in_batches(lambda b: {"sq": b**2}, np.arange(10.0), batch_size=4)
    np.testing.assert_allclose(y["sq"], np.arange(10.0) ** 2)


def test_bad_input(data):
    x, _, fn = data
    with pytest.raises(ValueError, match="top_k"):
        stream(fn, x[:3], top_k=5)
    with pytest.raises(ValueError, match="quantiles"):
        stream(fn, x, quantiles=(1.5,))
    with pytest.raises(ValueError, match="how"):
        reduce_spatial({}, "median")
    with pytest.raises(ValueError, match="leading batch axis"):
        stream(lambda b: {"s": b.sum()}, x)


def _identity(b):
    return {"v": b}


def test_nan_raises_by_default_and_omit_equals_nan_aware_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    x[[3, 150, 299], 1] = np.nan
    x[7, 2] = np.inf
    x[:, 3] = np.nan  # a unit without a single finite value
    with pytest.raises(ValueError, match="non-finite.*'v': 304}.*nan_policy='omit'"):
        stream(_identity, x, batch_size=64)
    st = stream(_identity, x, batch_size=64, top_k=3, quantiles=(0.5,), nan_policy="omit")["v"]
    clean = np.where(np.isfinite(x), x, np.nan).astype(np.float64)[:, :3]
    assert st.count == 300
    np.testing.assert_array_equal(st.n_valid, np.isfinite(x).sum(0))
    np.testing.assert_allclose(st.mean[:3], np.nanmean(clean, 0), atol=1e-5)
    np.testing.assert_allclose(st.var[:3], np.nanvar(clean, 0), rtol=1e-4)
    np.testing.assert_allclose(st.max[:3], np.nanmax(clean, 0))
    np.testing.assert_array_equal(st.top_indices[:3], np.argsort(-np.nan_to_num(clean, nan=-np.inf), 0,
                                                                 kind="stable")[:3].T)
    assert np.isnan(st.mean[3]) and np.isnan(st.quantiles[3]).all() and np.all(np.isfinite(st.quantiles[:3]))


def test_huge_activations_do_not_overflow():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(500, 3)) * 1e30).astype(np.float32)
    st = stream(_identity, x, batch_size=64, quantiles=(0.5,))["v"]
    ref = x.astype(np.float64)
    np.testing.assert_allclose(st.mean, ref.mean(0), rtol=1e-4, atol=1e25)
    np.testing.assert_allclose(st.var, ref.var(0), rtol=1e-4)
    assert np.all(np.isfinite(st.quantiles))
    small = (ref * 1e-60).astype(np.float32)  # ~1e-30: squares would underflow float32
    tiny = stream(_identity, small, batch_size=64)["v"]
    np.testing.assert_allclose(tiny.var, small.astype(np.float64).var(0), rtol=1e-4)


def test_empty_inputs_are_clear_errors(data):
    _, _, fn = data
    with pytest.raises(ValueError, match="0 rows"):
        stream(fn, np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match="0 rows"):
        apply_in_batches(_identity, np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match="`data` is empty"):
        apply_in_batches(_identity, {})
    with pytest.raises(ValueError, match="nan_policy"):
        stream(fn, np.ones((4, 5), np.float32), nan_policy="ignore")
