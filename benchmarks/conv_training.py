"""Benchmark: scanned training steps of convolutional networks, our convolution against XLA's.

Rows ``scan_step/<model>``: Adam steps of softmax cross-entropy run as one chunk under
``lax.scan`` (as ``models.train_classifier`` and ``midrange.training.train_epochs`` run them),
with the networks' convolutions computed by ``jaxinterp.conv.conv_general_dilated`` (ours) or by
``jax.lax.conv_general_dilated`` (baseline: the same network, parameters and batches). On XLA's
CPU backend a convolution's weight gradient inside a loop body is several times slower than in
straight-line code; ours computes it as one matrix product per kernel offset. Rows
``jit_step/<model>`` time one jitted step outside any loop, where XLA's weight gradient is not
slowed down: their ratio shows what the custom derivative costs there. Seconds are per step;
compiled programs are timed in alternation (each round calls each once), medians over rounds.

Run: ``python benchmarks/conv_training.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib

import jax
import jax.numpy as jnp
import optax
from jax import lax

import jaxinterp.midrange.lenet as lenet_module
import jaxinterp.models as models_module
from _common import alternating_seconds, row, write_results
from jaxinterp.midrange.lenet import LeNet
from jaxinterp.midrange.training import _loss
from jaxinterp.models import CNN


@contextlib.contextmanager
def xla_convolutions():
    """Trace the networks with ``jax.lax.conv_general_dilated`` (the baseline's convolutions)."""
    saved = models_module.conv_general_dilated, lenet_module.conv_general_dilated
    models_module.conv_general_dilated = lenet_module.conv_general_dilated = lax.conv_general_dilated
    try:
        yield
    finally:
        models_module.conv_general_dilated, lenet_module.conv_general_dilated = saved


def _programs(model, x, y, steps: int, batch: int):
    """``(scan_chunk, one_step, carry, indices)``: jittable functions of ``(carry, indices)``."""
    variables = model.init(jax.random.key(0), x[:2])
    stats = variables.get("batch_stats")
    opt = optax.adam(1e-3)

    def step(carry, idx):
        params, stats, opt_state = carry
        # the midrange trainer's loss: batch statistics for the LeNet, plain apply for the CNN
        (value, stats), grads = jax.value_and_grad(_loss, argnums=1, has_aux=True)(
            model, params, stats, x[idx], y[idx], jax.random.key(0))
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), value

    carry = (variables["params"], stats, opt.init(variables["params"]))
    indices = jax.random.randint(jax.random.key(1), (steps, batch), 0, x.shape[0])
    return (lambda c, idx: lax.scan(step, c, idx)), (lambda c, idx: step(c, idx[0])), carry, indices


def _compiled(model, x, y, steps: int, batch: int, *, xla: bool):
    """``(scan_chunk, one_step, carry, indices)`` with both programs compiled. Each call builds new
    functions: JAX caches traces per function, and the baseline must be traced with XLA's convolution."""
    with xla_convolutions() if xla else contextlib.nullcontext():
        scan_chunk, one_step, carry, idx = _programs(model, x, y, steps, batch)
        return (jax.jit(scan_chunk).lower(carry, idx).compile(), jax.jit(one_step).lower(carry, idx).compile(),
                carry, idx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer rounds")
    args = parser.parse_args()
    batch, steps, rounds = (200, 3, 2) if args.quick else (1000, 6, 3)
    cases = {
        "lenet_32px": (LeNet(), (32, 32, 1)),
        "lenet_20px": (LeNet(), (20, 20, 1)),
        "cnn2d_20px": (CNN(channels=(8, 16), hidden=32, n_classes=3), (20, 20, 1)),
        "cnn1d_40": (CNN(channels=(32, 64), hidden=128, n_classes=10), (40, 1)),
    }
    rows = []
    for name, (model, shape) in cases.items():
        x = jax.random.uniform(jax.random.key(2), (4 * batch, *shape))
        y = jnp.arange(4 * batch, dtype=jnp.int32) % model.n_classes
        progs, carry, idx = {}, None, None
        for conv in ("ours", "xla"):
            progs[f"scan/{conv}"], progs[f"jit/{conv}"], carry, idx = _compiled(model, x, y, steps, batch,
                                                                                xla=conv == "xla")
        t = alternating_seconds({k: (lambda p=p: p(carry, idx)) for k, p in progs.items()}, rounds, warmup=1)
        rows.append(row(f"scan_step/{name}/batch{batch}", t["scan/ours"] / steps, "lax.conv_general_dilated",
                        t["scan/xla"] / steps, note="per step, a chunk of steps under lax.scan"))
        rows.append(row(f"jit_step/{name}/batch{batch}", t["jit/ours"], "lax.conv_general_dilated", t["jit/xla"],
                        note="one jitted step outside any loop"))
    write_results("conv_training", {"batch": batch, "steps_per_chunk": steps, "rounds": rounds}, rows)


if __name__ == "__main__":
    main()
