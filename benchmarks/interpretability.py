"""Benchmark: scoring every unit of a layer (II and 2AFC) against the direct loop reference.

Rows (the same random layer of ``units`` units over ``n`` inputs of 8x8 images, pixel L2):
- ``ii/...``: ``interpretability_index`` (top-k, embedding, vectorised pairwise similarities)
  against ``reference.loop_index`` (argsort and a Python loop over units and pairs).
- ``2afc_paper/...``: ``psychophysics`` (the authors' construction, q = 0 and 0.25) against
  ``reference.loop_two_afc_paper`` (a loop following Klindt et al.'s code).
- ``2afc_stream/...``: ``stream_two_afc_stimuli`` + ``two_afc_of_stimuli`` from a response
  function in batches of 1024 (bounded memory; the unshuffled "ranked" construction), against
  ``reference.loop_two_afc``.
Scores are checked against the loop before timing. Compilation is timed separately (first call)
and excluded from ``ours_s`` (median after warm-up).

Run: ``python benchmarks/interpretability.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import numpy as np

from _common import row, time_fn, write_results
from jaxinterp import interpretability as interp
from jaxinterp.interpretability import reference as ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--units", type=int, default=None)
    parser.add_argument("--inputs", type=int, default=None)
    args = parser.parse_args()
    units = args.units or (32 if args.quick else 256)
    n = args.inputs or (2000 if args.quick else 10_000)  # the paper's 2AFC: > 800 inputs in [q, 1 - q]
    repeats = 2 if args.quick else 3

    rng = np.random.default_rng(0)
    items = rng.random((n, 8, 8, 1), dtype=np.float32)
    w = rng.normal(size=(64, units)).astype(np.float32)
    acts = np.maximum(items.reshape(n, -1) @ w / 8.0 + rng.normal(size=(n, units)).astype(np.float32), 0) + \
        0.01 * rng.normal(size=(n, units)).astype(np.float32)
    sim = interp.pixel_l2()
    rows = []

    def timed_loop(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    # II
    start = time.perf_counter()
    ours = interp.interpretability_index(acts, items, sim).scores
    first = time.perf_counter() - start
    want, t_loop = timed_loop(lambda: ref.loop_index(acts, items, ref.pixel_l2_sim, 5, include_self_pairs=True))
    err = float(np.max(np.abs(ours - want)))
    t_ours = time_fn(lambda: interp.interpretability_index(acts, items, sim).scores, repeats=repeats)
    rows.append(row(f"ii/k5/{units}units_{n}inputs", t_ours, "python loop (numpy)", t_loop,
                    note=f"max abs diff {err:.1e}", first_call_s=first))

    # 2AFC, in memory, the authors' construction at both quantiles
    quantiles = interp.PAPER_QUANTILES

    def both():
        return np.stack([interp.psychophysics(acts, items, sim, q=q).scores for q in quantiles], axis=1)

    start = time.perf_counter()
    ours = both()
    first = time.perf_counter() - start
    want, t_loop = timed_loop(lambda: ref.loop_two_afc_paper(acts, items, ref.pixel_l2_sim, quantiles).mean(-1))
    err = float(np.max(np.abs(ours - want)))
    t_ours = time_fn(both, repeats=repeats)
    rows.append(row(f"2afc_paper/q0+q0.25/{units}units_{n}inputs", t_ours, "python loop (numpy)", t_loop,
                    note=f"max abs diff {err:.1e}", first_call_s=first))

    # 2AFC, streamed from a response function (the layer is recomputed batch by batch)
    wj = jnp.asarray(w)

    def response_fn(x):
        return x.reshape(x.shape[0], -1) @ wj / 8.0

    lin = items.reshape(n, -1) @ w / 8.0  # the loop sees numpy's values (float rounding may swap near-ties)

    def streamed():
        st = interp.stream_two_afc_stimuli(response_fn, items, 0.0, batch_size=1024)
        return interp.two_afc_of_stimuli(st, items, sim, zscore="unit").scores

    start = time.perf_counter()
    ours = streamed()
    first = time.perf_counter() - start
    want, t_loop = timed_loop(lambda: ref.loop_two_afc(lin, items, ref.pixel_l2_sim, q=0.0)[0])
    err = float(np.max(np.abs(ours - want)))
    t_ours = time_fn(streamed, repeats=repeats)
    rows.append(row(f"2afc_stream/{units}units_{n}inputs", t_ours, "python loop (numpy)", t_loop,
                    note=f"batches of 1024; max abs diff {err:.1e}", first_call_s=first))
    write_results("interpretability", {"units": units, "inputs": n, "item_shape": [8, 8, 1], "similarity": "pixel_l2",
                                       "k": 5, "trials": 20, "refs": 9, "repeats": repeats}, rows)


if __name__ == "__main__":
    main()
