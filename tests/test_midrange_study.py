"""Study ``midrange``: the metrics contract and scorecard at quick size; config validation; the
linear probe against scikit-learn; the full curve (slow)."""

import json

import numpy as np
import pytest

from jaxinterp.studies import midrange_study
from jaxinterp.studies.base import execute
from jaxinterp.studies.claims import FAILS, HOLDS, INCONCLUSIVE
from jaxinterp.studies.registry import get_study

METHODS = ("erm", "mid", "dfr")


def _check_contract(metrics, n_fractions):
    assert len(metrics["bias_fraction"]) == len(metrics["unbiased_accuracy"]) == n_fractions
    assert all(0.0 <= a <= 1.0 for a in metrics["unbiased_accuracy"])
    for name in ("worst_group_accuracy", "mean_accuracy"):
        assert set(METHODS) <= set(metrics[name])
        assert all(0.0 <= metrics[name][m] <= 1.0 for m in METHODS)
    for m in METHODS:  # worst group never exceeds the mean (balanced test set)
        assert metrics["worst_group_accuracy"][m] <= metrics["mean_accuracy"][m] + 1e-9
        np.testing.assert_allclose(np.mean(metrics["worst_group_accuracy_per_seed"][m]),
                                   metrics["worst_group_accuracy"][m])
    per_seed = np.asarray(metrics["unbiased_accuracy_per_seed"])
    np.testing.assert_allclose(per_seed.mean(0), metrics["unbiased_accuracy"])


def test_quick_study_writes_contract_metrics_claims_and_figures(tmp_path):
    cfg = midrange_study.Config.quick()
    payload = execute(get_study("midrange"), cfg, tmp_path)
    written = json.loads((tmp_path / "midrange.json").read_text())
    metrics = written["metrics"]
    _check_contract(metrics, 3)
    assert metrics["bias_fraction"] == [0.0, 0.5, 1.0]
    # the authors' size schedule: n, 2n, n
    assert metrics["train_size"] == [cfg.n_unbiased, 2 * cfg.n_unbiased, cfg.n_unbiased]
    acc = metrics["unbiased_accuracy"]
    assert acc[-1] < acc[0] - 0.1  # a fully biased training set generalises worse
    assert acc[-1] < 0.45  # about chance (1/3) when position explains every training label
    ml = metrics["midrange_logit"]
    assert sum(ml["bin_counts"]) == cfg.n_test and len(ml["bin_edges"]) == cfg.n_bins + 1
    share = metrics["minority_share"]
    assert share["pool"] == pytest.approx(1 - cfg.aligned_fraction, abs=0.01)
    # the cross-class rule enriches the minority; the own-class rule depletes it
    assert share["mid"] > 1.5 * share["pool"] and share["mid_own_class"] < share["pool"]
    for f in payload["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert set(payload["figures"]) == {f"midrange_{w}.png" for w in (
        "accuracy_vs_f", "logit_histogram", "bin_frequencies", "exemplars", "penultimate_units", "worst_group")}
    # scorecard: one row per published curve point, and MID vs ERM; verdicts follow the rules
    curve = [c for c in written["claims"] if c["claim"].startswith("unbiased test accuracy")]
    assert len(curve) == 3
    for c, a, p in zip(curve, acc, (0.827, 0.879, 0.34)):
        assert c["paper_value"] == pytest.approx(p) and c["ours"] == pytest.approx(a)
        assert c["verdict"] == (HOLDS if abs(a - p) <= midrange_study.CURVE_TOLERANCE else FAILS)
    mid = [c for c in written["claims"] if "MID" in c["claim"]]
    assert len(mid) == 1 and mid[0]["verdict"] in (HOLDS, FAILS, INCONCLUSIVE)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="fractions"):
        midrange_study.Config(fractions=(0.0, 1.5))
    with pytest.raises(ValueError, match="select_first"):
        midrange_study.Config(select_first=10)
    with pytest.raises(ValueError, match="seeds"):
        midrange_study.Config(seeds=0)
    with pytest.raises(ValueError, match="size_schedule"):
        midrange_study.Config(size_schedule="paper")
    with pytest.raises(ValueError, match="group_model"):
        midrange_study.Config(group_model="vgg")
    with pytest.raises(ValueError, match="size"):
        midrange_study.Config(size=12)  # the LeNet's valid convolutions need 16 pixels
    midrange_study.Config(size=12, model="small", group_model="small")
    with pytest.raises(ValueError, match="max_rotation"):
        midrange_study.Config(max_rotation=4.0)


def test_defaults_follow_the_published_protocol():
    """Adam 1e-3 at batch 1000 for 80 epochs, the 84-unit LeNet features, an 8-epoch probe, and the
    authors' 5640-image unbiased part; five seeds over the eleven published fractions."""
    cfg = midrange_study.Config()
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs, cfg.probe_epochs) == (1e-3, 1000, 80, 8)
    assert (cfg.model, cfg.feat_size, cfg.n_unbiased, cfg.size_schedule) == ("lenet", 84, 5640, "authors")
    assert cfg.fractions == midrange_study.PUBLISHED_F and cfg.seeds == 5


def test_linear_probe_matches_a_logistic_regression(key):
    """Trained long enough, the probe reaches a converged logistic regression's test accuracy."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    x = (np.eye(3)[y] @ rng.normal(size=(3, 10)) + rng.normal(size=(3000, 10))) * 5 + 3
    tr, te = slice(0, 1000), slice(1000, None)
    cfg = midrange_study.Config(probe_epochs=40, batch_size=50)
    ours = midrange_study.linear_probe_accuracy(cfg, x[tr], y[tr], x[te], y[te], key)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    theirs = LogisticRegression().fit((x[tr] - mu) / sd, y[tr]).score((x[te] - mu) / sd, y[te])
    assert abs(ours - theirs) <= 0.015  # 2000 test points: one standard error is about 0.007


@pytest.mark.slow
def test_default_study_curve_falls_to_chance(tmp_path):
    metrics = execute(get_study("midrange"), midrange_study.Config(), tmp_path)["metrics"]
    _check_contract(metrics, 11)
    acc = np.asarray(metrics["unbiased_accuracy"])
    assert acc[-1] < 0.45 and acc[:6].max() > 0.8
