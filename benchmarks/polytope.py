"""Benchmark the polytope lens: packed codes vs a forward pass (and PyTorch forward hooks), the exact
line walk vs dense sampling at equal accuracy, Jacobian density exact vs sketch, code memory.

Run: ``python benchmarks/polytope.py [--quick]`` -> ``benchmarks/results/polytope.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import row, time_fn, write_results  # noqa: E402
from jaxinterp import datasets, models  # noqa: E402
from jaxinterp.polytope.boundary import boundary_distances  # noqa: E402
from jaxinterp.polytope import (exact_walk, polytope_codes, relu_preactivations,  # noqa: E402
                                sampled_boundary_counts)


def _torch_mlp(params, hidden):
    """The same MLP in PyTorch, with the Flax parameters."""
    import torch

    layers = []
    for i in range(len(hidden) + 1):
        p = params["params"][f"Dense_{i}"]
        lin = torch.nn.Linear(*np.asarray(p["kernel"]).shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))
        layers.append(lin)
        if i < len(hidden):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(torch.nn.Flatten(), *layers)


def _torch_hook_codes(net, n_hidden):
    """What a PyTorch user writes: forward hooks on the Linear layers feeding ReLUs, sign patterns,
    concatenated and bit-packed."""
    import torch

    store = []
    linears = [m for m in net if isinstance(m, torch.nn.Linear)][:n_hidden]
    for lin in linears:
        lin.register_forward_hook(lambda mod, inp, out: store.append(out > 0))

    def codes(x):
        store.clear()
        with torch.no_grad():
            net(x)
        bits = torch.cat(store, dim=1).numpy()
        return np.packbits(bits, axis=1, bitorder="little")

    return codes


def _paired(fa, fb, rounds=5, repeats=9):
    """Seconds of ``fa`` and ``fb``, timed alternately: the smallest median over ``rounds`` rounds
    (the machine is shared: alternating and taking the best round keeps other load out of the ratio)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(time_fn(fa, repeats=repeats))
        tb.append(time_fn(fb, repeats=repeats))
    return min(ta), min(tb)


