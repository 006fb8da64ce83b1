"""The Interpretability Index (Klindt et al. 2023): mean pairwise similarity of top exemplars.

``II(unit) = mean_{i, j} sim(x_i, x_j)`` over the unit's ``k`` most activating inputs (``k = 5``
by default). With a distance-based similarity (``sim = -distance``) this is
``-(mean pairwise distance)``; higher is more interpretable. Vectorised over all units at once.

Self-pairs: the authors' code (david-klindt/Superposition, ``get_monosemanticity``) averages the
LPIPS distances of all ``k x k`` pairs, the ``k`` zero self-distances included; that is the
default here (``include_self_pairs=True``). The mean over the ``k (k - 1)`` distinct pairs is
related by

  ``II_all = (k - 1) / k * II_distinct + s_self / k``,

where ``s_self`` is the mean self-similarity (0 for every distance-based similarity, so then
``II_all = (k - 1) / k * II_distinct``; 1 for label agreement).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._display import array_summary, numbers_summary, summary_html, summary_repr, summary_treescope
from jaxinterp._validation import check_nonempty, check_positive_int, check_rank
from jaxinterp.interpretability.exemplars import as_compute_array, paper_top_indices
from jaxinterp.interpretability.similarity import (
    Similarity,
    as_similarity,
    check_indices,
    check_items,
    embed_items,
    pad_units,
    pairwise,
)

Array = jax.Array


class IndexResult(NamedTuple):
    """Interpretability Index of every unit.

    Attributes:
      scores: ``[units]`` II (higher = more interpretable).
      top_indices: ``[units, k]`` dataset indices of the exemplars that were compared.
    """

    scores: np.ndarray
    top_indices: np.ndarray

    def _summary(self) -> list[tuple[str, str | None]]:
        units, k = (np.shape(self.top_indices) + (None, None))[:2]
        return [("units", str(units)), ("k", str(k)),
                ("scores", numbers_summary(self.scores) or array_summary(self.scores))]

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


def index_from_embeddings(embeddings: Array, similarity: Similarity | str, *, include_self_pairs: bool = True,
                          unit_batch: int = 64) -> Array:
    """II from exemplar embeddings: mean similarity over the ``k*k`` (or ``k*(k-1)``) ordered pairs.

    Args:
      embeddings: ``[units, k, e]`` embeddings of each unit's ``k >= 2`` exemplars (finite;
        half precision is computed in float32).
      similarity: supplies ``compare``.
      include_self_pairs: average all ``k*k`` pairs, self-pairs included (the authors' II), or
        only the ``k*(k-1)`` distinct ones.
      unit_batch: units compared per vectorised step (bounds memory to ``unit_batch*k*k*e``).

    Returns:
      ``[units]`` scores.
    """
    similarity = as_similarity(similarity)
    check_rank(embeddings, "embeddings", 3)
    check_nonempty(embeddings, "embeddings")
    embeddings = as_compute_array(embeddings, "embeddings")
    k = embeddings.shape[1]
    if k < 2:
        raise ValueError(f"`embeddings` must hold at least 2 exemplars per unit; got shape {embeddings.shape}.")
    unit_batch = check_positive_int(unit_batch, "unit_batch")
    if not isinstance(include_self_pairs, (bool, np.bool_)):
        raise TypeError(f"`include_self_pairs` must be a bool; got {type(include_self_pairs).__name__}.")
    units = embeddings.shape[0]
    out = _index_jit(pad_units(embeddings), similarity, bool(include_self_pairs), unit_batch)
    return out if isinstance(out, jax.core.Tracer) else np.asarray(out)[:units]


def _index_one(emb: Array, similarity: Similarity, include_self_pairs: bool) -> Array:
    k = emb.shape[0]
    sims = pairwise(similarity, emb, emb)  # [k, k]
    if include_self_pairs:
        return jnp.mean(sims)
    off = 1.0 - jnp.eye(k, dtype=sims.dtype)
    return jnp.sum(sims * off) / (k * (k - 1))


def _index_impl(embeddings: Array, similarity: Similarity, include_self_pairs: bool, unit_batch: int) -> Array:
    return jax.lax.map(lambda e: _index_one(e, similarity, include_self_pairs), embeddings, batch_size=unit_batch)


_index_jit = jax.jit(_index_impl, static_argnums=(1, 2, 3))


def index_of_exemplars(top_indices, items, similarity: Similarity | str, *, include_self_pairs: bool = True,
                       unit_batch: int = 64, embed_batch: int = 1024, check_finite: bool = True) -> IndexResult:
    """II of every unit given its exemplars' dataset indices.

    Args:
      top_indices: ``[units, k]`` int indices into ``items`` (e.g. ``Exemplars.top_indices``).
      items: ``[n, ...]`` what the similarity compares (images, signals, labels, embeddings).
      similarity: a ``Similarity``.
      include_self_pairs: see ``index_from_embeddings``.
      unit_batch: units per vectorised step.
      embed_batch: items embedded per call.
      check_finite: refuse NaN/inf anywhere in ``items`` (see ``embed_items``).

    Returns:
      ``IndexResult``.
    """
    similarity = as_similarity(similarity)
    n = check_items(items, check_finite=check_finite)
    check_rank(top_indices, "top_indices", 2)
    top_indices = check_indices(top_indices, n, "top_indices")
    emb = embed_items(similarity, items, top_indices, batch_size=embed_batch, check_finite=False)
    scores = index_from_embeddings(emb, similarity, include_self_pairs=include_self_pairs, unit_batch=unit_batch)
    return IndexResult(np.asarray(scores), np.asarray(top_indices))


def interpretability_index(acts, items, similarity: Similarity | str, *, k: int = 5, include_self_pairs: bool = True,
                           unit_batch: int = 64, embed_batch: int = 1024, check_finite: bool = True) -> IndexResult:
    """Interpretability Index of every unit (column) of ``acts``.

    The authors compute it on the training split (and the 2AFC on the test split). The top
    exemplars are ranked as in their code (``paper_top_indices``: tied responses, the later input
    first).

    Args:
      acts: ``[n, units]`` responses of each unit or direction to the ``n`` inputs
        (float16/bfloat16 are ranked in float32).
      items: ``[n, ...]`` the inputs as the similarity sees them (same ``n``).
      similarity: e.g. ``pixel_l2()``, ``flax_deep_feature(model, params)``, or a built-in's name
        (``"pixel"``, ``"mean_colour"``; see ``similarity.NAMED``).
      k: number of top exemplars compared (the paper's default is 5), ``2 <= k <= n``.
      include_self_pairs: average all ``k x k`` pairs, the self-pairs included (default, as the
        authors; ``(k-1)/k`` of the distinct-pair mean for distances), or the distinct pairs.
      unit_batch: units per vectorised step.
      embed_batch: items embedded per call.
      check_finite: refuse NaN/inf anywhere in ``items`` (False: only in the compared exemplars).

    Returns:
      ``IndexResult`` with ``scores [units]`` and ``top_indices [units, k]``.

    Raises:
      ValueError: ``k`` outside ``[2, n]``, ``items`` and ``acts`` of different lengths, a unit
        with a constant response, NaN/inf in ``acts`` or in an exemplar's embedding.
    """
    similarity = as_similarity(similarity)
    check_rank(acts, "acts", 2)
    n = int(np.shape(acts)[0])
    check_items_match(items, n, check_finite)
    k = check_positive_int(k, "k", maximum=n, maximum_name="number of inputs in `acts`")
    if k < 2:
        raise ValueError("`k` must be >= 2: the index compares pairs of exemplars.")
    top = paper_top_indices(acts, k)
    return index_of_exemplars(top, items, similarity, include_self_pairs=include_self_pairs,
                              unit_batch=unit_batch, embed_batch=embed_batch, check_finite=False)


def check_items_match(items, n: int, check_finite: bool) -> None:
    """Validate ``items`` (see ``check_items``) and require one row per row of ``acts`` (``n``)."""
    if check_items(items, check_finite=check_finite) != n:
        raise ValueError(f"`items` must have one row per row of `acts` ({n}); got shape {tuple(np.shape(items))}.")
