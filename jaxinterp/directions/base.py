"""The common result of every direction learner: a ``Directions`` pytree with encode/decode.

Every method (K-means, PCA, FastICA, NMF, dictionary learning, sparse autoencoders) returns the
same object, so downstream code (metrics, interpretability scores, plots) does not care which
method found the directions. The arrays are pytree leaves (``jit``/``vmap`` see them); how the
responses are computed is the type of ``encoder`` (see ``jaxinterp.directions.encoders``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._display import array_summary, number, summary_html, summary_repr, summary_treescope
from jaxinterp._validation import (
    check_finite,
    check_floating,
    check_nonnegative,
    check_positive_int,
    check_rank,
    check_shape,
)
from jaxinterp.directions.encoders import Encoder


@dataclasses.dataclass(frozen=True)
class Directions:
    """Learned directions in activation space, with the encoder that gives their responses.

    Inputs are first normalised, ``u = (x - center) / scale``; ``decode`` maps codes back to
    activation space, ``x_hat = (codes @ components) * scale + center``.

    Attributes:
      components: ``[k, d]`` the directions (dictionary atoms, decoder rows, centroids, principal
        axes or ICA mixing vectors), in normalised input coordinates.
      center: ``[d]`` subtracted from inputs before encoding.
      scale: ``[d]`` inputs are divided by it after centring (ones when not normalised).
      encoder: an ``Encoder`` (``Linear``, ``ReLU``, ``TopK``, ``NearestCentroid``, ``Lasso``, ...).
      info: diagnostics of the fit (e.g. ``inertia`` and ``n_iter`` for K-means,
        ``explained_variance`` for PCA, ``objective`` for NMF), scalars or arrays.
      method: name of the learner (``"kmeans"``, ``"pca"``, ``"sae_topk"``, ...), static.
    """

    components: jax.Array
    center: jax.Array
    scale: jax.Array
    encoder: Encoder
    info: dict = dataclasses.field(default_factory=dict)
    method: str = dataclasses.field(default="directions", metadata=dict(static=True))

    @classmethod
    def create(cls, components, encoder: Encoder, *, method: str, center=None, scale=None,
               info: dict | None = None) -> Directions:
        """``Directions`` with ``center`` zeros and ``scale`` ones unless given.

        Args:
          components: ``[k, d]``.
          encoder: the ``Encoder``.
          method: learner name.
          center, scale: optional ``[d]`` arrays.
          info: optional diagnostics.
        """
        if not isinstance(encoder, Encoder):
            raise TypeError(f"`encoder` must be an Encoder; got {type(encoder).__name__}.")
        components = jnp.asarray(components)
        d, dt = components.shape[-1], components.dtype
        lead = components.shape[:-2]
        center = jnp.zeros(lead + (d,), dt) if center is None else jnp.asarray(center, dt)
        scale = jnp.ones(lead + (d,), dt) if scale is None else jnp.asarray(scale, dt)
        return cls(components, center, scale, encoder, dict(info or {}), method)

    @property
    def n_directions(self) -> int:
        """Number of directions ``k``."""
        return self.components.shape[-2]

    @property
    def dim(self) -> int:
        """Dimension ``d`` of activation space."""
        return self.components.shape[-1]

    def unit_directions(self) -> jax.Array:
        """Directions as unit vectors in activation space, ``[k, d]``.

        The components are mapped through the input scaling (``component * scale``) and
        normalised, so they can be compared with planted features or neuron axes.
        """
        v = self.components * self.scale[..., None, :]
        return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    def normalize(self, x: jax.Array) -> jax.Array:
        """``(x - center) / scale`` for ``x [batch, d]``."""
        check_rank(x, "x", 2)
        check_shape(x, "x", (None, self.dim))
        return (x - self.center[..., None, :]) / self.scale[..., None, :]

    def encode(self, x: jax.Array) -> jax.Array:
        """Responses of every direction to ``x``.

        Args:
          x: ``[batch, d]`` activations.

        Returns:
          ``[batch, k]`` responses: the sparse codes for SAEs, NMF and lasso, the projections
          for PCA/ICA, and for K-means the projection on (or minus the distance to) each
          centroid.
        """
        return self.encoder.encode(self.normalize(x), self.components)

    def codes(self, x: jax.Array) -> jax.Array:
        """The codes that ``decode`` maps back to ``x`` (``[batch, d] -> [batch, k]``).

        Identical to ``encode`` except for K-means, where only the nearest centroid is active
        (see ``NearestCentroid`` and ``CosineCentroid``).
        """
        return self.encoder.codes(self.normalize(x), self.components)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Activations from codes.

        Args:
          codes: ``[batch, k]``.

        Returns:
          ``[batch, d]``: ``(codes @ components) * scale + center``.
        """
        check_rank(codes, "codes", 2)
        if codes.shape[-1] != self.n_directions:
            raise ValueError(f"`codes` must have shape (*, {self.n_directions}); got {codes.shape}.")
        return (codes @ self.components) * self.scale[..., None, :] + self.center[..., None, :]

    def reconstruct(self, x: jax.Array) -> jax.Array:
        """``decode(codes(x))``, ``[batch, d] -> [batch, d]``."""
        return self.decode(self.codes(x))

    def replace(self, **changes: Any) -> Directions:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def _summary(self) -> list[tuple[str, str | None]]:
        """Method, sizes, encoder, component shape and the first scalar diagnostics (safe under jit)."""
        lead = tuple(self.components.shape[:-2])
        fields = [("method", repr(self.method)), ("stacked", str(lead) if lead else None),
                  ("k", str(self.n_directions)), ("d", str(self.dim)), ("encoder", _encoder_text(self.encoder)),
                  ("components", array_summary(self.components))]
        info = list(self.info.items())
        for key, value in info[:_INFO_SHOWN]:
            fields.append((str(key), number(value) or array_summary(value)))
        if len(info) > _INFO_SHOWN:
            fields.append(("info", f"+{len(info) - _INFO_SHOWN} more"))
        return fields

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


