"""The study contract: typed configs, generated flags, the executor's JSON, atomic writes, the lock."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import _fake_study
from jaxinterp import cli
from jaxinterp.keys import named_key
from jaxinterp.studies import base, registry
from jaxinterp.studies.claims import HOLDS

JSON_KEYS = ["study", "params", "seconds", "metrics", "figures", "claims", "summary"]


@pytest.fixture
def fake(monkeypatch):
    """Register the fake study beside the real ones."""
    monkeypatch.setitem(registry.STUDY_MODULES, "fake", "_fake_study")
    return _fake_study.STUDY


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------- configs


def test_config_coerces_and_checks_types():
    c = _fake_study.Config(n=4, scale=2, xs=[1, 2.5], limit=None)
    assert c.xs == (1.0, 2.5) and isinstance(c.xs, tuple) and isinstance(c.scale, float)
    with pytest.raises(TypeError, match="`n` must be an integer"):
        _fake_study.Config(n=2.0)
    with pytest.raises(TypeError, match="`flag` must be a bool"):
        _fake_study.Config(flag=1)
    with pytest.raises(ValueError, match="`scale` must be finite"):
        _fake_study.Config(scale=float("nan"))
    with pytest.raises(ValueError, match="`mode` must be one of"):
        _fake_study.Config(mode="c")
    with pytest.raises(TypeError, match=r"`xs\[1\]` must be a number"):
        _fake_study.Config(xs=(1.0, "2"))
    with pytest.raises(ValueError, match="`n` must be positive"):
        _fake_study.Config(n=0)
    with pytest.raises(ValueError, match="`seed` must be >= 0"):
        _fake_study.Config(seed=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        _fake_study.Config().n = 3


def test_study_rejects_a_config_that_is_not_a_study_config():
    with pytest.raises(TypeError, match="`config` must be a StudyConfig subclass"):
        base.Study("bad", "bad", config=dict, compute=print, metrics=print, figures=print)


# ---------------------------------------------------------------------------------- flags


def test_flags_follow_the_config_fields_and_override_quick(fake):
    parser = cli.build_parser()
    args = parser.parse_args(["run", "fake", "--quick", "--scale", "3", "--xs", "4", "5", "--no-flag",
                              "--mode", "b", "--label", "hi", "--limit", "7", "--seed", "2"])
    c = cli.config_from_args(fake.config, args, quick=args.quick)
    assert c == _fake_study.Config(n=3, scale=3.0, xs=(4.0, 5.0), flag=False, mode="b", label="hi", limit=7, seed=2)
    args = parser.parse_args(["run", "fake", "--limit", "none"])
    assert cli.config_from_args(fake.config, args, quick=False) == _fake_study.Config()


def test_help_shows_documented_defaults(fake, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "fake", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "number of uniform draws (default 6; quick 3)" in out
    assert "root PRNG seed" in out


def test_bad_flag_value_is_one_line_naming_the_flag(fake, tmp_path, capsys):
    code, _, err = _run(["run", "fake", "--out", str(tmp_path), "--n", "0"], capsys)
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert err.startswith("jaxinterp: error: --n: `n` must be positive")
    assert not (tmp_path / "fake.json").exists()
    with pytest.raises(SystemExit):  # not an integer: argparse names the flag
        cli.main(["run", "fake", "--n", "two"])
    assert "argument --n: invalid int value" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- executor


def test_execute_writes_the_contract(fake, tmp_path):
    config = _fake_study.Config(n=5, seed=3)
    payload = base.execute(fake, config, tmp_path)
    written = json.loads((tmp_path / "fake.json").read_text())
    assert list(written) == JSON_KEYS and written == payload
    assert written["params"] == {"seed": 3, "n": 5, "scale": 1.0, "xs": [1.0, 2.0], "flag": False, "mode": "a",
                                 "label": "x", "limit": None}
    # the root key is named_key(key(seed), study name): recompute the draws independently
    root = named_key(jax.random.key(3), "fake")
    expected = np.asarray(jax.random.uniform(named_key(root, "values"), (5,)))
    np.testing.assert_array_equal(written["metrics"]["values"], expected.tolist())
    assert written["figures"] == ["fake_first.png", "fake_second.png"]
    for f in written["figures"]:
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first, second = written["claims"]
    assert first["figure"] == "fake_first.png" and second["figure"] == "fake_second.png"
    assert first["verdict"] == HOLDS and first["ours"] == pytest.approx(expected.mean())
    assert written["seconds"] > 0 and written["summary"] == {"mean": pytest.approx(expected.mean())}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_claim_naming_an_unknown_figure_is_an_error(fake):
    from jaxinterp.studies import claims as claims_lib

    study = base.Study("fake", "x", config=_fake_study.Config, compute=_fake_study.compute,
                       metrics=_fake_study.metrics, figures=_fake_study.figures,
                       claims=lambda r: [claims_lib.within("c", 0.5, r.values, tolerance=1, figure="nope")])
    with pytest.raises(ValueError, match="names figure 'nope'"):
        base.run(study, _fake_study.Config())


def test_interrupt_between_figure_writes_leaves_previous_result(fake, tmp_path, monkeypatch):
    from jaxinterp import plotting

    base.execute(fake, _fake_study.Config(n=4), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save, calls = plotting.save_figure, []

    def save_then_interrupt(fig, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(fig, path, **kw)

    monkeypatch.setattr(plotting, "save_figure", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        base.execute(fake, _fake_study.Config(n=9, scale=5.0), tmp_path)
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing changed, no temp left


def test_failure_in_compute_leaves_previous_result(fake, tmp_path):
    base.execute(fake, _fake_study.Config(n=4), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    broken = base.Study("fake", "x", config=_fake_study.Config, compute=_fake_study.compute,
                        metrics=lambda r: 1 / 0, figures=_fake_study.figures)
    with pytest.raises(ZeroDivisionError):
        base.execute(broken, _fake_study.Config(n=9), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_sigint_during_the_move_is_held_back_until_the_move_is_done():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with base._sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append(True)
    assert done == [True]


def test_rerun_removes_figures_the_new_result_no_longer_has(fake, tmp_path):
    base.execute(fake, _fake_study.Config(), tmp_path)
    one_figure = base.Study("fake", "x", config=_fake_study.Config, compute=_fake_study.compute,
                            metrics=_fake_study.metrics,
                            figures=lambda r: {"first": _fake_study.figures(r)["first"]})
    base.execute(one_figure, _fake_study.Config(), tmp_path)
    assert not (tmp_path / "fake_second.png").exists() and (tmp_path / "fake_first.png").exists()


# ---------------------------------------------------------------------------------- CLI


def test_cli_run_and_second_run_into_a_locked_folder(fake, tmp_path, capsys):
    code, out, _ = _run(["run", "fake", "--out", str(tmp_path), "--quick", "--seed", "1"], capsys)
    assert code == 0 and "fake.json" in out
    written = json.loads((tmp_path / "fake.json").read_text())
    assert written["params"]["n"] == 3 and written["params"]["seed"] == 1 and written["params"]["flag"] is True
    with cli.locked_out_dir(tmp_path):
        code, _, err = _run(["run", "fake", "--out", str(tmp_path)], capsys)
    assert code == 2 and "another jaxinterp run" in err and len(err.strip().splitlines()) == 1
    assert _run(["run", "fake", "--out", str(tmp_path)], capsys)[0] == 0  # lock released


@pytest.mark.parametrize("make_out", [lambda p: p / "file.txt", lambda p: "/proc/jaxinterp-x"])
def test_bad_out_is_one_line(fake, tmp_path, capsys, make_out):
    (tmp_path / "file.txt").write_text("not a folder")
    code, _, err = _run(["run", "fake", "--out", str(make_out(tmp_path))], capsys)
    assert code == 2 and err.startswith("jaxinterp: error: --out ") and len(err.strip().splitlines()) == 1


def test_reproduce_unknown_only_is_one_line(fake, tmp_path, capsys):
    code, _, err = _run(["reproduce", "--only", "nope", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--only: unknown study 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_reproduce_only_fake_writes_report(fake, tmp_path, capsys):
    code, out, _ = _run(["reproduce", "--only", "fake", "--quick", "--seed", "4", "--out", str(tmp_path)], capsys)
    assert code == 0 and "report:" in out
    assert json.loads((tmp_path / "fake.json").read_text())["params"]["seed"] == 4
    assert (tmp_path / "report.html").exists()


def test_import_jaxinterp_does_not_import_matplotlib():
    code = "import sys, jaxinterp, jaxinterp.studies, jaxinterp.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert out.stdout.strip() == "False"
