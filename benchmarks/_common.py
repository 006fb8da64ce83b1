"""Shared benchmark machinery: timing after warm-up, matmul peak, and the JSON format.

Every benchmark script times ours and a baseline side by side in one process run and writes
``benchmarks/results/<name>.json``::

    {"benchmark", "device", "jax_version", "params",
     "rows": [{"case", "ours_s", "baseline", "baseline_s", "speedup", "note", ...}]}

with ``speedup = baseline_s / ours_s`` (above 1: we are faster). Runs on an accelerator
(``benchmarks/device.py``) add ``device_kind`` and are written as ``<name>_<device kind>.json``.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def block(x: Any) -> Any:
    """Wait for every array in the pytree ``x`` (jax or torch) to be computed."""
    for leaf in jax.tree_util.tree_leaves(x):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return x


def time_fn(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    ``fn`` must return its outputs so they can be blocked on (compilation happens in warm-up).
    """
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_seconds(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each ``fn()`` over ``repeats`` rounds, the functions called in turn in every round.

    On a shared machine the load drifts over seconds; timing the functions one round at a time
    gives each the same conditions (``time_fn`` times one function's repeats back to back).
    """
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            block(fn())
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def compile_seconds(jitted: Callable, *args) -> float:
    """Seconds to lower and compile ``jitted`` (a ``jax.jit`` function) for ``args``."""
    start = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - start


def device_description() -> str:
    """A short description of the default JAX device and the host."""
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return f"{dev.platform}:{kind} x{jax.device_count()} ({platform.processor() or platform.machine()})"


def device_kind() -> str:
    """The default JAX device's kind as a file-name slug, e.g. ``cpu``, ``nvidia_h100_80gb_hbm3``, ``tpu_v5_lite``."""
    dev = jax.devices()[0]
    kind = str(getattr(dev, "device_kind", "") or dev.platform)
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or dev.platform


def toy_step_flops(n_features: int, n_hidden: int, instances: int) -> float:
    """Matmul FLOPs of one closed-form incidental-model step: ``W W^T`` and ``D W``, ``4 n^2 m`` per instance."""
    return 4.0 * n_features * n_features * n_hidden * instances


def sae_step_flops(batch: int, d: int, m: int) -> float:
    """Matmul FLOPs of one SAE training step: encoder forward and weight gradient (``2 x 2bdm``),
    decoder forward, weight and input gradients (``3 x 2bdm``): ``10 b d m``."""
    return 10.0 * batch * d * m


def measured_matmul_flops(n: int = 1024, dtype=jnp.float32, repeats: int = 5) -> float:
    """The machine's measured matmul peak (FLOP/s) for an ``n x n`` jitted float32 matmul."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(jnp.matmul)
    seconds = time_fn(lambda: f(a, b), repeats=repeats, warmup=2)
    return 2.0 * n**3 / seconds


def row(case: str, ours_s: float, baseline: str, baseline_s: float | None, note: str = "", **extra) -> dict:
    """One result row; ``speedup`` is ``baseline_s / ours_s`` (None without a baseline)."""
    speedup = (baseline_s / ours_s) if (baseline_s is not None and ours_s > 0) else None
    return {"case": case, "ours_s": ours_s, "baseline": baseline, "baseline_s": baseline_s,
            "speedup": speedup, "note": note, **extra}


def write_results(name: str, params: dict, rows: list[dict], *, out_dir: str | Path | None = None,
                  per_device: bool = False) -> Path:
    """Print a table of ``rows`` and write ``{out_dir}/{name}.json``; return the path.

    Args:
      name: the benchmark's name.
      params: the run's settings (sizes, measured peak, versions).
      rows: from ``row``.
      out_dir: folder to write to (default ``benchmarks/results``).
      per_device: add ``device_kind`` to the JSON and write ``{name}_{device_kind}.json``, so runs
        on different accelerators sit side by side.
    """
    out = RESULTS_DIR if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "device": device_description(), "jax_version": jax.__version__,
               "params": params, "rows": rows}
    if per_device:
        payload["device_kind"] = device_kind()
        name = f"{name}_{device_kind()}"
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"{'case':44s} {'ours_s':>10s} {'baseline':>22s} {'baseline_s':>10s} {'speedup':>8s}")
    for r in rows:
        bs = "-" if r["baseline_s"] is None else f"{r['baseline_s']:.4g}"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}"
        print(f"{r['case'][:44]:44s} {r['ours_s']:10.4g} {str(r['baseline'])[:22]:>22s} {bs:>10s} {sp:>8s}"
              + (f"  {r['note']}" if r.get("note") else ""))
    print(f"-> {path}")
    return path
