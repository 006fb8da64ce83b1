"""MID curation by the cross-class rule (finds the minority without group labels), the old
own-class rule (removes it), DFR as the reference does it, and bad inputs."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from jaxinterp import midrange
from jaxinterp.midrange import curation


def _cue_problem(per_class=100, cue_each=10, seed=0):
    """3 classes; each class has ``cue_each`` samples carrying each other class's cue.

    Logits: ``logit_c = 4 [y == c] + 2 [cue == c] + 0.1 noise``: a model that uses the cue. For
    class c, the other classes give 2 * per_class samples of which exactly 2 * cue_each carry
    c's cue and have the highest class-c logits among them.
    """
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    cue = y.copy()
    for c in range(3):
        idx = np.flatnonzero(y == c)
        cue[idx[:cue_each]] = (c + 1) % 3
        cue[idx[cue_each:2 * cue_each]] = (c + 2) % 3
    logits = 4.0 * np.eye(3)[y] + 2.0 * np.eye(3)[cue] + 0.1 * rng.normal(size=(len(y), 3))
    perm = rng.permutation(len(y))
    return logits[perm].astype(np.float32), y[perm], cue[perm]


def _reference_bins(logits, labels, n_bins, reference):
    bins = np.full(logits.shape, -1)
    for c in range(logits.shape[1]):
        pool = logits[labels != c, c] if reference == "others" else logits[:, c]
        edges = np.quantile(pool, np.linspace(0, 1, n_bins + 1))
        for i in range(len(labels)):
            if labels[i] != c:
                bins[i, c] = np.digitize(logits[i, c], edges[1:-1])
    return bins


@pytest.mark.parametrize("reference", ["others", "all"])
@pytest.mark.parametrize("n_bins", [4, 10])
def test_cross_class_bins_match_a_loop(reference, n_bins):
    logits, y, _ = _cue_problem(seed=1)
    bins, edges = curation.cross_class_bins(logits, y, n_bins=n_bins, reference=reference)
    np.testing.assert_array_equal(bins, _reference_bins(logits.astype(np.float64), y, n_bins, reference))
    assert edges.shape == (3, n_bins + 1)


def test_cross_class_rule_finds_exactly_the_cue_carriers(key):
    logits, y, cue = _cue_problem()
    minority = cue != y  # 20 % of the data
    cur = midrange.curate(logits, y, key=key, n_bins=10, select=(9, 10))
    # the top decile of class c's logit over the 200 other-class samples is the 20 carriers of c's cue
    np.testing.assert_array_equal(cur.candidates, minority)
    np.testing.assert_array_equal(cur.cue_class[minority], cue[minority])
    assert np.all(cur.cue_class[~minority] == -1)
    # plus a class-balanced draw of as many non-candidates: 20 per class
    rest = np.setdiff1d(cur.indices, np.flatnonzero(minority))
    np.testing.assert_array_equal(np.bincount(y[rest], minlength=3), [20, 20, 20])
    assert not minority[rest].any()
    assert minority[cur.indices].mean() == pytest.approx(0.5)
    none = midrange.curate(logits, y, key=key, select=(9, 10), rest_ratio=0.0)
    np.testing.assert_array_equal(none.indices, np.flatnonzero(minority))


def test_own_class_rule_removes_the_minority(key):
    logits, y, cue = _cue_problem()
    minority = cue != y
    cur = midrange.curate(logits, y, key=key, rule="own_class", low=0.25, high=0.75)
    # carriers of another cue lack their own cue: their own-class logit is in the lowest 20 %
    assert minority[cur.indices].sum() == 0
    np.testing.assert_array_equal(cur.candidates, np.asarray(midrange.midrange_mask(logits, y)))


def test_balanced_draw_is_balanced_and_from_the_pool(key):
    y = np.array([0] * 50 + [1] * 30 + [2] * 5)
    pool = np.arange(85) % 2 == 0
    idx = curation.balanced_draw(y, pool, 10, key=key, n_classes=3)
    assert pool[idx].all() and len(set(idx)) == len(idx)
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=3), [10, 10, 3])


def _dfr_reference(train_x, x, y, g, key, C_options, n_retrains, n_groups):
    """The reference's two steps, written out with scikit-learn (one-vs-rest liblinear)."""
    from jaxinterp.keys import named_key
    from jaxinterp.midrange.dfr import _balanced

    def fit(z, t, C):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ms = [LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear").fit(z, t == k) for k in range(3)]
        return np.concatenate([m.coef_ for m in ms]), np.concatenate([m.intercept_ for m in ms])

    tk = named_key(key, "tune")
    perm = np.asarray(jax.random.permutation(named_key(tk, "split"), len(y)))
    ev, fi = perm[: len(y) // 2], perm[len(y) // 2:]
    fi = fi[_balanced(g[fi], named_key(tk, "balance"), n_groups)]
    mu, sd = x[fi].mean(0), x[fi].std(0)
    worst = []
    for C in C_options:
        w, b = fit((x[fi] - mu) / sd, y[fi], C)
        pred = (((x[ev] - mu) / sd) @ w.T + b).argmax(1)
        worst.append(min(np.mean(pred[g[ev] == k] == y[ev][g[ev] == k]) for k in range(n_groups)))
    C = C_options[int(np.argmax(worst))]
    mu, sd = train_x.mean(0), train_x.std(0)
    fits = [fit((x[i] - mu) / sd, y[i], C) for i in
            (_balanced(g, named_key(key, "retrain", r), n_groups) for r in range(n_retrains))]
    return C, np.array(worst), np.mean([w for w, _ in fits], 0), np.mean([b for _, b in fits], 0)


def test_dfr_tunes_on_half_and_averages_balanced_fits(key):
    rng = np.random.default_rng(0)
    n, d = 360, 6
    y, a = rng.integers(0, 3, n), rng.integers(0, 3, n)
    g = y * 3 + a
    x = np.concatenate([np.eye(3)[y] + 0.8 * rng.normal(size=(n, 3)), 3 * np.eye(3)[a][:, :2],
                        rng.normal(size=(n, 1))], 1)
    train_x = x + rng.normal(size=x.shape)  # a different scaler than the held-out set's
    C_options = (1.0, 0.1, 0.01)
    dfr = midrange.dfr_fit(train_x, x, y, g, key=key, C_options=C_options, n_retrains=5)
    C, worst, coef, intercept = _dfr_reference(train_x, x, y, g, key, C_options, 5, 9)
    assert dfr.C == C
    np.testing.assert_allclose(dfr.tune_worst_group, worst)
    np.testing.assert_allclose(dfr.mean, train_x.mean(0))
    # liblinear visits coordinates in a random order (the reference sets no random_state) and
    # stops at tol=1e-4: independent fits agree to about 1e-4
    np.testing.assert_allclose(dfr.coef, coef, atol=5e-4)
    np.testing.assert_allclose(dfr.intercept, intercept, atol=5e-4)
    pred = midrange.dfr_predict(dfr, x)
    np.testing.assert_array_equal(pred, midrange.dfr_logits(dfr, x).argmax(1))
    assert np.mean(pred == y) > 0.6  # the label is (noisily) in the first three features


def test_bad_inputs_name_the_argument(key):
    logits, y, cue = _cue_problem()
    for bad in (y + 0.5, np.where(y == 0, np.nan, y)):
        with pytest.raises(TypeError, match="labels"):
            midrange.midrange_mask(logits, bad)
        with pytest.raises(TypeError, match="labels"):
            midrange.curate(logits, bad, key=key)
    with pytest.raises(TypeError, match="predictions"):
        midrange.group_metrics(y + 0.5, y, cue)
    with pytest.raises(TypeError, match="predictions"):
        midrange.group_metrics(np.full(len(y), np.nan), y, cue)
    with pytest.raises(ValueError, match="select"):
        midrange.curate(logits, y, key=key, select=(5, 11))
    with pytest.raises(ValueError, match="reference"):
        midrange.curate(logits, y, key=key, reference="self")
    with pytest.raises(ValueError, match="rule"):
        midrange.curate(logits, y, key=key, rule="lowest")
    with pytest.raises(ValueError, match="rest_ratio"):
        midrange.curate(logits, y, key=key, rest_ratio=float("nan"))
    with pytest.raises(ValueError, match="edges"):
        midrange.range_analysis(logits[:, 0], n_bins=2, edges=[-9.0, np.nan, 9.0], key=key)
    feats = np.asarray(logits)
    nan_logits = np.full_like(logits, np.nan)
    split = midrange.Split(feats, nan_logits, y, cue)
    with pytest.raises(ValueError, match="train.logits"):
        midrange.compare_methods(split, split, split, key=key, methods=("erm", "mid"))
    with pytest.raises(ValueError, match="test.logits"):
        midrange.compare_methods(midrange.Split(feats, logits, y), split, split, key=key, methods=("erm",))
    with pytest.raises(TypeError, match="groups"):
        midrange.dfr_fit(feats, feats, y, cue + 0.5, key=key)
