"""Polytope boundaries along straight paths: sampled Hamming counts (the exact walk is in ``walk.py``).

A path is the segment ``a(t) = x0 + t (x1 - x0)``, ``t in [0, 1]``, in input space, or in a
layer's activation space by passing the rest of the network (a function of that layer's
activations, see :func:`layer_activations`) as ``fn``: the boundaries counted are then those of
the later layers.

* Sampled (:func:`sampled_boundary_counts`): ``H_t = Hamming(code(a_t), code(a_{t+1}))`` at
  ``n_steps + 1`` evenly spaced points, per layer; ``rho_t = H_t / ||a_{t+1} - a_t||``. A unit that
  flips twice within one step is missed, so sampled counts never exceed exact ones.
* Exact (:func:`jaxinterp.polytope.walk.exact_walk`): region to region in float64; sampled
  counts never exceed its counts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int
from jaxinterp.capture import POST_SUFFIX, capture
from jaxinterp.polytope.codes import check_inputs, layout_checked, packed_signs, per_layer_counts
from jaxinterp.polytope.network import CodeLayout, Preactivations, as_preactivations, map_batched


def check_endpoints(x0, x1):
    """Check that endpoints are non-empty, floating, finite, equally shaped batches ``[paths, ...]``
    with distinct pairs; return them (half precision as float32)."""
    x0 = check_inputs(x0, "x0")
    x1 = check_inputs(x1, "x1")
    if np.shape(x0) != np.shape(x1):
        raise ValueError(f"`x0` and `x1` must have the same shape [paths, ...]; got {np.shape(x0)} and "
                         f"{np.shape(x1)}.")
    if not isinstance(x0, jax.core.Tracer) and not isinstance(x1, jax.core.Tracer):
        a = np.asarray(x0).reshape(np.shape(x0)[0], -1)
        b = np.asarray(x1).reshape(np.shape(x1)[0], -1)
        same = np.flatnonzero(np.all(a == b, axis=1))
        if same.size:
            raise ValueError(f"paths {same[:10].tolist()} have identical endpoints `x0` == `x1` (zero length); "
                             "a boundary density per unit length is undefined for them.")
    return x0, x1


def path_lengths(x0, x1) -> jax.Array:
    """Euclidean length of each path ``x0 -> x1``: ``[paths]``."""
    d = (x1 - x0).reshape(x0.shape[0], -1)
    return jnp.sqrt(jnp.sum(d * d, axis=1))


# -- sampled -------------------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampledPath:
    """Sampled boundary counts along paths.

    Attributes:
      counts: int32 ``[paths, n_steps, n_layers]``: ``H_t`` per layer (units flipping between
        successive points).
      length: ``[paths]`` Euclidean length of each path.
      layout: the :class:`CodeLayout` of the units.
    """

    counts: jax.Array
    length: jax.Array
    layout: CodeLayout = dataclasses.field(metadata=dict(static=True))

    @property
    def total(self) -> jax.Array:
        """Units flipping along each path (sum of ``H_t`` over steps and layers): ``[paths]``."""
        return self.counts.sum(axis=(1, 2))

    @property
    def density(self) -> jax.Array:
        """Mean boundary density (boundaries per unit length) of each path: ``[paths]``."""
        return self.total.astype(self.length.dtype) / self.length

    @property
    def density_per_layer(self) -> jax.Array:
        """Boundaries per unit length of each layer: ``[paths, n_layers]``."""
        return self.counts.sum(axis=1).astype(self.length.dtype) / self.length[:, None]

    @property
    def step_density(self) -> jax.Array:
        """``rho_t = H_t / ||a_{t+1} - a_t||`` over all layers: ``[paths, n_steps]``."""
        n_steps = self.counts.shape[1]
        return self.counts.sum(-1).astype(self.length.dtype) / (self.length[:, None] / n_steps)


def sampled_counts_single(pre: Preactivations, layout: CodeLayout, x0: jax.Array, x1: jax.Array,
                          n_steps: int) -> jax.Array:
    """``H_t`` per layer along one path ``x0 -> x1`` (no batch axis): int32 ``[n_steps, n_layers]``."""
    ts = jnp.linspace(0.0, 1.0, n_steps + 1, dtype=x0.dtype).reshape(-1, *([1] * x0.ndim))
    words = packed_signs(pre(x0[None] + ts * (x1 - x0)[None]))
    return per_layer_counts(words[:-1], words[1:], layout)


@functools.partial(jax.jit, static_argnames=("pre", "layout", "n_steps", "batch_size"))
def _sampled(pre, layout, x0, x1, n_steps, batch_size):
    counts = map_batched(lambda ab: sampled_counts_single(pre, layout, ab[0], ab[1], n_steps), (x0, x1),
                         batch_size)
    return SampledPath(counts, path_lengths(x0, x1), layout)


def sampled_boundary_counts(fn: Callable | Preactivations, x0, x1, *, n_steps: int = 100, names=None,
                            maxpool=None, batch_size: int | None = None) -> SampledPath:
    """Hamming distances between codes of successive points along many straight paths.

    Args:
      fn: a ReLU network ``x [batch, ...] -> output`` or a :class:`Preactivations`.
      x0: path starts ``[paths, ...]``.
      x1: path ends ``[paths, ...]`` (same shape; no path may have identical endpoints).
      n_steps: number of steps (``n_steps + 1`` points per path, ends included).
      names, maxpool: which units (see :func:`jaxinterp.polytope.network.relu_preactivations`).
      batch_size: paths evaluated together (vmapped); all at once when None.

    Returns:
      :class:`SampledPath`.
    """
    x0, x1 = check_endpoints(x0, x1)
    n_steps = check_positive_int(n_steps, "n_steps")
    pre = as_preactivations(fn, names=names, maxpool=maxpool)
    x0 = jnp.asarray(x0)
    x1 = jnp.asarray(x1, x0.dtype)
    return _sampled(pre, layout_checked(pre, x0, "x0"), x0, x1, n_steps, batch_size)


def layer_activations(fn: Callable, x, name: str) -> jax.Array:
    """Output (post-ReLU activation) of layer ``name`` of ``fn`` for ``x [batch, ...]``.

    With these as path endpoints and the rest of the network (a function of this layer's
    output) as ``fn``, :func:`exact_walk` and :func:`sampled_boundary_counts` count boundaries of
    the later layers in this layer's activation space.
    """
    x = jnp.asarray(check_inputs(x))
    _, acts = capture(fn, names=[name + POST_SUFFIX], post_activations=True)(x)
    return acts[name + POST_SUFFIX]


def class_change_positions(logits_fn: Callable, x0, x1, *, n_steps: int = 200) -> np.ndarray:
    """First ``t`` at which the arg-max of ``logits_fn`` differs from its value at ``x0`` (NaN if never).

    Args:
      logits_fn: ``x [batch, ...] -> logits [batch, n_classes]``.
      x0, x1: path ends ``[paths, ...]``.
      n_steps: sampling resolution (the position is the midpoint of the first changing step).

    Returns:
      ``[paths]`` positions in ``[0, 1]``.
    """
    x0, x1 = check_endpoints(x0, x1)
    n_steps = check_positive_int(n_steps, "n_steps")
    ts = np.linspace(0.0, 1.0, n_steps + 1, dtype=np.float32)
    x0 = np.asarray(x0, np.float32)
    x1 = np.asarray(x1, np.float32)
    pts = x0[:, None] + ts.reshape(1, -1, *([1] * (x0.ndim - 1))) * (x1 - x0)[:, None]
    pred = np.asarray(jax.jit(logits_fn)(jnp.asarray(pts.reshape(-1, *x0.shape[1:])))).argmax(-1)
    pred = pred.reshape(x0.shape[0], n_steps + 1)
    changed = pred != pred[:, :1]
    first = np.argmax(changed, axis=1)
    return np.where(changed.any(1), (ts[np.maximum(first - 1, 0)] + ts[first]) / 2, np.nan)
