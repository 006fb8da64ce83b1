"""Encoders: how a ``Directions`` turns normalised inputs into responses, one pytree class per kind.

Every encoder has ``encode(u, components) -> [batch, k]`` (the responses of the directions to
normalised inputs ``u [batch, d]``) and ``codes(u, components) -> [batch, k]`` (the codes that
``components`` map back to ``u``; equal to ``encode`` except for the centroid encoders).
Arrays are pytree leaves (``jit``/``vmap`` see them); settings that fix shapes or the program
(``k`` of TopK, iteration counts, the centroid response) are static fields. ``Directions.encode``
dispatches on the encoder's type, so a new kind is a new class, not a new string.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxinterp.directions._solvers import lasso_fista, nnls_codes, sq_distances, topk_activation, unit_rows

__all__ = ["Encoder", "Linear", "ReLU", "TopK", "BatchTopK", "JumpReLU", "NearestCentroid", "CosineCentroid",
           "NNLS", "Lasso"]

_static = dict(static=True)


def _register(cls):
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


class Encoder:
    """Base class of the encoders (see the module docstring)."""

    def encode(self, u: jax.Array, components: jax.Array) -> jax.Array:
        """Responses ``[batch, k]`` of the directions ``components [k, d]`` to ``u [batch, d]``."""
        raise NotImplementedError

    def codes(self, u: jax.Array, components: jax.Array) -> jax.Array:
        """Codes ``[batch, k]`` that ``components`` decode back to ``u``; ``encode`` by default."""
        return self.encode(u, components)


@_register
class Linear(Encoder):
    """Affine responses ``u @ weight + bias`` (PCA, ICA, the neuron basis).

    Attributes:
      weight: ``[d, k]``.
      bias: ``[k]``.
    """

    weight: jax.Array
    bias: jax.Array

    def pre(self, u: jax.Array) -> jax.Array:
        """``u @ weight + bias``, ``[batch, k]``."""
        y = u @ self.weight
        return y + self.bias.reshape((1,) * (y.ndim - 1) + (-1,))

    def encode(self, u, components):
        return self.pre(u)


@_register
class ReLU(Linear):
    """``relu(u @ weight + bias)`` (ReLU + L1 sparse autoencoders)."""

    def encode(self, u, components):
        return jax.nn.relu(self.pre(u))


@_register
class TopK(Linear):
    """The ``k`` largest of ``relu(u @ weight + bias)`` per sample, the rest zero (TopK SAEs).

    Attributes:
      k: active latents per sample (static).
    """

    k: int = dataclasses.field(metadata=_static)

    def encode(self, u, components):
        return topk_activation(self.pre(u), self.k)


@_register
class JumpReLU(Linear):
    """``pre * 1[pre > threshold]`` with ``pre = u @ weight + bias`` (JumpReLU SAEs).

    Attributes:
      threshold: ``[k]`` per-latent thresholds.
    """

    threshold: jax.Array

    def encode(self, u, components):
        pre = self.pre(u)
        return jnp.where(pre > self.threshold.reshape((1,) * (pre.ndim - 1) + (-1,)), pre, 0.0)


@_register
class BatchTopK(Linear):
    """BatchTopK SAEs at inference: a JumpReLU with one threshold for every latent.

    Attributes:
      threshold: scalar, the running mean of the smallest activation kept in training batches.
    """

    threshold: jax.Array

    def encode(self, u, components):
        pre = self.pre(u)
        return jnp.where(pre > self.threshold, pre, 0.0)


@_register
class NearestCentroid(Encoder):
    """K-means centroids: respond by projection on each centroid or by minus the distance to it.

    ``codes`` keep only the nearest centroid, one-hot, so ``decode`` returns that centroid.

    Attributes:
      response: ``"projection"`` (``u @ c``) or ``"distance"`` (``-||u - c||``), static.
    """

    response: str = dataclasses.field(default="projection", metadata=_static)

    def _inputs(self, u):
        return u

    def encode(self, u, components):
        u = self._inputs(u)
        if self.response == "distance":
            return -jnp.sqrt(jnp.maximum(sq_distances(u, components), 0.0))
        return u @ components.T

    def codes(self, u, components):
        idx = jnp.argmin(sq_distances(u, components), axis=-1)
        return jax.nn.one_hot(idx, components.shape[0], dtype=u.dtype)


@_register
class CosineCentroid(NearestCentroid):
    """Cosine (spherical) K-means centroids; responses are computed on unit-normalised inputs.

    ``codes`` keep the projection on the best-aligned unit centroid only (gain-shape
    quantisation), so ``decode`` returns the input's component along that centroid.
    """

    def _inputs(self, u):
        return unit_rows(u)

    def codes(self, u, components):
        proj = u @ components.T
        idx = jnp.argmax(unit_rows(u) @ components.T, axis=-1)
        return jax.nn.one_hot(idx, components.shape[0], dtype=u.dtype) * proj


@_register
class NNLS(Encoder):
    """Non-negative least-squares codes (NMF): ``n_iter`` HALS sweeps from zero.

    Attributes:
      l1: scalar L1 penalty on the codes.
      n_iter: HALS sweeps (static).
    """

    l1: jax.Array
    n_iter: int = dataclasses.field(default=100, metadata=_static)

    def encode(self, u, components):
        return nnls_codes(u, components, n_iter=self.n_iter, l1=self.l1)


@_register
class Lasso(Encoder):
    """Lasso codes by FISTA (dictionary learning): ``min_c 0.5 ||u - c D||^2 + alpha ||c||_1``.

    Attributes:
      alpha: scalar L1 penalty.
      n_iter: maximum FISTA iterations (static).
      positive: non-negative codes (static).
    """

    alpha: jax.Array
    n_iter: int = dataclasses.field(default=300, metadata=_static)
    positive: bool = dataclasses.field(default=False, metadata=_static)

    def encode(self, u, components):
        return lasso_fista(u, components, self.alpha, n_iter=self.n_iter, positive=self.positive)
