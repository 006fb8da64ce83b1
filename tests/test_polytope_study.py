"""The `polytope` study end to end, quick mode, through the CLI; its claims recomputed with scipy."""

import json

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, wilcoxon

from jaxinterp.cli import main
from jaxinterp.studies import polytope_study
from jaxinterp.studies.claims import FAILS, HOLDS, INCONCLUSIVE, smallest_p

CONTRACT = ["density_same_class", "density_diff_class", "peak_offset", "purity_codes", "purity_activations",
            "regions_per_unit_length_vs_width"]


def _verdict(p, ordered, p_min=0.0):
    if not p_min < 0.05:
        return INCONCLUSIVE
    return HOLDS if p < 0.05 and ordered else FAILS


@pytest.mark.slow
def test_polytope_study_quick(tmp_path):
    assert main(["run", "polytope", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    out = json.loads((tmp_path / "polytope.json").read_text())
    m = out["metrics"]
    claims = {c["claim"]: c for c in out["claims"]}
    for key in CONTRACT:
        assert key in m, key
    for arch in ("mlp", "cnn"):
        assert m["density_same_class"][arch] > 0 and m["density_diff_class"][arch] > 0
        assert 0 <= m["peak_offset"][arch] <= 1
        assert 0 < m["purity_codes"][arch] <= 1 and 0 < m["purity_activations"][arch] <= 1
        assert m["truncated_walks"][arch] == 0
        assert m["max_affine_error"][arch] < 1e-9  # the walk saw every kink (max-pool declared for the CNN)
        draws = m["clustering_per_draw"][arch]
        assert len(draws["purity_codes"]) == out["params"]["cluster_repeats"] == 5
        assert m["purity_codes"][arch] == pytest.approx(np.mean(draws["purity_codes"]))
    sweep = m["regions_per_unit_length_vs_width"]
    assert sweep["regions_per_unit_length"][-1] > sweep["regions_per_unit_length"][0]
    for name in out["figures"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert len(out["figures"]) == 5

    # the deeper CNN: one row per layer space, the same pairs in every space
    deep = m["deep_cnn"]["digits"]
    assert list(deep["layers"]) == ["input", "Conv_0", "Conv_1", "Conv_2"]
    assert deep["test_accuracy"] > 0.5
    for space, row in deep["layers"].items():
        assert row["truncated_walks"] == 0 and row["max_affine_error"] < 1e-9, space
        assert len(row["per_path"]["density_same"]) == len(row["per_path"]["density_diff"]) == 8
        later = list(row["layer_density_diff_class"])
        assert np.sum(list(row["layer_density_diff_class"].values())) == pytest.approx(row["density_diff_class"])
        # the space after conv layer L sees the boundaries of the layers after L only
        assert len(later) == {"input": 4, "Conv_0": 3, "Conv_1": 2, "Conv_2": 1}[space]
        where = "input space" if space == "input" else f"{space} activation space"
        [c] = [c for name, c in claims.items() if name.startswith(f"deep CNN, digits, {where}") and "across" in name]
        a, b = row["per_path"]["density_diff"], row["per_path"]["density_same"]
        p = mannwhitneyu(a, b, alternative="greater").pvalue
        assert p == pytest.approx(row["density_diff_greater_p_value"])
        assert c["verdict"] == _verdict(p, np.median(a) > np.median(b), smallest_p(len(a), len(b)))

    for arch in ("mlp", "cnn"):
        paths = m["per_path"][arch]
        density = claims[f"{arch}: boundary density is higher across classes than within"]
        p = mannwhitneyu(paths["density_diff"], paths["density_same"], alternative="greater").pvalue
        diff = np.median(paths["density_diff"]) - np.median(paths["density_same"])
        assert density["ours"] == pytest.approx(diff)
        assert density["verdict"] == _verdict(p, diff > 0, smallest_p(10, 10))
        assert p == pytest.approx(m["density_diff_greater_p_value"][arch])
        draws = m["clustering_per_draw"][arch]
        purity = claims[f"{arch}: K-means on polytope codes gives purer clusters than on activations (all ReLU layers)"]
        d = np.asarray(draws["purity_codes"]) - np.asarray(draws["purity_activations"])
        if np.any(d != 0):
            assert purity["verdict"] == _verdict(wilcoxon(d, alternative="greater").pvalue, d.mean() > 0,
                                                 smallest_p(d.size))
        assert purity["figure"] == "polytope_clustering.png"
    fit = claims["Hanin-Rolnick: regions per unit length linear in neurons (fit R²)"]
    assert fit["ours"] == pytest.approx(sweep["linear_fit_r2"])
    n, r = np.asarray(sweep["n_neurons"], float), np.asarray(sweep["regions_per_unit_length"])
    pred = np.polyval(np.polyfit(n, r, 1), n)
    assert sweep["linear_fit_r2"] == pytest.approx(1 - np.sum((r - pred) ** 2) / np.sum((r - r.mean()) ** 2))
    assert fit["verdict"] == (HOLDS if abs(fit["ours"] - 1) <= 0.05 else FAILS)


def test_cnn_stages_compose_to_the_network():
    import jax

    from jaxinterp import models

    for pool in (False, True):
        model = models.CNN(channels=(4, 8, 8), hidden=8, n_classes=3, pool=pool)
        params = models.init_params(model, (8, 8, 1), key=jax.random.key(0))
        x = np.asarray(jax.random.normal(jax.random.key(1), (5, 8, 8, 1)))
        stages = polytope_study.cnn_stages(model, params)
        assert len(stages) == 4
        h = x
        for stage in stages:
            h = stage(h)
        np.testing.assert_allclose(h, model.apply(params, x), rtol=1e-5, atol=1e-6)


def test_kink_counts_leave_out_pool_orderings():
    import jax

    from jaxinterp import models
    from jaxinterp.polytope import exact_walk

    model = models.CNN(channels=(4, 4), hidden=8, n_classes=3)
    params = models.init_params(model, (16, 1), key=jax.random.key(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (6, 16, 1)))
    walk = exact_walk(lambda v: model.apply(params, v), x[:3], x[3:], maxpool={"Conv_0/relu": 2, "Conv_1/relu": 2},
                      max_crossings=4096)
    kinks = polytope_study.kink_events(walk).sum(-1)
    np.testing.assert_array_equal(kinks, walk.sign_flips + walk.n_argmax_changes)
    # n_boundaries counts window orderings instead of argmax changes; every argmax change is an ordering change
    np.testing.assert_array_equal(kinks - walk.n_argmax_changes + walk.ordering_changes, walk.n_boundaries)
    assert np.all(walk.n_argmax_changes <= walk.ordering_changes) and walk.n_argmax_changes.sum() > 0
    np.testing.assert_array_equal(polytope_study.kink_histogram(walk, 7).sum(-1), kinks)


def test_config_validation():
    with pytest.raises(ValueError, match="`n_clusters` must be below `cluster_points`"):
        polytope_study.Config(n_clusters=20, cluster_points=20)
    with pytest.raises(ValueError, match="`pairs` must be positive"):
        polytope_study.Config(pairs=0)
    with pytest.raises(ValueError, match="`cnn_steps` must be positive"):
        polytope_study.Config(cnn_steps=0)
    with pytest.raises(ValueError, match="`deep_channels`"):
        polytope_study.Config(deep_channels=())
    with pytest.raises(ValueError, match="`deep_pairs`"):
        polytope_study.Config(deep_pairs=1)
