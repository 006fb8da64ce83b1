"""The `polytope` study end to end, quick mode, through the CLI; its claims recomputed with scipy."""

import json

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, wilcoxon

from jaxinterp.cli import main
from jaxinterp.studies import polytope_study
from jaxinterp.studies.claims import FAILS, HOLDS

CONTRACT = ["density_same_class", "density_diff_class", "peak_offset", "purity_codes", "purity_activations",
            "regions_per_unit_length_vs_width"]


def _verdict(p, ordered):
    return HOLDS if p < 0.05 and ordered else FAILS


def test_polytope_study_quick(tmp_path):
    assert main(["run", "polytope", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    out = json.loads((tmp_path / "polytope.json").read_text())
    m = out["metrics"]
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
    assert len(out["figures"]) == 4

    claims = {c["claim"]: c for c in out["claims"]}
    for arch in ("mlp", "cnn"):
        paths = m["per_path"][arch]
        density = claims[f"{arch}: boundary density is higher across classes than within"]
        p = mannwhitneyu(paths["density_diff"], paths["density_same"], alternative="greater").pvalue
        diff = np.median(paths["density_diff"]) - np.median(paths["density_same"])
        assert density["ours"] == pytest.approx(diff) and density["verdict"] == _verdict(p, diff > 0)
        assert p == pytest.approx(m["density_diff_greater_p_value"][arch])
        draws = m["clustering_per_draw"][arch]
        purity = claims[f"{arch}: K-means on polytope codes gives purer clusters than on activations (all ReLU layers)"]
        d = np.asarray(draws["purity_codes"]) - np.asarray(draws["purity_activations"])
        if np.any(d != 0):
            assert purity["verdict"] == _verdict(wilcoxon(d, alternative="greater").pvalue, d.mean() > 0)
        assert purity["figure"] == "polytope_clustering.png"
    fit = claims["Hanin-Rolnick: regions per unit length linear in neurons (fit R²)"]
    assert fit["ours"] == pytest.approx(sweep["linear_fit_r2"])
    n, r = np.asarray(sweep["n_neurons"], float), np.asarray(sweep["regions_per_unit_length"])
    pred = np.polyval(np.polyfit(n, r, 1), n)
    assert sweep["linear_fit_r2"] == pytest.approx(1 - np.sum((r - pred) ** 2) / np.sum((r - r.mean()) ** 2))
    assert fit["verdict"] == (HOLDS if abs(fit["ours"] - 1) <= 0.05 else FAILS)


def test_config_validation():
    with pytest.raises(ValueError, match="`n_clusters` must be below `cluster_points`"):
        polytope_study.Config(n_clusters=20, cluster_points=20)
    with pytest.raises(ValueError, match="`pairs` must be positive"):
        polytope_study.Config(pairs=0)
    with pytest.raises(ValueError, match="`cnn_steps` must be positive"):
        polytope_study.Config(cnn_steps=0)
