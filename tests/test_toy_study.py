"""Study ``incidental`` (quick run: the metrics contract), the reproduction at n=64, paper scale (slow)."""

import json

import jax
import numpy as np
import pytest

from jaxinterp.studies import incidental_study
from jaxinterp.studies.base import execute
from jaxinterp.studies.claims import HOLDS
from jaxinterp.studies.registry import get_study
from jaxinterp.toy import IncidentalConfig
from jaxinterp.toy.sweep import collisions_sweep

CONTRACT = ("n_features", "m", "count_mean", "count_sem", "theory", "loglog_slope", "n_seeds")


def test_quick_study_writes_contract_metrics_and_figures(tmp_path):
    payload = execute(get_study("incidental"), incidental_study.Config.quick(), tmp_path)
    written = json.loads((tmp_path / "incidental.json").read_text())
    metrics = written["metrics"]
    for name in CONTRACT:
        assert name in metrics, name
    k = len(metrics["m"])
    assert k >= 3 and all(len(metrics[x]) == k for x in ("count_mean", "count_sem", "theory", "counts_per_seed"))
    np.testing.assert_allclose(metrics["theory"], [metrics["n_features"] ** 2 / (4 * m) for m in metrics["m"]])
    counts = np.asarray(metrics["counts_per_seed"])
    assert counts.shape == (k, metrics["n_seeds"])
    np.testing.assert_allclose(metrics["count_mean"], counts.mean(1))
    np.testing.assert_allclose(metrics["count_sem"], counts.std(1, ddof=1) / np.sqrt(counts.shape[1]), rtol=1e-6)
    assert metrics["loglog_slope"] < -0.5       # counts fall with m even at quick size
    assert metrics["noise"]["final"][0][-1] > metrics["noise"]["initial"]
    for f in payload["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert set(payload["figures"]) == {f"incidental_{w}.png" for w in ("collisions", "dynamics", "sparsification",
                                                                        "noise", "superposition")}
    # the counts through training end at the final counts, for every m
    dyn = metrics["dynamics"]
    assert dyn["m"] == metrics["m"] and dyn["steps"][-1] == incidental_study.Config.quick().steps
    np.testing.assert_allclose(dyn["final_count_mean"], metrics["count_mean"])
    np.testing.assert_allclose(np.asarray(dyn["count_quantiles"])[:, 2, -1], np.median(counts, axis=1))
    np.testing.assert_allclose(np.asarray(dyn["count_mean"])[:, -1], metrics["count_mean"])
    assert len(dyn["steps"]) <= 50 and all(dyn["steps"][0] <= s <= dyn["steps"][-1] for s in dyn["settle_step"])
    # one scorecard row per m against n^2/4m, whose verdict follows the stated rule
    rows = [c for c in written["claims"] if c["claim"].startswith("polysemantic neurons")]
    assert len(rows) == k
    for row, mean, sem, theory in zip(rows, metrics["count_mean"], metrics["count_sem"], metrics["theory"]):
        assert row["ours"] == pytest.approx(mean) and row["paper_value"] == theory
        holds = abs(mean - theory) <= 0.25 * theory + 2 * sem
        assert (row["verdict"] == HOLDS) == holds and row["figure"] == "incidental_collisions.png"


def test_dynamics_summary_subsamples_and_finds_the_settling_step():
    steps = np.arange(1, 121) * 10
    median = np.minimum(np.arange(120), 30)[None].repeat(2, 0)          # settles at record 30 (step 310)
    median[1, 100] = 29                                                   # one dip: settles after it
    dyn = {"m": [8, 16], "steps": steps, "quantiles": [0.1, 0.5, 0.9], "count_quantiles": np.stack([median] * 3, 1),
           "count_mean": median, "changes_median": median, "final_counts": np.full((2, 5), 30)}
    summary = incidental_study.dynamics_summary(dyn, max_points=50)
    assert summary["settle_step"] == [310, 1020]
    assert len(summary["steps"]) <= 50 and summary["steps"][-1] == 1200
    np.testing.assert_array_equal(summary["count_mean"][0], median[0][np.searchsorted(steps, summary["steps"])])
    np.testing.assert_array_equal(summary["final_count_mean"], [30, 30])


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="`l1` must be finite"):
        incidental_study.Config(l1=float("nan"))
    with pytest.raises(TypeError, match=r"`hidden\[0\]` must be an integer"):
        incidental_study.Config(hidden=(2.7,))
    with pytest.raises(ValueError, match="`record_every` must be 0 or divide"):
        incidental_study.Config(steps=100, chunk_size=100, record_every=30)
    with pytest.raises(ValueError, match="`seeds` must be positive"):
        incidental_study.Config(seeds=0)
    assert incidental_study.Config.paper_scale().hidden == (256, 512, 1024, 2048, 4096)


def test_paper_scale_claims_are_added_where_the_config_runs_them():
    counts = np.array([[70.0, 72.0, 74.0], [3.0, 4.0, 4.0]])
    res = {"n_features": 256, "m": [256, 4096], "counts": counts, "count_sem": counts.std(1, ddof=1) / np.sqrt(3),
           "theory": [64.0, 4.0], "loglog_slope": -1.0}
    rows = {c.claim: c for c in incidental_study.count_claims(res)}
    assert rows["published count at n=256, m=256"].paper_value == 72.0
    assert rows["published count at n=256, m=256"].verdict == HOLDS
    assert rows["published count at n=256, m=4096"].ours == pytest.approx(11 / 3)


@pytest.mark.slow
def test_reproduction_n64_default_study(tmp_path):
    """The default study: n=64, m=64..512, 128 seeds, 7500 AdamW steps (lr 1e-3, wd 0.01), lambda=1e-3."""
    execute(get_study("incidental"), incidental_study.Config(), tmp_path)
    metrics = json.loads((tmp_path / "incidental.json").read_text())["metrics"]
    assert metrics["n_features"] == 64 and metrics["m"] == [64, 128, 256, 512] and metrics["n_seeds"] == 128
    ratio = np.asarray(metrics["count_mean"]) / np.asarray(metrics["theory"])
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), ratio
    assert -1.3 <= metrics["loglog_slope"] <= -0.7


@pytest.mark.slow
def test_reproduction_n64_other_seeds():
    """Same settings, 64 other seeds (root key 0 instead of the study's derived key)."""
    base = IncidentalConfig(n_features=64, n_hidden=64)
    res = collisions_sweep(jax.random.key(0), base, [64, 128, 256, 512], 64, chunk_size=500)
    ratio = res["count_mean"] / res["theory"]
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), (res["count_mean"], res["theory"])
    assert -1.3 <= res["loglog_slope"] <= -0.7


@pytest.mark.slow
def test_paper_scale_n256():
    """n=256, 16 instances: m=256 about 72 (theory 64), m=4096 about 3.8 (theory 4). ~8 min on 2 CPU cores."""
    base = IncidentalConfig()
    res = collisions_sweep(jax.random.key(0), base, [256, 4096], 16, chunk_size=500)
    assert 64 / 1.5 < res["count_mean"][0] < 64 * 1.5
    assert 4 / 2 < res["count_mean"][1] < 4 * 2
