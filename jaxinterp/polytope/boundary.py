"""Jacobian-based boundary distances and density around inputs of any ReLU network.

Unit ``i``'s first-order distance to its boundary ``{z_i = 0}`` is ``|z_i(x)| / ||grad_x z_i(x)||``
(exact for a first-layer unit, and for any unit while the segment to the boundary stays inside
the region of the earlier layers). The density within radius ``r`` is the number of units closer
than ``r``, divided by ``r``.

Squared gradient norms are computed

* exactly (``method="exact"``): the Jacobian of all units, forward mode (one JVP per input
  dimension) or reverse mode (one VJP per unit), vmapped over the batch: ``[n_units, dim]``
  memory per example, for moderate input sizes;
* by a sketch (``method="sketch"``) with ``k`` random Rademacher JVPs ``J v``:
  ``mean_k (J v)_i^2`` is an unbiased estimate of ``||grad z_i||^2``; its relative standard
  deviation is ``sqrt(2 (1 - sum_j g_j^4 / ||g||^4) / k) <= sqrt(2 / k)``
  (:func:`sketch_relative_std`). Cost: ``k`` JVPs, ``[k, n_units]`` memory per example,
  independent of the input size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_floating, check_key, check_nonempty, check_positive_int, check_rank, check_real
from jaxinterp.polytope.codes import check_inputs, layout_checked
from jaxinterp.polytope.network import CodeLayout, Preactivations, as_preactivations, map_batched, \
    single_unit_values


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BoundaryDistances:
    """Unit values and squared gradient norms of a batch.

    Attributes:
      values: ``[batch, n_units]`` pre-activations ``z_i(x)``.
      grad_sq_norms: ``[batch, n_units]`` ``||grad_x z_i(x)||^2`` (exact or sketched).
      layout: the :class:`CodeLayout` of the units.
    """

    values: jax.Array
    grad_sq_norms: jax.Array
    layout: CodeLayout = dataclasses.field(metadata=dict(static=True))

    @property
    def distances(self) -> jax.Array:
        """First-order distance of each unit's boundary ``|z_i| / ||grad z_i||``: ``[batch, n_units]``
        (``inf`` for a unit constant near ``x``)."""
        norm = jnp.sqrt(self.grad_sq_norms)
        return jnp.where(norm > 0, jnp.abs(self.values) / jnp.where(norm > 0, norm, 1.0), jnp.inf)


def sketch_relative_std(n_probes: int) -> float:
    """Upper bound ``sqrt(2 / k)`` on the relative standard deviation of the Rademacher sketch."""
    return math.sqrt(2.0 / check_positive_int(n_probes, "n_probes"))


def _exact_one(flat, mode, x):
    jac = (jax.jacfwd if mode == "forward" else jax.jacrev)(flat)(x)  # [n_units, *in]
    z = flat(x)
    return z, jnp.sum(jac.reshape(jac.shape[0], -1) ** 2, axis=1)


def _sketch_one(flat, n_probes, x, key):
    z, lin = jax.linearize(flat, x)
    v = jax.random.rademacher(key, (n_probes, *x.shape), x.dtype)
    jv = jax.vmap(lin)(v)  # [k, n_units]
    return z, jnp.mean(jv * jv, axis=0)


@functools.partial(jax.jit, static_argnames=("pre", "layout", "method", "mode", "n_probes", "batch_size"))
def _distances(pre, layout, x, key, method, mode, n_probes, batch_size):
    flat = single_unit_values(pre)
    if method == "exact":
        out = map_batched(functools.partial(_exact_one, flat, mode), x, batch_size)
    else:
        keys = jax.random.split(key, x.shape[0])
        out = map_batched(lambda a: _sketch_one(flat, n_probes, *a), (x, keys), batch_size)
    return BoundaryDistances(out[0], out[1], layout)


def boundary_distances(fn: Callable | Preactivations, x, *, method: str = "exact", mode: str = "auto",
                       key: jax.Array | None = None, n_probes: int = 64, names=None, maxpool=None,
                       batch_size: int | None = None) -> BoundaryDistances:
    """Unit values and squared gradient norms (hence boundary distances) of a batch.

    Args:
      fn: a ReLU network ``x [batch, ...] -> output`` or a :class:`Preactivations`.
      x: inputs ``[batch, ...]``.
      method: ``"exact"`` (full Jacobian) or ``"sketch"`` (``n_probes`` random JVPs).
      mode: exact Jacobian by ``"forward"`` or ``"reverse"`` mode; ``"auto"`` picks forward when
        the input dimension is at most the number of units.
      key: PRNG key of the sketch's probes (required for ``"sketch"``).
      n_probes: number ``k`` of probes of the sketch.
      names, maxpool: which units (see :func:`jaxinterp.polytope.network.relu_preactivations`).
      batch_size: inputs processed together (vmapped); all at once when None.

    Returns:
      :class:`BoundaryDistances` (``.distances`` gives ``[batch, n_units]``).
    """
    x = check_inputs(x)
    if method not in ("exact", "sketch"):
        raise ValueError(f"`method` must be 'exact' or 'sketch'; got {method!r}.")
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"`mode` must be 'auto', 'forward' or 'reverse'; got {mode!r}.")
    n_probes = check_positive_int(n_probes, "n_probes")
    if method == "sketch" and key is None:
        raise ValueError("`key` is required for method='sketch' (it draws the random probes).")
    if key is not None:
        check_key(key)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    pre = as_preactivations(fn, names=names, maxpool=maxpool)
    x = jnp.asarray(x)
    layout = layout_checked(pre, x)
    if mode == "auto":
        mode = "forward" if math.prod(x.shape[1:]) <= layout.n_units else "reverse"
    key = jax.random.key(0) if key is None else key
    return _distances(pre, layout, x, key, method, mode, n_probes, batch_size)


def boundary_density(distances, radius: float, *, layout: CodeLayout | None = None) -> jax.Array:
    """Units whose boundary lies within ``radius``, divided by ``radius``.

    Args:
      distances: ``[batch, n_units]`` (e.g. ``BoundaryDistances.distances``), non-negative; ``inf``
        (a unit constant near the input) is never within the radius; NaN is an error.
      radius: ``r > 0``, finite.
      layout: when given, the density of each layer: ``[batch, n_layers]``.

    Returns:
      ``[batch]`` (or ``[batch, n_layers]`` with ``layout``).
    """
    radius = check_real(radius, "radius", low=0.0, open_low=True)
    check_rank(distances, "distances", 2)
    check_nonempty(distances, "distances")
    check_floating(distances, "distances")
    if not isinstance(distances, jax.core.Tracer):
        d = np.asarray(distances)
        if np.isnan(d).any() or (d < 0).any():
            raise ValueError(f"`distances` must be non-negative and not NaN (inf is allowed); got "
                             f"{int(np.isnan(d).sum())} NaN and {int((d < 0).sum())} negative value(s).")
    near = (jnp.asarray(distances) < radius).astype(jnp.float32)
    if layout is None:
        return near.sum(-1) / radius
    if layout.n_units != np.shape(distances)[1]:
        raise ValueError(f"`layout` has {layout.n_units} units but `distances` has {np.shape(distances)[1]}.")
    layer = jnp.asarray(layout.layer_index())
    return jax.vmap(lambda r: jnp.zeros(layout.n_layers).at[layer].add(r))(near) / radius
