"""The `directions` study through the CLI, at a small size: the JSON contract, claims and figures."""

import json

import pytest

from jaxinterp.cli import main
from jaxinterp.studies.directions_study import Config


def test_directions_study_writes_metrics_contract(tmp_path):
    argv = ["run", "directions", "--out", str(tmp_path), "--quick", "--no-progress",
            "--activation-methods", "neurons", "pca", "sae_topk", "--sae-steps", "60"]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "directions.json").read_text())
    metrics = payload["metrics"]
    assert payload["params"]["sae_steps"] == 60
    assert set(metrics["activations"]) == {"neurons", "pca", "sae_topk"}
    for method, m in metrics["activations"].items():
        assert {"explained_variance", "l0", "dead_fraction"} <= set(m), method
    assert set(metrics["ground_truth"]) == set(Config.quick().ground_truth_methods)
    for method, m in metrics["ground_truth"].items():
        assert {"explained_variance", "l0", "dead_fraction", "mean_max_cosine", "mcc"} <= set(m), method
        assert 0.0 <= m["mean_max_cosine"] <= 1.0 + 1e-6 and 0.0 <= m["mcc"] <= 1.0 + 1e-6
    # the neuron basis reconstructs exactly
    assert abs(metrics["activations"]["neurons"]["explained_variance"] - 1.0) < 1e-5
    assert metrics["activations"]["sae_topk"]["l0"] <= metrics["model"]["units"] // 16 + 1e-6
    assert len(metrics["sweep"]["runs"]) == 2
    assert set(metrics["ground_truth_recovered"]) == set(metrics["ground_truth"])
    for fig in payload["figures"]:
        assert (tmp_path / fig).stat().st_size > 1000
    # one recovery claim per sparse method, sparse vs dense, and the L1 trade-off; verdicts are computed
    claims = payload["claims"]
    assert len(claims) == 4
    assert {c["verdict"] for c in claims} <= {"holds", "does not hold", "inconclusive"}
    recovered = {c["claim"].split()[0]: c for c in claims if "recovers" in c["claim"]}
    for name, claim in recovered.items():
        holds = metrics["ground_truth"][name]["mean_max_cosine"] >= Config.quick().recovery_threshold
        assert (claim["verdict"] == "holds") == holds


@pytest.mark.parametrize("change, message", [
    (dict(dataset="mnist"), "`dataset`"),
    (dict(activation_methods=("neurons", "kmeans")), "`activation_methods`"),
    (dict(dim=64, n_features=32), "`dim` must be < `n_features`"),
    (dict(sweep_coefs=()), "`sweep_coefs`"),
    (dict(sae_steps=0), "`sae_steps`"),
])
def test_config_rejects_bad_settings(change, message):
    with pytest.raises(ValueError, match=message):
        Config(**change)
