"""``benchmarks/device.py --quick`` runs unchanged on CPU and writes one JSON per benchmark."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"case", "ours_s", "baseline", "baseline_s", "speedup", "note"}


def test_device_benchmark_quick_writes_per_device_results(tmp_path):
    # run as on a machine without the optional PyTorch baseline (the test extra does not install it):
    # a package named torch that fails to import shadows any installed one
    blocker = tmp_path / "no_torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    (tmp_path / "out").mkdir()
    tmp_out = tmp_path / "out"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device.py"), "--quick", "--out", str(tmp_out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    files = sorted(p.name for p in tmp_out.glob("*.json"))
    assert files == ["capture_quick_cpu.json", "directions_quick_cpu.json", "toy_training_quick_cpu.json"], files
    for name in files:
        payload = json.loads((tmp_out / name).read_text())
        assert payload["device_kind"] == "cpu" and payload["device"].startswith("cpu")
        assert payload["benchmark"] == name.removesuffix("_cpu.json")
        peak = payload["params"]["matmul_peak_flops"]
        assert math.isfinite(peak) and peak > 1e8, peak      # any CPU does more than 0.1 GFLOP/s
        assert payload["rows"], name
        for r in payload["rows"]:
            assert ROW_KEYS <= set(r), r
            assert math.isfinite(r["ours_s"]) and r["ours_s"] > 0, r
            if r["baseline_s"] is not None:
                assert math.isfinite(r["speedup"]) and r["speedup"] > 0
                assert math.isclose(r["speedup"], r["baseline_s"] / r["ours_s"], rel_tol=1e-12)
            if not name.startswith("capture"):          # every toy and directions row counts its FLOPs
                assert 0 < r["peak_fraction"] <= 1.5, r
    toy = json.loads((tmp_out / "toy_training_quick_cpu.json").read_text())
    sweep = [r for r in toy["rows"] if r["case"].startswith("seed D sweep")]
    assert len(sweep) == 1 and len(sweep[0]["count_mean"]) == len(toy["params"]["sizes"]["sweep"][1])
    assert all(0 <= c <= toy["params"]["sizes"]["sweep"][1][0] for c in sweep[0]["count_mean"])
    compare = [r for r in toy["rows"] if r["case"].startswith("train step")]
    assert compare and all(r["baseline_s"] is None and "not installed" in r["baseline"] for r in compare)
    directions = json.loads((tmp_out / "directions_quick_cpu.json").read_text())
    assert {r["case"].split()[0] for r in directions["rows"]} == {"sae", "kmeans", "fastica"}
