"""Every benchmark at accelerator sizes in one run, with each row's fraction of the matmul peak.

One script for the first run on a GPU or TPU: it measures the device's float32 matmul peak
(FLOP/s), then runs the benchmark set at sizes that fill an accelerator, in well under 8 minutes
on one H100-class GPU, and writes ``<out>/<benchmark>_<device kind>.json`` (the format of
``_common.write_results`` plus ``device_kind``; every row with a FLOP count carries
``peak_fraction``, its matmul FLOP/s over the peak measured in the same run):

- ``toy_training``: the incidental model's training step against the PyTorch reference loop
  (``toy_training.compare``), seeds per second as the number of seeds grows
  (``toy_training.seeds_scaling``), training 4096 seeds for 7500 steps with the per-seed
  dynamics record streamed to disk against the same training unrecorded, and seed D's paper-scale sweep (n=256, m=256..4096,
  16 instances, 7500 steps) as a user runs it, compilation included, with its counts;
- ``directions``: SAE training at d=2048, m=32768, batch 4096 (ReLU+L1 and TopK), full-batch
  K-means and FastICA on 100k x 512 activations;
- ``capture``: the captured forward pass against the plain one (``capture._forward_rows``;
  these rows are overhead ratios and carry no FLOP count).

The rows come from the benchmark scripts' own functions wherever those fit an accelerator (the
CPU baselines there use few steps); the rows whose CPU baseline would take minutes at these sizes
are timed here without one. ``--quick`` runs the same code at tiny sizes with XLA's optimisations
off (a smoke run on CPU, tested in ``tests/test_device_benchmark.py``).

Run: ``python benchmarks/device.py [--quick] [--out DIR] [--sections toy,directions,capture]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import capture as capture_bench  # noqa: E402
import directions as directions_bench  # noqa: E402
import toy_training  # noqa: E402  (sets one JAX CPU device per core before jax starts)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import (device_kind, measured_matmul_flops, row, sae_step_flops, time_fn,  # noqa: E402
                     toy_step_flops, write_results)

from jaxinterp import directions as jd  # noqa: E402
from jaxinterp.datasets import make_superposition_data  # noqa: E402
from jaxinterp.toy import IncidentalConfig, collisions_sweep  # noqa: E402

SECTIONS = ("toy", "directions", "capture")
# Published polysemantic-neuron counts of seed D's n=256 sweep (Lecomte et al. 2023)
PAPER_COUNTS_N256 = {256: 72.0, 4096: 3.8}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of one run (``ACCELERATOR`` or ``QUICK``).

    Attributes:
      peak_n: side of the square matmul whose FLOP/s is the peak.
      repeats: timed repeats per measurement (medians).
      toy_compare: ``(n, m, instances, steps ours, steps torch)`` rows of ``toy_training.compare``.
      seed_model, seed_counts, seed_work: ``toy_training.seeds_scaling`` of the ``(n, m)`` model
        (steps = work / seeds).
      dynamics: ``(n, m, seeds, steps, record_every)`` of the streamed dynamics record.
      sweep: ``(n, hidden sizes, seeds, steps)`` of seed D's sweep.
      sae: ``(samples, d, m, batch, steps, k)`` of the SAE rows.
      full_batch: ``(samples, d, kmeans k, ica k)`` of the K-means and FastICA rows.
      capture_batch: batch of the capture rows.
    """

    peak_n: int
    repeats: int
    toy_compare: tuple
    seed_model: tuple
    seed_counts: tuple
    seed_work: int
    dynamics: tuple
    sweep: tuple
    sae: tuple
    full_batch: tuple
    capture_batch: int


ACCELERATOR = Sizes(peak_n=8192, repeats=3,
                    toy_compare=((64, 512, 16, 2000, 100), (256, 4096, 16, 500, 3)),
                    seed_model=(64, 128), seed_counts=(256, 4096, 65536), seed_work=6_553_600,
                    dynamics=(64, 128, 4096, 7500, 10),
                    sweep=(256, (256, 512, 1024, 2048, 4096), 16, 7500),
                    sae=(32_768, 2048, 32_768, 4096, 50, 64), full_batch=(100_000, 512, 256, 64),
                    capture_batch=16_384)
