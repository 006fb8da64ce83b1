"""The command line on the real studies: list, run --quick, the report."""

import json

import pytest

from jaxinterp.cli import main
from jaxinterp.studies.registry import study_names


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in study_names():
        assert name in out


@pytest.mark.slow
def test_run_models_quick_writes_json_figures_and_report(tmp_path):
    assert main(["run", "models", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    payload = json.loads((tmp_path / "models.json").read_text())
    assert list(payload) == ["study", "params", "seconds", "metrics", "figures", "claims", "summary"]
    assert payload["study"] == "models" and payload["params"]["steps"] == 300 and payload["params"]["seed"] == 0
    assert set(payload["metrics"]["accuracy"]) == {"mlp/mnist1d", "cnn/mnist1d", "mlp/digits", "cnn/digits"}
    assert all(0.1 < a <= 1.0 for a in payload["metrics"]["accuracy"].values())
    assert payload["metrics"]["train_steps"] == {k: 300 for k in payload["metrics"]["accuracy"]}
    for layers in payload["metrics"]["layers"].values():
        for s in layers.values():
            assert 0 <= s["dead_fraction"] <= 1 and 0 <= s["sparsity"] <= 1 and s["units"] > 0
    for fig in payload["figures"]:
        assert (tmp_path / fig).stat().st_size > 1000
    assert main(["report", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "models" in html and payload["figures"][0] in html


def test_run_flag_value_rejected_by_the_config(tmp_path, capsys):
    assert main(["run", "models", "--out", str(tmp_path), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "jaxinterp: error: --steps: `steps` must be positive (or None for the default); got 0."
