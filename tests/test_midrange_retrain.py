"""MID curation, L1 last-layer retraining (against scikit-learn), group metrics, method comparison."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from jaxinterp import midrange


def _logits(n=301, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(np.float32), rng.integers(0, k, n)


def _reference_mask(logits, labels, low, high):
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        v = logits[idx, c]
        lo, hi = np.quantile(v, [low, high])
        mask[idx] = (v >= lo) & (v <= hi)
    return mask


@pytest.mark.parametrize("low,high", [(0.25, 0.75), (0.0, 0.25), (0.75, 1.0), (0.1, 0.9)])
@pytest.mark.parametrize("n", [301, 121])  # 121 = 4 * 30 + 1: quantiles land on samples for some classes
def test_midrange_mask_selects_exactly_the_quantile_range(low, high, n):
    logits, labels = _logits(n)
    got = np.asarray(midrange.midrange_mask(logits, labels, low=low, high=high))
    np.testing.assert_array_equal(got, _reference_mask(logits, labels, low, high))
    for c in range(3):  # per class, the kept share is (high - low) up to the boundary samples
        m = labels == c
        assert abs(got[m].sum() - (high - low) * m.sum()) <= 2
    jitted = jax.jit(lambda a, b: midrange.midrange_mask(a, b, low=low, high=high))(jnp.asarray(logits), labels)
    np.testing.assert_array_equal(np.asarray(jitted), got)


def test_midrange_mask_full_range_keeps_all_and_uses_only_target_logit():
    logits, labels = _logits()
    assert bool(np.all(midrange.midrange_mask(logits, labels, low=0.0, high=1.0)))
    other = logits.copy()
    other[np.arange(len(labels)), (labels + 1) % 3] += 100.0  # non-target logits do not matter
    np.testing.assert_array_equal(midrange.midrange_mask(logits, labels), midrange.midrange_mask(other, labels))


def test_midrange_mask_bad_input():
    logits, labels = _logits()
    with pytest.raises(ValueError, match="below"):
        midrange.midrange_mask(logits, labels, low=0.7, high=0.3)
    with pytest.raises(ValueError, match="high"):
        midrange.midrange_mask(logits, labels, low=0.2, high=1.2)
    with pytest.raises(ValueError, match="same length"):
        midrange.midrange_mask(logits, labels[:-1])
    with pytest.raises(ValueError, match="labels"):
        midrange.midrange_mask(logits, labels + 1)
    with pytest.raises(TypeError, match="labels"):
        midrange.midrange_mask(logits, labels + 0.5)
    with pytest.raises(ValueError, match="rank"):
        midrange.midrange_mask(logits[:, 0], labels)


def _classification(n=500, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 3, d).astype(np.float32) + 1.0
    w = np.zeros((d, k))
    w[:4] = rng.normal(size=(4, k)) * 2
    y = np.argmax((x - 1) @ w + rng.gumbel(size=(n, k)), 1)
    return x, y


def _sk_objective(z, y, coef, intercept, C):
    lg = z @ coef + intercept
    lg = lg - lg.max(1, keepdims=True)
    ce = -(lg[np.arange(len(y)), y] - np.log(np.exp(lg).sum(1)))
    return C * ce.sum() + np.abs(coef).sum()


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_last_layer_matches_sklearn_l1_logistic_regression(C):
    x, y = _classification()
    layer = midrange.fit_last_layer(x, y, C=C)
    np.testing.assert_allclose(layer.mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.scale, x.std(0), rtol=1e-4)
    z = (x - x.mean(0)) / x.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = LogisticRegression(C=C, l1_ratio=1.0, solver="saga", max_iter=5000, tol=1e-8).fit(z, y)
    ours = _sk_objective(z, y, np.asarray(layer.weights, np.float64), np.asarray(layer.bias, np.float64), C)
    theirs = _sk_objective(z, y, sk.coef_.T, sk.intercept_, C)
    assert ours <= theirs * (1 + 1e-4)  # at least as good an optimum (float32 solver)
    np.testing.assert_allclose(np.asarray(layer.weights), sk.coef_.T, atol=2e-2)
    pred = np.asarray(midrange.last_layer_logits(layer, x)).argmax(1)
    assert np.mean(pred == sk.predict(z)) >= 0.99
    assert np.sum(np.asarray(layer.weights) == 0) > 0 if C < 0.1 else True  # L1 gives sparsity


def test_last_layer_is_scale_free_and_padding_free():
    x, y = _classification(n=300)
    a = midrange.fit_last_layer(x, y, C=0.5, tol=1e-8)
    # features at 1e30 standardise to the same inputs (no float32 overflow in the variance)
    big = midrange.fit_last_layer(x * 1e30, y, C=0.5, tol=1e-8)
    np.testing.assert_allclose(np.asarray(big.scale) / 1e30, np.asarray(a.scale), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(big.weights), np.asarray(a.weights), atol=1e-4)
    # the zero-weight padding rows (solver compiled for 512 rows here) change nothing: the same
    # objective as an unpadded reference solve on exactly n rows
    z = (x - x.mean(0)) / x.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = LogisticRegression(C=0.5, l1_ratio=1.0, solver="saga", max_iter=5000, tol=1e-8).fit(z, y)
    ours = _sk_objective(z, y, np.asarray(a.weights, np.float64), np.asarray(a.bias, np.float64), 0.5)
    assert ours <= _sk_objective(z, y, sk.coef_.T, sk.intercept_, 0.5) * (1 + 1e-4)


def test_sample_weight_equals_duplicating_rows():
    x, y = _classification(n=200)
    w = np.random.default_rng(1).integers(1, 3, 200)
    a = midrange.fit_last_layer(np.repeat(x, w, 0), np.repeat(y, w), C=0.5, tol=1e-8)
    b = midrange.fit_last_layer(x, y, C=0.5, sample_weight=w.astype(np.float32), tol=1e-8)
    # standardisation differs (weighted vs unweighted moments): compare decision functions
    pa = np.asarray(midrange.last_layer_logits(a, x)).argmax(1)
    pb = np.asarray(midrange.last_layer_logits(b, x)).argmax(1)
    assert np.mean(pa == pb) > 0.95


def test_last_layer_bad_input():
    x, y = _classification(n=50)
    with pytest.raises(ValueError, match="same length"):
        midrange.fit_last_layer(x, y[:-1])
    with pytest.raises(ValueError, match="C"):
        midrange.fit_last_layer(x, y, C=0.0)
    with pytest.raises(ValueError, match="labels"):
        midrange.fit_last_layer(x, y, n_classes=2)
    with pytest.raises(ValueError, match="empty"):
        midrange.fit_last_layer(x[:0], y[:0])
    layer = midrange.fit_last_layer(x, y)
    with pytest.raises(ValueError, match="columns"):
        midrange.last_layer_logits(layer, x[:, :3])


def test_group_metrics_against_a_loop():
    rng = np.random.default_rng(0)
    y, g = rng.integers(0, 3, 400), rng.integers(0, 6, 400)
    g[g == 4] = 5  # group 4 absent
    pred = np.where(rng.uniform(size=400) < 0.3 + 0.1 * g, y, (y + 1) % 3)
    m = midrange.group_metrics(pred, y, g, n_groups=6)
    ref = [np.mean(pred[g == k] == y[g == k]) if np.any(g == k) else np.nan for k in range(6)]
    np.testing.assert_allclose(m.per_group, ref)
    assert np.isnan(m.per_group[4])
    assert m.worst_group == pytest.approx(np.nanmin(ref))
    assert m.mean_accuracy == pytest.approx(np.mean(pred == y))
    assert m.mean_group_accuracy == pytest.approx(np.nanmean(ref))
    with pytest.raises(ValueError, match="n_groups"):
        midrange.group_metrics(pred, y, g, n_groups=3)
    with pytest.raises(ValueError, match="same length"):
        midrange.group_metrics(pred[:-1], y, g)


def test_balanced_group_indices(key):
    g = np.array([0] * 10 + [1] * 4 + [3] * 7)
    idx = midrange.balanced_group_indices(g, key=key)
    np.testing.assert_array_equal(np.bincount(g[idx], minlength=4), [4, 4, 0, 4])
    assert len(set(idx)) == len(idx)


def _spurious_problem(n, aligned, seed, balanced=False):
    """Two-class features: a weak core feature (label) and a strong spurious one (attribute)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    if balanced:
        a = rng.integers(0, 2, n)
    else:
        a = np.where(rng.uniform(size=n) < aligned, y, 1 - y)
    core = (2 * y - 1) + 0.8 * rng.normal(size=n)
    spur = 3 * (2 * a - 1) + 0.3 * rng.normal(size=n)
    feats = np.stack([core, spur, rng.normal(size=n)], 1).astype(np.float32)
    return feats, y, y * 2 + a