QUICK = Sizes(peak_n=512, repeats=1, toy_compare=((16, 32, 4, 20, 5),), seed_model=(16, 32), seed_counts=(8,), seed_work=800,
              dynamics=(16, 32, 8, 100, 10),
              sweep=(16, (32,), 4, 100), sae=(2000, 32, 128, 64, 10, 8), full_batch=(2000, 32, 8, 4),
              capture_batch=64)


def seed_d_sweep(n: int, hidden, seeds: int, steps: int, peak: float) -> dict:
    """Seed D's collisions sweep as a user calls it (``toy.collisions_sweep``, default settings),
    compilation included, with its mean counts beside the published ones."""
    start = time.perf_counter()
    res = collisions_sweep(jax.random.key(0), IncidentalConfig(n_features=n, n_hidden=hidden[0], steps=steps),
                           list(hidden), seeds)
    seconds = time.perf_counter() - start
    flops = sum(toy_step_flops(n, m, seeds) for m in hidden) * steps
    paper = PAPER_COUNTS_N256 if n == 256 else {}
    return row(f"seed D sweep n={n} m={'/'.join(map(str, hidden))} instances={seeds} steps={steps}", seconds,
               "-", None, note="toy.collisions_sweep with its defaults, compilation included",
               peak_fraction=flops / seconds / peak, count_mean=[float(c) for c in res["count_mean"]],
               paper_count={str(m): c for m, c in paper.items()}, per_size_seconds=[float(s) for s in res["seconds"]])


def dynamics_row(n: int, m: int, seeds: int, steps: int, record_every: int, peak: float, repeats: int) -> dict:
    """Training with the per-seed dynamics record streamed to disk against the same training unrecorded."""
    import tempfile

    from jaxinterp.toy import dynamics, fit, make_init, make_loss_and_grad, make_optimizer

    cfg = IncidentalConfig(n_features=n, n_hidden=m)
    keys = jax.random.split(jax.random.key(3), seeds)
    args = (make_init(cfg), make_loss_and_grad(cfg), make_optimizer(cfg), keys)
    chunk = min(500, steps)
    with tempfile.TemporaryDirectory() as tmp:
        recorded = time_fn(lambda: fit(*args, steps=steps, chunk_size=chunk, record=dynamics.incidental_record(),
                                       record_every=record_every, record_path=tmp).state.params,
                           repeats=repeats, warmup=1)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    plain = time_fn(lambda: fit(*args, steps=steps, chunk_size=chunk).state.params, repeats=repeats, warmup=1)
    return row(f"dynamics record n={n} m={m} seeds={seeds} steps={steps} every={record_every}", recorded,
               "same training, unrecorded", plain, note="loss, polysemantic count and assignment changes per seed, "
               "streamed to .npy after each chunk", record_bytes=size,
               peak_fraction=toy_step_flops(n, m, seeds) * steps / recorded / peak)


def toy_rows(s: Sizes, peak: float) -> list[dict]:
    """The training step vs the PyTorch loop, seeds scaling, the dynamics record, and seed D's sweep."""
    rows = [toy_training.compare(n, m, inst, so, st, peak, s.repeats) for n, m, inst, so, st in s.toy_compare]
    rows += toy_training.seeds_scaling(list(s.seed_counts), *s.seed_model, s.seed_work, peak, s.repeats)
    rows.append(dynamics_row(*s.dynamics, peak, s.repeats))
    rows.append(seed_d_sweep(*s.sweep, peak))
    return rows


def _data(seed: int, n: int, d: int, prob: float) -> np.ndarray:
    """``[n, d]`` sparse features (twice as many as dimensions) in superposition, no all-zero row."""
    x, _, _ = make_superposition_data(seed, 2 * n, 2 * d, d, prob)
    return np.ascontiguousarray(x[np.linalg.norm(x, axis=1) > 0][:n])


