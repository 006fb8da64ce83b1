"""The ``transformer`` study: config checks, quick run (metrics and claims), full run (slow)."""

import json

import numpy as np
import pytest

from jaxinterp.studies import base, registry
from jaxinterp.studies import transformer_study as ts


@pytest.mark.parametrize("field,value,match", [("p", 1, "p"), ("n_heads", 3, "n_heads"), ("n_ablate", 100, "n_ablate"),
                                               ("train_fraction", 1.0, "train_fraction"),
                                               ("accuracy_threshold", 0.0, "accuracy_threshold"),
                                               ("sae_steps", 0, "sae_steps")])
def test_config_refuses_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        ts.Config(**{field: value})


def test_registered_last():
    assert registry.study_names()[-1] == "transformer"
    assert registry.get_study("transformer") is ts.STUDY


def _check_output(output, config):
    m = output.metrics
    json.dumps(m)
    assert m["test_accuracy"] > config.accuracy_threshold
    for site in ts.SITES:
        assert 0.8 < m["sae_explained_variance"][site] <= 1.0
        assert config.sae_k - 0.1 <= m["sae_l0"][site] <= config.sae_k + 1e-5  # TopK (a kept latent may be 0)
        assert 0.0 <= m["sae_dead_fraction"][site] <= 1.0
        for kind in ts.KINDS:
            effects = np.asarray(m["ablation"][site][kind]["effects"])
            assert effects.shape == (config.n_ablate,) and np.isfinite(effects).all()
            assert m["ablation"][site][kind]["median"] == pytest.approx(np.median(effects))
    # learned directions matter more than random ones
    assert m["ablation"]["mlp"]["learned"]["median"] > m["ablation"]["mlp"]["random"]["median"]
    verdicts = {c["claim"]: c["verdict"] for c in output.claims}
    assert len(verdicts) == 2 * len(ts.SITES) + 1
    assert set(verdicts.values()) <= {"holds", "does not hold", "inconclusive"}
    assert verdicts["the transformer solves modular addition on held-out pairs"] == "holds"
    assert verdicts["ablating learned SAE directions (mlp) raises the loss more than random directions"] == "holds"
    assert set(output.figures) == {"ablation"}


@pytest.mark.slow
def test_quick_run_produces_metrics_and_claims():
    config = ts.Config.quick()
    _check_output(base.run(ts.STUDY, config), config)


@pytest.mark.slow
def test_full_run():
    config = ts.Config()
    _check_output(base.run(ts.STUDY, config), config)