def test_compare_methods_structure_and_dfr_uses_balanced_heldout(key):
    ft, yt, gt = _spurious_problem(2000, 0.95, 0)
    fv, yv, gv = _spurious_problem(800, 0.95, 1, balanced=True)
    fs, ys, gs = _spurious_problem(800, 0.95, 2, balanced=True)
    # "ERM" logits: a model that reads only the spurious feature
    erm = lambda f: np.stack([-f[:, 1], f[:, 1]], 1)  # noqa: E731
    train, held, test = (midrange.Split(ft, erm(ft), yt), midrange.Split(fv, erm(fv), yv, gv),
                         midrange.Split(fs, erm(fs), ys, gs))
    res = midrange.compare_methods(train, held, test, key=key, n_groups=4, dfr_retrains=3,
                                   methods=midrange.METHODS)
    assert set(res) == set(midrange.METHODS)
    assert res["erm"].layer is None and res["erm"].metrics.worst_group < 0.05
    cur = midrange.curate(erm(ft), yt, key=jax.random.fold_in(key, 0))
    assert res["mid"].n_fit == len(res["mid"].indices)
    own = np.flatnonzero(np.asarray(midrange.midrange_mask(erm(ft), yt)))
    np.testing.assert_array_equal(res["mid_own_class"].indices, own)
    minority = gt % 2 != yt
    # the cross-class rule enriches the minority; the own-class rule removes it
    assert minority[res["mid"].indices].mean() > 3 * minority.mean()
    assert minority[own].mean() < minority.mean()
    assert cur.candidates.sum() > 0
    assert res["dfr"].n_fit == len(yv)
    np.testing.assert_allclose(res["dfr"].layer.mean, ft.astype(np.float64).mean(0), rtol=1e-12)  # scaler of the training features
    other = midrange.compare_methods(train, held, test, key=key, n_groups=4, dfr_retrains=2, methods=("dfr",),
                                     dfr_scaler_features=fs)
    np.testing.assert_allclose(other["dfr"].layer.mean, fs.astype(np.float64).mean(0), rtol=1e-12)
    # on a balanced held-out set the core feature is the only one that predicts the label
    assert res["dfr"].metrics.worst_group > 0.8
    assert res["dfr"].metrics.worst_group > res["all"].metrics.worst_group
    with pytest.raises(ValueError, match="unknown method"):
        midrange.compare_methods(train, held, test, key=key, methods=("erm", "jtt"))
    with pytest.raises(ValueError, match="groups"):
        midrange.compare_methods(train, held, midrange.Split(fs, erm(fs), ys), key=key)
