"""Incidental-polysemanticity training: ours (optax, scan, vmap) vs the paper's PyTorch loop.

The baseline is a faithful port of the reference training loop (Lecomte et al. 2023): a
``[instances, n, m]`` weight tensor, the instance-batched einsum model
``ReLU(einsum(einsum(x, W), W))`` on the expanded identity batch, ``F.mse_loss(reduction="sum")
+ l1 * torch.norm(W, p=1)``, ``torch.optim.AdamW(lr=1e-3)`` (weight decay 0.01), one Python
step at a time. Ours is ``jaxinterp.toy.fit`` (closed-form gradient, ``lax.scan`` chunks, vmap
over instances). Both are checked to give the same weights before timing.

Rows: time per training step (all instances), ``steps*instances/s`` for both and the ratio;
the fraction of the machine's measured matmul FLOP/s our step reaches (FLOPs counted as the two
``n x n x m`` matmuls of the closed-form step, ``4 n^2 m`` per instance); seeds per second of
the n=64 model as the number of seeds grows; the m-sweep run one size after another vs padded.
Ours runs with one JAX CPU device per core (set below) and shards instances over them.

End-to-end rows (``--end-to-end``, merged into the same results file): the collisions
experiment at n=64, m=64/128/192/256, 16 instances, 7500 steps, as a user runs it, each a whole
subprocess (start-up, imports, compilation, training, counts): ``toy.collisions_sweep`` in a
plain process with a cold and then a warm persistent compilation cache, one size after another
and padded into one program, against the reference PyTorch loop as a whole process.

Run: ``python benchmarks/toy_training.py [--quick] [--end-to-end]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# One JAX CPU device per core, set before jax starts: ``fit`` shards the instances over
# ``jax.devices()`` (jaxinterp.sharding), so both cores work on separate instances. The torch
# baseline uses its own intra-op threads (``torch.get_num_threads()``, recorded in the JSON).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import measured_matmul_flops, row, time_fn, write_results  # noqa: E402

from jaxinterp.toy import IncidentalConfig, fit, make_init, make_loss_and_grad, make_optimizer  # noqa: E402
from jaxinterp.toy.sweep import collisions_sweep  # noqa: E402


class TorchReference:
    """The reference loop: instance-batched tied autoencoder, AdamW, sum MSE + L1."""

    def __init__(self, w0: np.ndarray, lr: float, l1: float):
        import torch

        self.torch = torch
        self.W = torch.nn.Parameter(torch.tensor(w0))                  # [instances, n, m]
        self.opt = torch.optim.AdamW([self.W], lr=lr)                  # weight_decay=0.01 default
        self.l1 = l1
        n = w0.shape[1]
        self.batch = torch.eye(n).expand(w0.shape[0], -1, -1)

    def step(self):
        torch = self.torch
        self.opt.zero_grad()
        hidden = torch.einsum("...ibf,ifh->...ibh", self.batch, self.W)
        out = torch.nn.functional.relu(torch.einsum("...ibh,ifh->...ibf", hidden, self.W))
        loss = torch.nn.functional.mse_loss(out, self.batch, reduction="sum")
        loss = loss + self.l1 * torch.norm(self.W, p=1)
        loss.backward()
        self.opt.step()
        return loss

    def run(self, steps: int):
        for _ in range(steps):
            self.step()
        return self.W.detach()


def _ours(cfg: IncidentalConfig, keys, steps: int, chunk: int, seed_block="auto"):
    return fit(make_init(cfg), make_loss_and_grad(cfg), make_optimizer(cfg), keys, steps=steps,
               chunk_size=min(chunk, steps), seed_block=seed_block).state.params


def check_same_answer(steps: int = 30) -> float:
    """Max |W_ours - W_torch| after ``steps`` steps from the same start (n=32, m=64, 4 instances)."""
    cfg = IncidentalConfig(n_features=32, n_hidden=64)
    keys = jax.random.split(jax.random.key(0), 4)
    from jaxinterp.toy import initial_params

    w0 = np.asarray(initial_params(make_init(cfg), keys))
    ref = TorchReference(w0.copy(), cfg.learning_rate, cfg.l1).run(steps).numpy()
    ours = np.asarray(_ours(cfg, keys, steps, steps))
    return float(np.max(np.abs(ours - ref)))


def compare(n: int, m: int, instances: int, steps_ours: int, steps_torch: int, peak: float, repeats: int) -> dict:
    """One side-by-side row: per-step seconds of both, rates, ratio, our fraction of the matmul peak."""
    cfg = IncidentalConfig(n_features=n, n_hidden=m)
    keys = jax.random.split(jax.random.key(1), instances)
    from jaxinterp.toy import initial_params

    w0 = np.asarray(initial_params(make_init(cfg), keys))
    ours_s = time_fn(lambda: _ours(cfg, keys, steps_ours, 500), repeats=repeats, warmup=1) / steps_ours
    flops = 4.0 * n * n * m * instances
    case = f"train step n={n} m={m} instances={instances}"
    extra = dict(ours_steps_instances_per_s=instances / ours_s, ours_gflops=flops / ours_s / 1e9,
                 peak_fraction=flops / ours_s / peak)
    try:
        ref = TorchReference(w0.copy(), cfg.learning_rate, cfg.l1)
    except ImportError:   # the PyTorch baseline is optional (the `bench` extra)
        return row(case, ours_s, "torch AdamW reference loop (torch not installed)", None,
                   note=f"per step; ours {steps_ours} steps/fit", **extra)
    torch_s = time_fn(lambda: ref.run(steps_torch), repeats=repeats, warmup=1) / steps_torch
    return row(case, ours_s, "torch AdamW reference loop", torch_s,
               note=f"per step; ours {steps_ours} steps/fit, torch {steps_torch} steps",
               baseline_steps_instances_per_s=instances / torch_s, **extra)


def seeds_scaling(seed_counts, n: int, m: int, work: int, peak: float, repeats: int,
                  seed_block="auto") -> list[dict]:
    """Seeds of the n=64 model trained per second (extrapolated to the paper's 7500 steps).

    Each count trains ``max(100, work // seeds)`` steps per timed fit, so every row does similar work.
    """
    cfg = IncidentalConfig(n_features=n, n_hidden=m)
    rows = []
    for s in seed_counts:
        steps = max(100, work // s)
        keys = jax.random.split(jax.random.key(2), s)
        per_step = time_fn(lambda: _ours(cfg, keys, steps, 500, seed_block), repeats=repeats, warmup=1) / steps
        blocks = "seed_block=auto" if seed_block == "auto" else f"seed_block={seed_block}"
        rows.append(row(f"seeds={s} n={n} m={m} {blocks}", per_step, "-", None,
                        note=f"per step, {steps} steps/fit; seeds/s for full 7500-step training",
                        seeds=s, steps_instances_per_s=s / per_step,
                        seeds_per_s_7500_steps=s / (per_step * 7500),
                        peak_fraction=4.0 * n * n * m * s / per_step / peak))
    return rows


def sweep_modes(n: int, hidden, seeds: int, steps: int) -> list[dict]:
    """The m-sweep one size after another vs all sizes padded into one program (compile included)."""
    out = {}
    for pad in (False, True):
        base = IncidentalConfig(n_features=n, n_hidden=hidden[0], steps=steps)
        start = time.perf_counter()
        res = collisions_sweep(jax.random.key(5 + pad), base, hidden, seeds, chunk_size=min(500, steps), pad=pad)
        out[pad] = (time.perf_counter() - start, res)
    seq, padded = out[False][0], out[True][0]
    return [row(f"sweep n={n} m={'/'.join(map(str, hidden))} seeds={seeds} steps={steps}", seq,
                "same sweep padded to max m", padded,
                note="ours = sizes one after another; baseline = padded into one program; compile included")]


_OURS_E2E = """
import sys
import jax
from jaxinterp.toy import IncidentalConfig, collisions_sweep
sizes = [int(m) for m in sys.argv[2].split(",")]
res = collisions_sweep(jax.random.key(0), IncidentalConfig(n_features=int(sys.argv[1]), n_hidden=sizes[0],
                       steps=int(sys.argv[3])), sizes, int(sys.argv[4]), pad=sys.argv[5] == "pad")
print("counts", *res["count_mean"].tolist())
"""

# The reference experiment as its authors run it: one PyTorch training per m, the instance-batched
# tied autoencoder, sum MSE + L1, AdamW (weight decay 0.01), then the polysemantic-neuron count.
_TORCH_E2E = """
import sys
import torch
n, sizes, steps, instances = int(sys.argv[1]), [int(m) for m in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
counts = []
for m in sizes:
    W = torch.nn.Parameter(torch.randn(instances, n, m) / m ** 0.5)
    opt = torch.optim.AdamW([W], lr=1e-3)
    batch = torch.eye(n).expand(instances, -1, -1)
    for _ in range(steps):
        opt.zero_grad()
        hidden = torch.einsum("ibf,ifh->ibh", batch, W)
        out = torch.relu(torch.einsum("ibh,ifh->ibf", hidden, W))
        loss = torch.nn.functional.mse_loss(out, batch, reduction="sum") + 1e-3 * torch.norm(W, p=1)
        loss.backward()
        opt.step()
    a = W.detach().abs()
    counts.append(float((((a >= 0.8) & (a <= 1.2)).sum(1) >= 2).sum(1).float().mean()))
print("counts", *counts)
"""


def _whole_process(script: str, args: list[str], env: dict) -> tuple[float, list[float]]:
    """Wall-clock seconds of ``python -c script args`` (start-up, imports and compilation included)."""
    import subprocess

    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    counts = [float(c) for line in out.stdout.splitlines() if line.startswith("counts") for c in line.split()[1:]]
    return seconds, counts


def end_to_end(n: int, hidden, instances: int, steps: int) -> list[dict]:
    """Seed D's experiment as a user runs it: one whole process each, compilation included.

    Ours is ``toy.collisions_sweep`` in a plain process (default JAX devices), with a cold
    persistent compilation cache (an empty folder) and then warm (the same folder again), one
    size after another and padded into one program; the baseline is the reference PyTorch loop.
    """
    import tempfile

    root = str(Path(__file__).resolve().parents[1])
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", "JAXINTERP_COMPILATION_CACHE")}
    base_env["PYTHONPATH"] = root
    args = [str(n), ",".join(map(str, hidden)), str(steps), str(instances)]
    # one intra-op thread: on a shared, loaded machine torch's OpenMP threads spin and the
    # default (one per core) made the reference loop several times slower than this
    torch_s, torch_counts = _whole_process(_TORCH_E2E, args, {**base_env, "OMP_NUM_THREADS": "1"})
    rows = []
    case = f"end-to-end n={n} m={'/'.join(map(str, hidden))} instances={instances} steps={steps}"
    for mode in ("sequential", "pad"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**base_env, "XDG_CACHE_HOME": cache}
            for temp in ("cold", "warm"):
                seconds, counts = _whole_process(_OURS_E2E, args + [mode], env)
                rows.append(row(f"{case} {mode} {temp} cache", seconds, "torch reference loop, whole process",
                                torch_s, note="whole subprocess: start-up, imports, compilation, training, counts; "
                                "torch with OMP_NUM_THREADS=1",
                                ours_count_mean=counts, baseline_count_mean=torch_counts))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--end-to-end", action="store_true",
                    help="only the whole-process rows, merged into the existing results file")
    ap.add_argument("--end-to-end-steps", type=int, default=7500,
                    help="training steps of the end-to-end rows (the experiment: 7500)")
    args = ap.parse_args(argv)
    import torch

    if args.end_to_end:
        name = "toy_training_quick" if args.quick else "toy_training"
        rows = (end_to_end(16, [16, 32], 4, 200) if args.quick
                else end_to_end(64, [64, 128, 192, 256], 16, args.end_to_end_steps))
        _merge_rows(name, rows, {"end_to_end_load_average": os.getloadavg()[0],
                                 "end_to_end_torch_version": torch.__version__})
        return

    repeats = 1 if args.quick else 3
    peak = measured_matmul_flops(n=512 if args.quick else 1024)
    diff = check_same_answer()
    assert diff < 1e-4, f"ours and the torch reference disagree: max |dW| = {diff}"
    rows = []
    if args.quick:
        rows.append(compare(64, 128, 16, 100, 10, peak, repeats))
        rows += seeds_scaling([1, 16], 64, 128, 1600, peak, repeats)
        rows += sweep_modes(32, [32, 64], 8, 100)
    else:
        rows.append(compare(64, 64, 16, 2000, 100, peak, repeats))
        rows.append(compare(64, 512, 16, 1000, 100, peak, repeats))
        rows.append(compare(256, 1024, 16, 100, 10, peak, repeats))
        rows.append(compare(256, 4096, 16, 30, 3, peak, repeats))
        rows += seeds_scaling([1, 16, 256, 4096], 64, 128, 51200, peak, repeats)
        rows += seeds_scaling([256, 4096], 64, 128, 51200, peak, repeats, seed_block=None)
        rows += sweep_modes(64, [64, 128, 256, 512], 64, 500)
    params = {"quick": args.quick, "matmul_peak_gflops": peak / 1e9, "max_abs_diff_vs_torch_30_steps": diff,
              "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
              "jax_devices": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "flops_convention": "4 n^2 m per instance per step (closed-form step: W W^T and D W)",
              "defaults": "lambda=1e-3, AdamW lr=1e-3, weight decay 0.01"}
    write_results("toy_training_quick" if args.quick else "toy_training", params, rows)


def _merge_rows(name: str, rows: list[dict], params: dict) -> None:
    """Replace the end-to-end rows of ``results/<name>.json`` (keeping the others) and rewrite it."""
    import json

    from _common import RESULTS_DIR

    path = RESULTS_DIR / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {"params": {}, "rows": []}
    kept = [r for r in old["rows"] if not r["case"].startswith("end-to-end")]
    write_results(name, {**old["params"], **params}, kept + rows)


if __name__ == "__main__":
    main()
