"""Study ``midrange``: the metrics contract and scorecard at a tiny size (quick size: slow); config
validation; the linear probe against scikit-learn; the full curve (slow)."""

import dataclasses
import json

import jax
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


FIGURES = ("accuracy_vs_f", "logit_histogram", "bin_frequencies", "exemplars", "penultimate_units", "worst_group")


def _check_written(tmp_path, payload, cfg):
    """The JSON contract, the figures and the scorecard of a run written to ``tmp_path``."""
    written = json.loads((tmp_path / "midrange.json").read_text())
    metrics = written["metrics"]
    n_f = len(cfg.fractions)
    _check_contract(metrics, n_f)
    assert metrics["bias_fraction"] == list(cfg.fractions)
    assert np.shape(metrics["unbiased_accuracy_per_seed"]) == (cfg.seeds, n_f)
    assert len(metrics["unbiased_accuracy_end_to_end"]) == len(metrics["train_size"]) == n_f
    assert metrics["probe_encoder_mode"] == [midrange_study._probe_mode(cfg, f) for f in cfg.fractions]
    for m in METHODS:
        assert np.shape(metrics["worst_group_accuracy_per_seed"][m]) == (cfg.group_seeds,)
        assert np.shape(metrics["per_group_accuracy"][m]) == (9,)
    ml = metrics["midrange_logit"]
    assert sum(ml["bin_counts"]) == cfg.n_test and len(ml["bin_edges"]) == cfg.n_bins + 1
    assert set(metrics["minority_share"]) == {"pool", "mid", "mid_own_class", "mid_candidates"}
    for f in payload["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert set(payload["figures"]) == {f"midrange_{w}.png" for w in FIGURES}
    # scorecard: one row per published curve point, and MID vs ERM; verdicts follow the rules
    curve = [c for c in written["claims"] if c["claim"].startswith("unbiased test accuracy")]
    assert len(curve) == n_f
    acc = metrics["unbiased_accuracy"]
    for c, a, f in zip(curve, acc, cfg.fractions):
        p = midrange_study.PUBLISHED_ACC[midrange_study.PUBLISHED_F.index(f)] / 100
        assert c["paper_value"] == pytest.approx(p) and c["ours"] == pytest.approx(a)
        assert c["verdict"] == (HOLDS if abs(a - p) <= midrange_study.CURVE_TOLERANCE else FAILS)
    mid = [c for c in written["claims"] if "MID" in c["claim"]]
    assert len(mid) == 1
    if cfg.group_seeds == 1:  # one paired sample cannot reach p < 0.05
        assert mid[0]["verdict"] == INCONCLUSIVE
    else:
        assert mid[0]["verdict"] in (HOLDS, FAILS, INCONCLUSIVE)
    return metrics


def test_tiny_study_writes_contract_metrics_claims_and_figures(tmp_path):
    """The whole pipeline at a size that only guarantees the contract (no accuracy-quality checks).

    The group benchmark's network trains with the curve's settings (200 images, 4 epochs at batch
    64), so both share one compiled training program."""
    cfg = dataclasses.replace(midrange_study.Config.quick(), fractions=(0.0, 1.0), analysis_fraction=0.0,
                              n_unbiased=200, n_test=300, epochs=4, probe_epochs=20, group_seeds=1,
                              group_epochs=4, n_train=200, n_pool=300, n_val=90, n_group_test=90, dfr_retrains=2)
    payload = execute(get_study("midrange"), cfg, tmp_path)
    metrics = _check_written(tmp_path, payload, cfg)
    assert metrics["train_size"] == [cfg.n_unbiased, cfg.n_unbiased]  # the authors' schedule: n / max(f, 1 - f)


@pytest.mark.slow
def test_quick_study_writes_contract_metrics_claims_and_figures(tmp_path):
    cfg = midrange_study.Config.quick()
    payload = execute(get_study("midrange"), cfg, tmp_path)
    metrics = _check_written(tmp_path, payload, cfg)
    # the authors' size schedule: n, 2n, n
    assert metrics["train_size"] == [cfg.n_unbiased, 2 * cfg.n_unbiased, cfg.n_unbiased]
    acc = metrics["unbiased_accuracy"]
    assert acc[-1] < acc[0] - 0.1  # a fully biased training set generalises worse
    assert acc[-1] < 0.45  # about chance (1/3) when position explains every training label
    share = metrics["minority_share"]
    assert share["pool"] == pytest.approx(1 - cfg.aligned_fraction, abs=0.01)
    # the cross-class rule enriches the minority; the own-class rule depletes it
    assert share["mid"] > 1.5 * share["pool"] and share["mid_own_class"] < share["pool"]


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
    with pytest.raises(ValueError, match="max_rotation"):  # dSprites' grid rotates over the full circle
        midrange_study.Config(max_rotation=0.5)
    midrange_study.Config(max_rotation=0.5, latents="continuous", group_max_rotation=0.5)
    with pytest.raises(ValueError, match="group_max_rotation"):
        midrange_study.Config(group_latents="dsprites", group_max_rotation=0.5)
    with pytest.raises(ValueError, match="group_size"):
        midrange_study.Config(group_size=12, group_model="lenet")
    with pytest.raises(ValueError, match="group_latents"):
        midrange_study.Config(group_latents="mnist")
    with pytest.raises(ValueError, match="lr_period_epochs"):
        midrange_study.Config(lr_period_epochs=0)
    with pytest.raises(TypeError, match="probe_standardize"):
        midrange_study.Config(probe_standardize="yes")


def test_defaults_follow_the_published_protocol():
    """Adam 1e-3 at batch 1000 for 80 epochs of a 100-epoch cosine, the 84-unit LeNet features
    with BatchNorms, an 8-epoch probe on them as they are, and the authors' 5640-image unbiased
    part; five seeds over the eleven published fractions."""
    cfg = midrange_study.Config()
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs, cfg.probe_epochs) == (1e-3, 1000, 80, 8)
    assert (cfg.model, cfg.feat_size, cfg.n_unbiased, cfg.size_schedule) == ("lenet", 84, 5640, "authors")
    assert cfg.batch_norm and cfg.lr_period_epochs == 100 and cfg.probe_standardize is None
    assert cfg.fractions == midrange_study.PUBLISHED_F and cfg.seeds == 5