#: diagnostics of ``info`` shown in a ``Directions`` summary
_INFO_SHOWN = 3


def _encoder_text(encoder: Encoder) -> str:
    """``TopK(k=4)``: the encoder's type and its static settings (its arrays are not shown)."""
    static = [f"{f.name}={getattr(encoder, f.name)!r}" for f in dataclasses.fields(encoder)
              if f.metadata.get("static")] if dataclasses.is_dataclass(encoder) else []
    return f"{type(encoder).__name__}({', '.join(static)})"


jax.tree_util.register_dataclass(Directions)


def validate_data(x, name: str = "x", *, k: int | None = None, k_name: str = "k",
                  nonnegative: bool = False, max_k: str = "samples") -> jax.Array:
    """Check activations for a learner and return them as a jax array.

    Shape and dtype are checked always (also at trace time); finiteness and signs only on
    concrete arrays.

    Args:
      x: ``[n, d]`` floating activations, finite (and non-negative when ``nonnegative``).
      name: argument name used in error messages.
      k: number of directions requested; must be at most ``n`` (``max_k="samples"``),
        ``min(n, d)`` (``"rank"``) or unbounded (``"none"``).
      k_name: argument name of ``k``.
      nonnegative: reject negative entries (NMF).

    Returns:
      ``x`` as a jax array; float16 and bfloat16 data come back as float32 (half precision is
      computed in float32).
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"`{name}` must be a floating array [n, d]; got {type(x).__name__}.")
    if getattr(x, "dtype", None) == jnp.bfloat16:
        x = jnp.asarray(x, jnp.float32)
    check_rank(x, name, 2)
    check_floating(x, name)
    check_finite(x, name)
    if nonnegative:
        check_nonnegative(x, name)
    n, d = np.shape(x)
    if n < 1 or d < 1:
        raise ValueError(f"`{name}` must have at least one row and one column; got shape {(n, d)}.")
    if k is not None:
        if max_k == "samples":
            check_positive_int(k, k_name, maximum=n, maximum_name=f"number of rows of `{name}`")
        elif max_k == "rank":
            check_positive_int(k, k_name, maximum=min(n, d),
                               maximum_name=f"min(n_samples, n_features) of `{name}`")
        else:
            check_positive_int(k, k_name)
    return compute_dtype(jnp.asarray(x))


def compute_dtype(x: jax.Array) -> jax.Array:
    """``x`` in float32 when it is in half precision (float16, bfloat16), else unchanged."""
    return x.astype(jnp.float32) if jnp.finfo(x.dtype).bits < 32 else x


def unstack(directions: Directions) -> list[Directions]:
    """Split ``Directions`` stacked on a leading axis (e.g. from a ``vmap`` sweep) into a list."""
    if not isinstance(directions, Directions):
        raise TypeError(f"`directions` must be Directions from fit(...); got {type(directions).__name__}.")
    if directions.components.ndim != 3:
        raise ValueError(f"`directions` must be stacked, with components [s, k, d]; "
                         f"got {directions.components.shape}.")
    n = directions.components.shape[0]
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], directions) for i in range(n)]