def sae_rows(x: np.ndarray, m: int, batch: int, steps: int, k: int, peak: float, repeats: int) -> list[dict]:
    """SAE training throughput (ReLU+L1 and TopK), compilation timed apart."""
    d = x.shape[1]
    rows = []
    for kind, extra in (("relu", {"aux_k": 0}), ("topk", {"k": k})):
        learner = jd.sae(m, kind=kind, steps=steps, batch_size=batch, **extra)
        steady, comp, _ = directions_bench._ours(
            lambda learner=learner: jd.fit(learner, x, key=directions_bench.KEY, chunk_size=steps).components,
            repeats)
        rows.append(row(f"sae {kind} train d={d} m={m} b={batch}", steady, "-", None,
                        note=f"{steps} steps; {steps * batch / steady:,.0f} vectors/s", compile_s=comp,
                        vectors_per_s=steps * batch / steady,
                        peak_fraction=sae_step_flops(batch, d, m) * steps / steady / peak))
    return rows


def full_batch_rows(x: np.ndarray, k_means: int, k_ica: int, peak: float, repeats: int) -> list[dict]:
    """Full-batch K-means and FastICA; FLOPs counted as their matmuls (see the rows' notes)."""
    n, d = x.shape
    key = directions_bench.KEY
    steady, comp, res = directions_bench._ours(lambda: jd.fit(jd.kmeans(k_means, n_init=1), x, key=key), repeats)
    it = int(res.info["n_iter"])
    rows = [row(f"kmeans {n}x{d} k={k_means}", steady, "-", None, compile_s=comp,
                note=f"{it} Lloyd iterations; FLOPs 2 n k d per iteration (distances)",
                peak_fraction=2.0 * n * k_means * d * it / steady / peak)]
    steady, comp, res = directions_bench._ours(lambda: jd.fit(jd.ica(k_ica), x, key=key), repeats)
    it = int(res.info["n_iter"])
    flops = 2.0 * n * d * d + 2.0 * n * d * k_ica + 4.0 * n * k_ica * k_ica * it
    rows.append(row(f"fastica {n}x{d} k={k_ica}", steady, "-", None, compile_s=comp,
                    note=f"{it} iterations; FLOPs 2nd^2 (covariance) + 2ndk (whitening) + 4nk^2 per iteration",
                    peak_fraction=flops / steady / peak))
    return rows


def directions_rows(s: Sizes, peak: float) -> list[dict]:
    """SAE training at accelerator size, then full-batch K-means and FastICA."""
    n, d, m, batch, steps, k = s.sae
    rows = sae_rows(_data(0, n, d, 0.01), m, batch, steps, k, peak, s.repeats)
    n, d, k_means, k_ica = s.full_batch
    return rows + full_batch_rows(_data(1, n, d, 0.02), k_means, k_ica, peak, s.repeats)


def capture_rows(s: Sizes, peak: float) -> list[dict]:
    """The captured forward pass against the plain one (overhead ratios; no FLOP count)."""
    del peak
    return capture_bench._forward_rows(s.capture_batch, 2 if s is QUICK else 20)


RUNNERS = {"toy": ("toy_training", toy_rows), "directions": ("directions", directions_rows),
           "capture": ("capture", capture_rows)}


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (CPU, seconds)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = ap.parse_args(argv)
    sections = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    sizes = QUICK if args.quick else ACCELERATOR
    if args.quick:
        # a smoke run: its tiny programs take far longer to compile than to run, so XLA compiles them
        # with most optimisations off (the timings of a quick run mean nothing either way)
        jax.config.update("jax_disable_most_optimizations", True)
    # the best of three: on a shared machine a single measurement can land in another job's burst
    peak = max(measured_matmul_flops(sizes.peak_n) for _ in range(3))
    print(f"device {device_kind()}: float32 matmul peak {peak / 1e12:.3g} TFLOP/s (n={sizes.peak_n})")
    paths, total = [], time.perf_counter()
    for section in sections:
        name, run = RUNNERS[section]
        start = time.perf_counter()
        rows = run(sizes, peak)
        params = {"quick": args.quick, "sizes": dataclasses.asdict(sizes), "matmul_peak_flops": peak,
                  "matmul_peak_n": sizes.peak_n, "section_seconds": time.perf_counter() - start,
                  "jax_devices": jax.device_count(), "peak_fraction": "row FLOP/s / float32 matmul peak"}
        paths.append(write_results(name + ("_quick" if args.quick else ""), params, rows, out_dir=args.out,
                                   per_device=True))
    print(f"all sections: {time.perf_counter() - total:.1f} s")
    return paths


if __name__ == "__main__":
    main()
