"""The `interpretability` study: its pieces against references, and the quick run end to end through the CLI."""

import json

import jax
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans

from jaxinterp.cli import main
from jaxinterp.studies import interpretability_study as S


def test_shifted_copies_against_a_loop():
    rng = np.random.default_rng(0)
    x = rng.random((3, 5, 6, 2)).astype(np.float32)
    got = S.shifted_copies(x, 1)
    assert got.shape == (27, 5, 6, 2)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for block, (dy, dx) in enumerate(offsets):
        for i in range(3):
            want = np.zeros_like(x[i])
            for r in range(5):
                for c in range(6):
                    if 0 <= r + dy < 5 and 0 <= c + dx < 6:
                        want[r, c] = x[i, r + dy, c + dx]
            np.testing.assert_array_equal(got[block * 3 + i], want)
    np.testing.assert_array_equal(S.shifted_copies(x, 0), x)


def test_digit_splits_keep_copies_on_one_side():
    ds, copies = S.digit_splits(0, 1)
    assert copies == 9 and len(ds.y_test) == 9 * 450 and len(ds.y_train) == 9 * 1347
    base = ds.x_test[: len(ds.y_test) // 9]
    centre = ds.x_test[4 * len(base): 5 * len(base)]  # offset (0, 0) is the fifth block
    np.testing.assert_array_equal(base[:, 1:, 1:], centre[:, :-1, :-1])  # block 0 is shifted by (-1, -1)
    np.testing.assert_array_equal(ds.y_test[: len(base)], ds.y_test[4 * len(base): 5 * len(base)])


def test_authors_kmeans_matches_scikit_learn_minibatch_kmeans():
    """Minibatch K-means on L2-normalised rows, centroids not renormalised (as the authors' compute_kmeans)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 10)) * 4  # six well-separated directions
    x = (centres[rng.integers(0, 6, 4000)] + 0.7 * rng.normal(size=(4000, 10))).astype(np.float32)
    ours = S.authors_kmeans(x, 6, key=jax.random.key(0), steps=300)
    xn = x / np.sqrt((x ** 2).sum(axis=1))[:, None].clip(min=1e-6)  # the authors' normalize()
    theirs = MiniBatchKMeans(n_clusters=6, random_state=42, n_init=3).fit(xn)
    c = np.asarray(ours.components)
    inertia = ((xn[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum()
    assert inertia <= 1.05 * theirs.inertia_  # as good a clustering of the normalised rows (within 5 %)
    norms = np.linalg.norm(c, axis=1)
    assert np.all(norms < 1.0) and np.all(norms > 0.5)  # means of unit vectors, left unnormalised
    np.testing.assert_allclose(ours.encode(x), xn @ c.T, rtol=1e-5, atol=1e-6)  # their projections
    # same partition as scikit-learn's up to the order of the clusters
    ours_labels = np.argmin(((xn[:, None] - c[None]) ** 2).sum(-1), axis=1)
    agree = np.mean([np.bincount(theirs.labels_[ours_labels == j]).max() / max((ours_labels == j).sum(), 1)
                     for j in range(6)])
    assert agree > 0.95


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="`ratios`"):
        S.Config(ratios=(0.5, 2.0))
    with pytest.raises(ValueError, match="`quantiles`"):
        S.Config(quantiles=(0.5,))
    with pytest.raises(ValueError, match="`ii_k`"):
        S.Config(ii_k=1)
    with pytest.raises(TypeError, match="`n_random`"):
        S.Config(n_random=2.5)


@pytest.mark.slow
def test_interpretability_study_quick(tmp_path):
    with pytest.warns(S.CircularSimilarityWarning, match="network being analysed"):
        assert main(["run", "interpretability", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    out = json.loads((tmp_path / "interpretability.json").read_text())
    m = out["metrics"]
    gt = m["ground_truth_auc"]
    assert set(gt) == {"ii", "2afc"} and gt["ii"] > 0.7 and gt["2afc"] > 0.7
    assert m["similarity"]["circular"] is True and "circular" in m["similarity"]["warning"]
    assert m["splits"]["ii"] == "train" and m["splits"]["2afc"] == "test" and m["splits"]["n_test"] > 1600
    names = [S.afc_name(q) for q in S.Config.quick().quantiles]
    for method in S.METHODS + (S.BASELINE,):
        assert -10 < m["methods"][method]["median_ii"] <= 0.0  # minus a distance (self-pairs included)
        for name in names:
            assert 0.0 < m["methods"][method][f"median_{name}"] < 1.0
    layer = m["by_layer"][m["main_layer"]]
    for method in S.METHODS[1:] + (S.BASELINE,):
        assert 0.0 <= layer[S.set_name(method, 1.0)]["auc_ii"] <= 1.0
    assert "all" in m["observer_validation"]
    claims = out["claims"]
    assert len(claims) == 5  # 2 K-means variants x (II, 2AFC) + II predicts 2AFC, one layer
    for row in claims:
        assert row["verdict"] in ("holds", "does not hold", "inconclusive") and "Mann-Whitney" in row["rule"]
        assert (tmp_path / row["figure"]).exists()
    assert sorted(out["figures"]) == sorted(f"interpretability_{s}.png" for s in
                                            ("distributions", "exemplars", "ground_truth_roc", "ii_vs_2afc"))
    for name in out["figures"]:
        assert (tmp_path / name).stat().st_size > 1000


def _synthetic_result(config):
    """A Result with random scores for every layer, method and ratio (no training), for the views."""
    rng = np.random.default_rng(0)
    scores = {}
    for layer in config.layers:
        for method in S.METHODS + (S.BASELINE,):
            for ratio in (config.ratios if method not in ("neurons", S.BASELINE) else (1.0,)):
                n = 12
                shift = 1.0 if method.startswith("kmeans") else 0.0
                scores[(layer, method, ratio)] = S.Scores(
                    -rng.random(n) + shift, rng.integers(0, 50, (n, config.ii_k)),
                    tuple(0.5 + 0.4 * rng.random(n) for _ in config.quantiles),
                    tuple(rng.random((n, 20)) for _ in config.quantiles), np.arange(n), n)
    planted = S.gt.PlantedUnits(rng.random((50, 8)), np.zeros((8, 3), int), np.arange(8) < 4)
    report = S.gt.GroundTruthReport(0.9, 0.8, rng.random(8), rng.random(8), planted)
    return S.Result(config, scores, report, {"all": {"auc": 0.6}}, 0.9, 0.9, False, 50, 40,
                    rng.random((50, 8, 8, 1)).astype(np.float32), {layer: 0 for layer in config.layers}, ())


def test_views_of_a_full_sized_result():
    """metrics / claims / figures of the default settings (two layers, three ratios) without training."""
    config = S.Config()
    result = _synthetic_result(config)
    m = S.metrics(result)
    assert set(m["by_layer"]) == set(config.layers)
    assert S.set_name("kmeans_authors", 2.0) in m["by_layer"][config.layers[-1]]
    med = m["methods"]["kmeans"]["median_ii"]
    assert med == float(np.median(result.scores[(config.layers[-1], "kmeans", 1.0)].ii))
    rows = S.claims(result)
    assert len(rows) == 5 * len(config.layers)
    ii_rows = [r for r in rows if "K-means directions have a higher II" in r.claim]
    assert all(r.verdict == "holds" for r in ii_rows)  # planted: every K-means II above every neuron II
    figs = S.figures(result)
    assert sorted(figs) == ["distributions", "exemplars", "ground_truth_roc", "ii_vs_2afc", "ratios"]
    titles = [ax.get_title() for ax in figs["distributions"].axes]
    assert len(set(titles)) == len(titles) == 3 * len(config.layers)  # distinct panel titles
    assert all(ax.get_ylabel() for ax in figs["distributions"].axes)  # every panel has a y label
    ratio_axes = figs["ratios"].axes
    assert len({ax.get_title() for ax in ratio_axes}) == len(ratio_axes) and all(ax.get_xlabel() for ax in ratio_axes)
