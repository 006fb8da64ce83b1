"""Benchmark: the captured forward pass against the plain one, and streaming memory.

Rows:
- ``forward/<model>``: jitted ``capture(model.apply)`` (returning every ReLU pre-activation)
  against the jitted plain ``model.apply`` on the same batch; goal ``ours_s / baseline_s <= 1.1``
  (``speedup >= 0.91``). Compared programs are timed in alternation (each round calls each once),
  so they see the same load of a shared machine.
- ``stream/<model>``: peak traced memory (tracemalloc, host) of ``stream`` over a dataset 10x
  and 40x larger than one batch; bounded memory means the ratio stays near 1.
- ``forward/cnn2d/fused channel means``: capture of every ReLU with the conv maps reduced to
  per-channel means inside the program (``reduce={"Conv_*": channel_mean()}``) against the plain
  jitted apply; goal ``ours_s / baseline_s <= 1.2``. The means of conv pre-activations are computed from each conv's
  input and kernel (``jaxinterp.capture.lineage``), so no map is read a second time.
- ``forward/cnn2d/hand-written channel means``: the same against a hand-written jitted forward
  returning ``mean(conv + bias)`` per channel, which makes XLA materialise both conv maps.
- ``forward/cnn2d/Conv_0 only``, ``Dense_0 only``: one materialised conv map against a
  hand-written forward returning it; the dense layer only against the plain forward.
- ``torch_hooks/mlp``: the same MLP in PyTorch with forward hooks collecting pre-activations,
  a user's usual alternative, against our jitted capture.

Run: ``python benchmarks/capture.py [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

from _common import alternating_seconds, row, time_fn, write_results
from jaxinterp import capture, models, stream
from jaxinterp.capture import channel_mean


def _forward_rows(batch: int, repeats: int) -> list[dict]:
    rows = []
    cases = {
        "mlp_512x3": (models.MLP(hidden=(512, 512, 512), n_classes=10), (64,)),
        "cnn1d": (models.CNN(channels=(32, 64), hidden=128, n_classes=10), (40, 1)),
        "cnn2d": (models.CNN(channels=(32, 64), hidden=128, n_classes=10), (16, 16, 1)),
    }
    for name, (model, shape) in cases.items():
        x = jax.random.normal(jax.random.key(0), (batch, *shape))
        params = model.init(jax.random.key(1), x[:1])
        plain = jax.jit(model.apply)
        captured = jax.jit(capture(model.apply))
        t = alternating_seconds({"plain": lambda: plain(params, x), "captured": lambda: captured(params, x)},
                                 repeats)
        rows.append(row(f"forward/{name}/batch{batch}", t["captured"], "plain jitted apply", t["plain"],
                        note="goal: ours/baseline <= 1.1", overhead=t["captured"] / t["plain"]))
        if name == "cnn2d":
            rows += _cnn2d_rows(model, params, x, plain, repeats)
    return rows


def _hand_channel_means(params, xb):
    """A hand-written forward of ``models.CNN`` that also returns the conv pre-activations' channel means."""
    p = params["params"]
    h, means = xb, []
    for name in ("Conv_0", "Conv_1"):
        z = jax.lax.conv_general_dilated(h, p[name]["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + p[name]["bias"]
        means.append(z.mean(axis=(1, 2)))
        h = jax.lax.reduce_window(jax.nn.relu(z), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    z = h.reshape(h.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    return jax.nn.relu(z) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], means, z


def _cnn2d_rows(model, params, x, plain, repeats) -> list[dict]:
    """The 2-D CNN's capture costs: fused channel means, one materialised conv map, the dense layer only.

    Every function is timed in alternation with the plain forward. A hand-written forward returning
    a conv pre-activation (or its channel means, read from the map) is the fair baseline for
    capturing it; capturing only the dense layer keeps the plain program fused.
    """
    p = params["params"]

    def hand_conv0(prm, xb):
        z0 = jax.lax.conv_general_dilated(xb, p["Conv_0"]["kernel"], (1, 1), "SAME",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["Conv_0"]["bias"]
        return plain(prm, xb), z0

    fns = {"plain": plain, "fused": jax.jit(capture(model.apply, reduce={"Conv_*": channel_mean()})),
           "hand_means": jax.jit(_hand_channel_means), "conv0": jax.jit(capture(model.apply, names=["Conv_0/relu"])),
           "hand_conv0": jax.jit(hand_conv0), "dense": jax.jit(capture(model.apply, names=["Dense_0/relu"]))}
    _, acts = fns["fused"](params, x)
    _, want, _ = fns["hand_means"](params, x)  # check the answer before timing it
    for name, mean in zip(("Conv_0/relu", "Conv_1/relu"), want):
        np.testing.assert_allclose(acts[name], mean, rtol=1e-4, atol=1e-4)
    t = alternating_seconds({k: functools.partial(f, params, x) for k, f in fns.items()}, repeats)
    b = x.shape[0]
    return [
        row(f"forward/cnn2d/fused channel means/batch{b}", t["fused"], "plain jitted apply", t["plain"],
            note="goal: ours/baseline <= 1.2", overhead=t["fused"] / t["plain"]),
        row(f"forward/cnn2d/hand-written channel means/batch{b}", t["fused"], "hand-written fwd + mean(conv maps)",
            t["hand_means"], note="reading the maps for their means materialises them",
            overhead=t["fused"] / t["hand_means"], hand_overhead_vs_plain=t["hand_means"] / t["plain"]),
        row(f"forward/cnn2d/Conv_0 only/batch{b}", t["conv0"], "hand-written fwd returning Conv_0", t["hand_conv0"],
            note="materialising a conv map costs the same by hand", overhead=t["conv0"] / t["hand_conv0"]),
        row(f"forward/cnn2d/Dense_0 only/batch{b}", t["dense"], "plain jitted apply", t["plain"],
            note="goal: ours/baseline <= 1.1", overhead=t["dense"] / t["plain"]),
    ]


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _stream_rows(batch: int) -> list[dict]:
    model = models.MLP(hidden=(256, 256), n_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 64)))
    captured = capture(model.apply)
    fn = lambda xb: captured(params, xb)[1]
    rng = np.random.default_rng(0)
    rows = []
    small = rng.normal(size=(batch, 64)).astype(np.float32)
    stream(fn, small, batch_size=batch, top_k=8)  # warm caches outside the measurement
    base = _peak_bytes(lambda: stream(fn, small, batch_size=batch, top_k=8))
    for factor in (10, 40):
        big = rng.normal(size=(batch * factor, 64)).astype(np.float32)
        start = time.perf_counter()
        peak = _peak_bytes(lambda: stream(fn, big, batch_size=batch, top_k=8))
        seconds = time.perf_counter() - start
        rows.append(row(f"stream/mlp/{factor}x_batch", seconds, "-", None,
                        note="host peak memory vs a 1-batch dataset (tracemalloc)",
                        memory_ratio=peak / base, peak_bytes=peak, one_batch_peak_bytes=base))
    return rows


def _torch_rows(batch: int, repeats: int) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [row("torch_hooks/mlp", float("nan"), "torch (not installed)", None)]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    widths = (64, 512, 512, 512)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(512, 10)).eval()
    store = []
    for m in net:
        if isinstance(m, torch.nn.ReLU):
            m.register_forward_hook(lambda mod, inp, out: store.append(inp[0].detach()))
    xt = torch.randn(batch, 64)

    def torch_fwd():
        store.clear()
        with torch.no_grad():
            return net(xt), list(store)

    model = models.MLP(hidden=(512, 512, 512), n_classes=10)
    x = jax.random.normal(jax.random.key(0), (batch, 64))
    params = model.init(jax.random.key(1), x[:1])
    captured = jax.jit(capture(model.apply))
    t_ours = time_fn(lambda: captured(params, x), repeats=repeats, warmup=2)
    t_torch = time_fn(torch_fwd, repeats=repeats, warmup=2)
    return [row(f"torch_hooks/mlp_512x3/batch{batch}", t_ours, "torch forward hooks", t_torch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch = 256 if args.quick else 2048
    repeats = 5 if args.quick else 20
    rows = _forward_rows(batch, repeats) + _stream_rows(256 if args.quick else 1024) + _torch_rows(batch, repeats)
    write_results("capture", {"batch": batch, "repeats": repeats, "quick": args.quick}, rows)


if __name__ == "__main__":
    main()
