"""Local complexity (Humayun, Balestriero, Baraniuk 2024): boundaries crossing a small cross-polytope.

Around each input ``x`` draw a random orthonormal frame ``e_1..e_k`` of the input space and take the
``2k`` vertices ``x +/- r e_j``. A unit's boundary cuts the cross-polytope iff its sign differs
among the vertices (the polytope is the convex hull of its vertices, so inside a region of the
earlier layers this is exact; across earlier boundaries it is the paper's approximation). Local
complexity is the number of such units.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_key, check_positive_int, check_real
from jaxinterp.polytope.codes import check_inputs, layout_checked, positive
from jaxinterp.polytope.network import CodeLayout, Preactivations, as_preactivations, unit_values


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LocalComplexity:
    """Local complexity of a batch.

    Attributes:
      per_layer: int32 ``[batch, n_layers]`` units of each layer whose sign differs among the vertices.
      layout: the :class:`CodeLayout` of the units.
    """

    per_layer: jax.Array
    layout: CodeLayout = dataclasses.field(metadata=dict(static=True))

    @property
    def total(self) -> jax.Array:
        """Local complexity of each input (all layers): ``[batch]``."""
        return self.per_layer.sum(-1)


def random_frames(key: jax.Array, batch: int, dim: int, n_directions: int, dtype=jnp.float32) -> jax.Array:
    """Random orthonormal frames (Haar, by QR of Gaussians): ``[batch, n_directions, dim]``."""
    g = jax.random.normal(key, (batch, dim, n_directions), dtype)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]  # Haar measure
    return jnp.swapaxes(q, -1, -2)


@functools.partial(jax.jit, static_argnames=("pre", "layout", "n_directions"))
def _local_complexity(pre, layout, x, key, radius, n_directions):
    batch = x.shape[0]
    dim = math.prod(x.shape[1:])
    frames = random_frames(key, batch, dim, n_directions, x.dtype)  # [batch, k, dim]
    offsets = jnp.concatenate([frames, -frames], axis=1) * radius  # [batch, 2k, dim]
    vertices = x.reshape(batch, 1, dim) + offsets
    z = unit_values(pre, vertices.reshape(batch * 2 * n_directions, *x.shape[1:]))
    pos = positive(z).reshape(batch, 2 * n_directions, -1)
    cut = jnp.any(pos, axis=1) & jnp.any(~pos, axis=1)  # [batch, n_units]
    layer = jnp.asarray(layout.layer_index())
    per_layer = jax.vmap(lambda c: jnp.zeros(layout.n_layers, jnp.int32).at[layer].add(c.astype(jnp.int32)))(cut)
    return LocalComplexity(per_layer, layout)


def local_complexity(fn: Callable | Preactivations, x, *, key: jax.Array, radius: float, n_directions: int,
                     names=None, maxpool=None) -> LocalComplexity:
    """Number of units whose boundary cuts a random cross-polytope of radius ``radius`` around each input.

    Args:
      fn: a ReLU network ``x [batch, ...] -> output`` or a :class:`Preactivations`.
      x: inputs ``[batch, ...]`` (half precision is computed in float32).
      key: typed PRNG key for the random frames (one frame per input); same key, same result.
      radius: distance ``r`` of the vertices from ``x``.
      n_directions: number ``k`` of orthonormal directions (at most the input dimension); the
        polytope has ``2k`` vertices.
      names, maxpool: which units (see :func:`jaxinterp.polytope.network.relu_preactivations`).

    Returns:
      :class:`LocalComplexity`.
    """
    x = jnp.asarray(check_inputs(x))
    check_key(key)
    dim = math.prod(x.shape[1:])
    n_directions = check_positive_int(n_directions, "n_directions", maximum=dim,
                                      maximum_name=f"the input dimension of `x` of shape {tuple(x.shape)}")
    radius = check_real(radius, "radius", low=0.0, open_low=True)
    pre = as_preactivations(fn, names=names, maxpool=maxpool)
    return _local_complexity(pre, layout_checked(pre, x), x, key, jnp.asarray(radius, x.dtype), n_directions)