def bench_codes(rows, quick):
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    batch = 2048 if quick else 8192
    rng = np.random.default_rng(0)
    for hidden in ([256, 256], [512, 512, 512]):
        model = models.MLP(hidden=tuple(hidden), n_classes=10)
        params = models.init_params(model, (40, 1), key=jax.random.key(0))
        x = jnp.asarray(rng.normal(size=(batch, 40, 1)), jnp.float32)
        fwd = jax.jit(lambda v: model.apply(params, v))
        pre = relu_preactivations(lambda v: model.apply(params, v))
        codes = jax.jit(lambda v: polytope_codes(pre, v).words)
        t_codes, t_fwd = _paired(lambda: codes(x), lambda: fwd(x))
        case = f"codes vs forward, MLP 40-{'-'.join(map(str, hidden))}, batch {batch}"
        rows.append(row(case, t_codes, "jax forward (logits)", t_fwd,
                        note="cost_ratio = codes / forward (goal <= 1.15)", cost_ratio=t_codes / t_fwd))
        net = _torch_mlp(params, hidden)
        hook_codes = _torch_hook_codes(net, len(hidden))
        xt = torch.from_numpy(np.asarray(x))
        ours = np.asarray(codes(x)).view(np.uint8)
        theirs = hook_codes(xt)
        assert np.array_equal(ours[:, : theirs.shape[1]], theirs), "torch and jax codes differ"
        t_codes, t_torch = _paired(lambda: codes(x), lambda: hook_codes(xt))
        rows.append(row(f"codes, MLP 40-{'-'.join(map(str, hidden))}, batch {batch}", t_codes,
                        "torch forward hooks + packbits", t_torch, note="same codes checked before timing"))
        n_units = sum(hidden)
        packed = batch * ((n_units + 31) // 32) * 4
        rows.append(row(f"memory of codes, {n_units} units, batch {batch}", float(packed), "float32 pre-activations",
                        float(batch * n_units * 4), note="bytes, not seconds; speedup = memory ratio",
                        memory_ratio=batch * n_units * 4 / packed, bool_ratio=batch * n_units / packed))
    # CNN with max-pool units
    model = models.CNN(channels=(16, 32), hidden=64)
    params = models.init_params(model, (40, 1), key=jax.random.key(0))
    x = jnp.asarray(rng.normal(size=(batch // 4, 40, 1)), jnp.float32)
    fwd = jax.jit(lambda v: model.apply(params, v))
    pre = relu_preactivations(lambda v: model.apply(params, v), maxpool={"Conv_0/relu": 2, "Conv_1/relu": 2})
    codes = jax.jit(lambda v: polytope_codes(pre, v).words)
    t_codes, t_fwd = _paired(lambda: codes(x), lambda: fwd(x))
    rows.append(row(f"codes (+max-pool units) vs forward, CNN 16-32-64, batch {batch // 4}", t_codes,
                    "jax forward (logits)", t_fwd, note="cost_ratio = codes / forward; a hand-written CNN that returns "
                    "its conv sign bits costs about as much on XLA CPU (the sign extraction is not fused with "
                    "conv + pool)", cost_ratio=t_codes / t_fwd))


def bench_walk(rows, quick):
    ds = datasets.load_mnist1d()
    n_paths = 16 if quick else 64
    rng = np.random.default_rng(1)
    i, j = rng.choice(len(ds.x_test), (2, n_paths), replace=False)
    x0, x1 = ds.x_test[i].astype(np.float64), ds.x_test[j].astype(np.float64)
    mlp = models.MLP(hidden=(64, 64) if quick else (128, 128), n_classes=10)
    cnn = models.CNN(channels=(8, 16) if quick else (16, 32), hidden=64)
    cases = [(f"MLP 40-{mlp.hidden[0]}-{mlp.hidden[1]}", mlp, None),
             (f"CNN {cnn.channels[0]}-{cnn.channels[1]}-64 (+max-pool units)", cnn,
              {"Conv_0/relu": 2, "Conv_1/relu": 2})]
    for name, model, pools in cases:
        params = models.init_params(model, (40, 1), key=jax.random.key(0))
        pre = relu_preactivations(lambda v, model=model, params=params: model.apply(params, v), maxpool=pools)
        walk = exact_walk(pre, x0, x1, keep_regions=False, max_crossings=8192)
        assert not walk.truncated.any()
        # all paths vmapped in one while loop (runs until the longest path is done), and a scan
        # over paths one at a time (batch_size=1), which wastes no work on finished paths
        t_walks = {bs: time_fn(lambda bs=bs: exact_walk(pre, x0, x1, keep_regions=False, max_crossings=8192,
                                                        batch_size=bs), repeats=3) for bs in (None, 1)}
        # dense sampling (float64 too) at the coarsest resolution (powers of 2) where every path's
        # count equals the exact one; the search itself is not timed
        n_steps, matched = 64, False
        with jax.enable_x64(True):
            a, b = jnp.asarray(x0), jnp.asarray(x1)
            while n_steps <= 2**16:
                tot = np.asarray(sampled_boundary_counts(pre, a, b, n_steps=n_steps, batch_size=1).total)
                if np.array_equal(tot, walk.n_boundaries):
                    matched = True
                    break
                n_steps *= 2
            n_steps = min(n_steps, 2**16)
            t_samp = time_fn(lambda: sampled_boundary_counts(pre, a, b, n_steps=n_steps, batch_size=1), repeats=3)
        for bs, t_walk in t_walks.items():
            how = "vmapped" if bs is None else "one path at a time"
            rows.append(row(f"exact line walk ({how}), {name}, {n_paths} paths (init)", t_walk,
                            f"dense sampling, {n_steps} steps", t_samp,
                            note=("sampling matched every exact count" if matched else "sampling never matched") +
                            f"; mean {float(walk.n_boundaries.mean()):.0f} flips/path",
                            segments_per_s=n_paths / t_walk, baseline_segments_per_s=n_paths / t_samp,
                            sampling_steps_for_equal_accuracy=n_steps, sampling_matched=matched))


def bench_jacobian(rows, quick):
    dim = 768 if quick else 3072
    batch = 32 if quick else 128
    model = models.MLP(hidden=(256, 256), n_classes=10)
    params = models.init_params(model, (dim,), key=jax.random.key(0))
    pre = relu_preactivations(lambda v: model.apply(params, v))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(batch, dim)), jnp.float32)
    exact = boundary_distances(pre, x, batch_size=batch)
    t_exact = time_fn(lambda: boundary_distances(pre, x, batch_size=batch).grad_sq_norms, repeats=5)
    g_exact = np.asarray(exact.grad_sq_norms)
    live = g_exact > 0
    for k in (16, 64):
        key = jax.random.key(k)
        est = np.asarray(boundary_distances(pre, x, method="sketch", n_probes=k, key=key,
                                            batch_size=batch).grad_sq_norms)
        err = float(np.sqrt(np.mean(((est - g_exact)[live] / g_exact[live]) ** 2)))
        t_sk = time_fn(lambda: boundary_distances(pre, x, method="sketch", n_probes=k, key=key,
                                                  batch_size=batch).grad_sq_norms, repeats=5)
        rows.append(row(f"Jacobian density sketch k={k}, input {dim}, 512 units, batch {batch}", t_sk,
                        "exact Jacobian (reverse mode)", t_exact,
                        note=f"relative RMS error of squared gradient norms {err:.3f} (bound sqrt(2/k) = "
                        f"{np.sqrt(2 / k):.3f})", relative_rms_error=err, inputs_per_s=batch / t_sk,
                        baseline_inputs_per_s=batch / t_exact))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, fast smoke run")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    bench_codes(rows, args.quick)
    bench_walk(rows, args.quick)
    bench_jacobian(rows, args.quick)
    write_results("polytope", {"quick": args.quick}, rows)


if __name__ == "__main__":
    main()