@pytest.mark.parametrize("standardize", [True, False])
def test_linear_probe_matches_a_logistic_regression(key, standardize):
    """Trained long enough, the probe reaches a converged logistic regression's test accuracy, on
    raw features it standardises, or on features already standardised (as an encoder's final
    BatchNorm leaves them)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    x = (np.eye(3)[y] @ rng.normal(size=(3, 10)) + rng.normal(size=(3000, 10))) * 5 + 3
    tr, te = slice(0, 1000), slice(1000, None)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    z = (x - mu) / sd
    cfg = midrange_study.Config(probe_epochs=40, batch_size=50, probe_standardize=standardize)
    feats = x if standardize else z
    ours = midrange_study.linear_probe_accuracy(cfg, feats[tr], y[tr], feats[te], y[te], key)
    theirs = LogisticRegression().fit(z[tr], y[tr]).score(z[te], y[te])
    assert abs(ours - theirs) <= 0.015  # 2000 test points: one standard error is about 0.007


def test_probe_standardizes_only_features_without_a_final_batch_norm():
    standardizes = midrange_study._probe_standardizes
    assert not standardizes(midrange_study.Config())  # the authors' LeNet ends in a BatchNorm
    assert standardizes(midrange_study.Config(batch_norm=False))
    assert standardizes(midrange_study.Config(model="small"))
    assert not standardizes(midrange_study.Config(model="small", probe_standardize=False))


@pytest.mark.slow
def test_default_study_curve_falls_to_chance(tmp_path):
    metrics = execute(get_study("midrange"), midrange_study.Config(), tmp_path)["metrics"]
    _check_contract(metrics, 11)
    acc = np.asarray(metrics["unbiased_accuracy"])
    assert acc[-1] < 0.45 and acc[:6].max() > 0.8


def test_curve_uses_dsprites_images_and_the_group_benchmark_its_recorded_ones():
    """The curve and the logit analysis draw dSprites' grid at 64 pixels (binary), as the authors'
    data; the group benchmark keeps the 20-pixel continuous images its numbers were measured on;
    the quick run uses the small images for both."""
    cfg = midrange_study.Config()
    assert midrange_study._images(cfg) == dict(size=64, max_rotation=None, latents="dsprites")
    assert midrange_study._images(cfg, group=True) == dict(size=20, max_rotation=None, latents="continuous")
    quick = midrange_study.Config.quick()
    assert midrange_study._images(quick) == midrange_study._images(quick, group=True)


def test_probe_encoder_mode_follows_the_authors_notebook_by_default():
    """Their notebook probes the f=0 and f=1 encoders in the process that trained them
    (evaluation mode) and reloads every other one from its checkpoint (training mode)."""
    mode = midrange_study._probe_mode
    cfg = midrange_study.Config()
    assert cfg.probe_encoder_mode == "authors"
    assert [mode(cfg, f) for f in (0.0, 0.1, 0.5, 0.9, 1.0)] == ["eval", "train", "train", "train", "eval"]
    assert {mode(midrange_study.Config(probe_encoder_mode="eval"), f) for f in (0.0, 0.5)} == {"eval"}
    assert {mode(midrange_study.Config(probe_encoder_mode="train"), f) for f in (0.0, 1.0)} == {"train"}
    assert mode(midrange_study.Config(model="small"), 0.5) == "eval"  # no training mode to run in
    with pytest.raises(ValueError, match="probe_encoder_mode"):
        midrange_study.Config(probe_encoder_mode="frozen").validate()
    with pytest.raises(ValueError, match="model='lenet'"):
        midrange_study.Config(probe_encoder_mode="train", model="small").validate()
    with pytest.raises(ValueError, match="probe_standardize"):
        midrange_study.Config(probe_encoder_mode="train", probe_standardize=True).validate()


def test_curve_probe_runs_the_encoder_in_the_resolved_mode(key):
    from jaxinterp.datasets.shapes import make_shapes
    from jaxinterp.midrange.probe import probe_accuracy

    cfg = midrange_study.Config(size=20, latents="continuous", epochs=2, batch_size=100, probe_epochs=2)
    data, test = (make_shapes(n, bias_fraction=0.0, seed=s, size=20) for n, s in ((200, 1), (100, 2)))
    params = midrange_study._fit(cfg, data, key)
    test_feats = midrange_study._outputs(cfg, params, test.x)[1]
    k = jax.random.key(5)
    settings = dict(key=k, epochs=2, batch_size=100, dropout=cfg.dropout, period_epochs=cfg.lr_period_epochs)
    model = midrange_study._model(cfg)
    assert midrange_study._probe(cfg, 0.5, params, data, test, test_feats, k) == probe_accuracy(
        model, params, data.x, data.y, test.x, test.y, encoder_mode="train", **settings)
    assert midrange_study._probe(cfg, 0.0, params, data, test, test_feats, k) == probe_accuracy(
        model, params, data.x, data.y, test.x, test.y, encoder_mode="eval", **settings)
