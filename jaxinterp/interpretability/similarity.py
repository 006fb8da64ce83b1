"""Pluggable, batched similarity functions between inputs (images, signals, labels).

A ``Similarity`` is two pure functions: ``embed`` maps a batch of items to vectors, and
``compare`` maps two broadcastable stacks of vectors to a similarity (higher = more similar).
Every built-in similarity is minus a distance (pixel L2, mean-colour L2, LPIPS-style deep-feature
distance) or an agreement (labels), so the Interpretability Index ``II = mean pairwise
similarity`` equals ``-(mean pairwise distance)`` as in Klindt et al. (2023).

Items are embedded once (only those that are exemplars), then compared in batches under ``jit``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int, check_rank

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Similarity:
    """A similarity between items, as an embedding and a comparison of embeddings.

    Attributes:
      name: short name used in reports (``"pixel_l2"``, ``"lpips_like"``, ...).
      embed: ``embed(items [n, ...]) -> [n, e]``; jittable, applied in batches.
      compare: ``compare(a [..., e], b [..., e]) -> [...]`` similarity of broadcast pairs;
        jittable and elementwise over the leading axes.
      maximum: the similarity of an item with itself (the largest possible value), or None.
    """

    name: str
    embed: Callable[[Array], Array]
    compare: Callable[[Array, Array], Array]
    maximum: float | None = None


def neg_euclidean(a: Array, b: Array) -> Array:
    """Minus the Euclidean distance along the last axis, ``[..., e] x [..., e] -> [...]``.

    The difference is scaled by its largest entry before squaring, so inputs near 1e30 do not
    overflow float32 (``||d|| = m * ||d / m||``, ``m = max |d|``).
    """
    d = a - b
    m = jnp.max(jnp.abs(d), axis=-1)
    safe = jnp.where(m > 0, m, 1.0)
    return -m * jnp.sqrt(jnp.sum(jnp.square(d / safe[..., None]), axis=-1))


def neg_sq_euclidean(a: Array, b: Array) -> Array:
    """Minus the squared Euclidean distance along the last axis, ``[..., e] x [..., e] -> [...]``."""
    return -jnp.sum(jnp.square(a - b), axis=-1)


def dot(a: Array, b: Array) -> Array:
    """Inner product along the last axis, ``[..., e] x [..., e] -> [...]``."""
    return jnp.sum(a * b, axis=-1)


def _flatten(x: Array) -> Array:
    return jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)


def pixel_l2() -> Similarity:
    """Minus the Euclidean distance between the flattened inputs (pixels, samples)."""
    return Similarity("pixel_l2", _flatten, neg_euclidean, 0.0)


def _mean_colour(x: Array) -> Array:
    if x.ndim < 3:
        raise ValueError(f"`items`: mean-colour similarity needs items [n, *spatial, channels] (rank >= 3); "
                         f"got shape {x.shape}.")
    return jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))


def mean_colour_l2() -> Similarity:
    """Minus the Euclidean distance between per-channel spatial means (channels-last items)."""
    return Similarity("mean_colour_l2", _mean_colour, neg_euclidean, 0.0)


#: similarities that take no arguments, accepted by name wherever a ``Similarity`` is (short
#: aliases included: ``"pixel"``, ``"mean_colour"``, ``"mean_color"``)
NAMED = {"pixel_l2": pixel_l2, "pixel": pixel_l2, "mean_colour_l2": mean_colour_l2, "mean_colour": mean_colour_l2,
         "mean_color_l2": mean_colour_l2, "mean_color": mean_colour_l2}


def as_similarity(similarity: Similarity | str, name: str = "similarity") -> Similarity:
    """``similarity`` itself, or the built-in one of that name (a key of ``NAMED``, e.g. ``"pixel"``).

    Args:
      similarity: a ``Similarity`` or a name in ``NAMED``.
      name: the argument's name in error messages.

    Raises:
      KeyError: an unknown name (the message lists the known names, and how to build the
        similarities that need arguments).
      TypeError: anything that is neither a ``Similarity`` nor a string.
    """
    if isinstance(similarity, Similarity):
        return similarity
    if isinstance(similarity, str):
        if similarity not in NAMED:
            raise KeyError(f"`{name}`: unknown similarity {similarity!r}; known by name: {', '.join(sorted(NAMED))} "
                           f"(or pass a Similarity such as label_agreement(n_classes), deep_feature(features_fn) "
                           f"or flax_deep_feature(model, params)).")
        return NAMED[similarity]()
    raise TypeError(f"`{name}` must be a Similarity or one of {sorted(NAMED)}; got {type(similarity).__name__}.")


def label_agreement(n_classes: int) -> Similarity:
    """1 if two items have the same integer label, else 0 (items are labels ``[n]`` in ``[0, n_classes)``).

    A label outside ``[0, n_classes)`` is an error (raised by ``embed_items``, naming the items).
    """
    n_classes = check_positive_int(n_classes, "n_classes")

    def embed(labels: Array) -> Array:
        if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(f"`items`: label agreement needs integer labels of shape [n]; got "
                            f"{labels.dtype} {labels.shape}.")
        inside = (labels >= 0) & (labels < n_classes)
        # a label outside [0, n_classes) embeds as NaN, which `embed_items` refuses naming the items
        return jnp.where(inside[:, None], jax.nn.one_hot(labels, n_classes, dtype=jnp.float32), jnp.nan)

    return Similarity("label_agreement", embed, dot, 1.0)


def lpips_embedding(features: Sequence[Array], eps: float = 1e-10) -> Array:
    """Concatenated, LPIPS-normalised feature maps whose squared distance is the LPIPS-style one.

    Each layer ``f [n, *spatial, c]`` (or ``[n, c]``) is unit-normalised along channels at every
    position and divided by ``sqrt(prod(spatial))``, so that
    ``||emb(x) - emb(y)||^2 = sum_layers mean_positions ||f_hat(x) - f_hat(y)||^2``.

    Args:
      features: per-layer activations, each ``[n, *spatial, channels]`` with the same ``n``.
      eps: added to the channel norm (as in LPIPS) so all-zero vectors stay zero.

    Returns:
      ``[n, e]`` embedding.
    """
    if len(features) == 0:
        raise ValueError("`features` must hold at least one layer.")
    n = features[0].shape[0]
    parts = []
    for i, f in enumerate(features):
        if f.ndim < 2 or f.shape[0] != n:
            raise ValueError(f"feature layer {i} must have shape [{n}, ..., channels]; got {f.shape}.")
        f = f.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True))
        positions = int(np.prod(f.shape[1:-1])) if f.ndim > 2 else 1
        parts.append(jnp.reshape(f / (norm + eps), (n, -1)) / np.sqrt(positions))
    return jnp.concatenate(parts, axis=-1)


def deep_feature(features_fn: Callable[[Array], Sequence[Array] | Mapping[str, Array]],
                 name: str = "lpips_like") -> Similarity:
    """LPIPS-style deep-feature similarity from a user-supplied feature extractor.

    ``sim(x, y) = -sum_l mean_positions ||f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|||^2`` with channel-wise
    unit normalisation (the unweighted LPIPS distance of Zhang et al. 2018).

    Args:
      features_fn: ``items [n, ...] -> list (or dict) of layer activations [n, *spatial, c]``,
        e.g. the intermediate ReLU outputs of a trained Flax network; must be jittable.
      name: name shown in reports.
    """

    def embed(x: Array) -> Array:
        feats = features_fn(x)
        if isinstance(feats, Mapping):
            feats = [feats[k] for k in sorted(feats)]
        return lpips_embedding(list(feats))

    return Similarity(name, embed, neg_sq_euclidean, 0.0)


def network_features(fn: Callable[[Array], Array], layers: Sequence[str] | None = None
                     ) -> Callable[[Array], dict[str, Array]]:
    """Post-ReLU intermediate layers of ``fn`` (any JAX function of a batch) via ``capture``.

    Args:
      fn: ``x [n, ...] -> outputs``, e.g. ``lambda x: model.apply(params, x)``.
      layers: glob patterns of capture names (``"Conv_*"``, ``"Dense_0/relu"``; without the
        ``:post`` suffix) to keep; None keeps every ReLU layer.

    Returns:
      ``features_fn(x) -> {name: [n, *spatial, c]}`` to pass to ``deep_feature``.
    """
    from jaxinterp.capture import POST_SUFFIX, capture

    def features_fn(x: Array) -> dict[str, Array]:
        _, acts = capture(fn, post_activations=True)(x)
        post = {k[: -len(POST_SUFFIX)]: v for k, v in acts.items() if k.endswith(POST_SUFFIX)}
        if layers is not None:
            post = {k: v for k, v in post.items() if any(fnmatch.fnmatchcase(k, p) for p in layers)}
            if not post:
                raise KeyError(f"no captured ReLU layer matches {list(layers)}; available: "
                               f"{sorted(k[: -len(POST_SUFFIX)] for k in acts if k.endswith(POST_SUFFIX))}.")
        return post

    return features_fn


def flax_deep_feature(model, params, layers: Sequence[str] | None = None,
                      name: str = "lpips_like") -> Similarity:
    """LPIPS-style similarity from a trained Flax Linen ``model`` with ``params``.

    The intermediate ReLU outputs (``layers``: glob patterns of capture names such as
    ``"Conv_*"``; None: every ReLU layer) are captured and compared as in ``deep_feature``.
    """

    def fn(x):
        return model.apply(params, x)

    return deep_feature(network_features(fn, layers), name=name)


def embed_items(similarity: Similarity | str, items, indices, *, batch_size: int = 1024,
                check_finite: bool = True) -> np.ndarray:
    """Embeddings of ``items[indices]``, embedding each distinct index once, in jitted batches.

    Args:
      similarity: the similarity whose ``embed`` is used.
      items: ``[n, ...]`` the dataset (numpy or jax; images, signals or labels).
      indices: int array of any shape ``[*s]`` with values in ``[0, n)``.
      batch_size: items embedded per call.
      check_finite: refuse NaN/inf anywhere in floating ``items`` (a pass over the data in
        blocks); False checks only the embeddings of the selected items (faster on huge data).

    Returns:
      ``[*s, e]`` float32 embeddings (a numpy array); half-precision items are embedded in float32.

    Raises:
      ValueError: empty ``indices`` or an index outside ``[0, n)``, NaN/inf in ``items``, or an
        item whose embedding is NaN or infinite (a score computed from it would be NaN or
        meaningless).
      TypeError: ``items`` that is not an array, non-integer ``indices``.
    """
    similarity = as_similarity(similarity)
    batch_size = check_positive_int(batch_size, "batch_size")
    n = check_items(items, check_finite=check_finite)
    idx = check_indices(indices, n)
    uniq, inverse = np.unique(idx.reshape(-1), return_inverse=True)
    embed = _jitted_embed(similarity)
    items_np = items if isinstance(items, np.ndarray) else np.asarray(items)
    size = min(batch_size, bucket_size(len(uniq)))  # few distinct shapes -> few compilations
    chunks = []
    for start in range(0, len(uniq), size):
        sel = uniq[start : start + size]
        batch = items_np[sel]
        if len(sel) < size:
            batch = np.concatenate([batch, np.repeat(batch[:1], size - len(sel), axis=0)], axis=0)
        chunks.append(np.asarray(embed(jnp.asarray(batch)))[: len(sel)])
    table = np.concatenate(chunks, axis=0)
    check_rank(table, "similarity.embed(items)", 2)
    _check_finite_rows(table, uniq, similarity.name)
    return table[inverse].reshape(*idx.shape, table.shape[-1])


#: rows of ``items`` checked for finiteness at a time (bounds the temporary boolean mask)
_FINITE_BLOCK_BYTES = 64 << 20


def check_items(items, name: str = "items", *, check_finite: bool = True) -> int:
    """Validate a dataset ``items [n, ...]`` (numpy, jax or memmap) and return ``n``.

    Raises TypeError unless ``items`` is an array of numbers (a list is converted), ValueError
    for rank 0, no rows, or (``check_finite``) NaN/inf in floating items, checked in row blocks
    so a memmap is never loaded whole.
    """
    if items is None or isinstance(items, (str, bytes)):
        raise TypeError(f"`{name}` must be an array [n, ...]; got {type(items).__name__}.")
    dtype = getattr(items, "dtype", None)
    if dtype is None:
        dtype = np.asarray(items).dtype
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_) or dtype.name == "bfloat16"):
        raise TypeError(f"`{name}` must hold numbers; got dtype {dtype}.")
    shape = tuple(np.shape(items))
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError(f"`{name}` must be an array [n, ...] with n >= 1; got shape {shape}.")
    if check_finite and (np.issubdtype(dtype, np.inexact) or dtype.name == "bfloat16"):
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize)
        step = max(1, _FINITE_BLOCK_BYTES // row_bytes)
        for start in range(0, shape[0], step):
            block = np.asarray(items[start : start + step], np.float32)
            if not np.all(np.isfinite(block)):
                bad = start + np.flatnonzero(~np.all(np.isfinite(block.reshape(len(block), -1)), axis=1))
                shown = ", ".join(str(int(i)) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
                raise ValueError(f"`{name}` contains NaN or infinite values (rows [{shown}]); clean them first, or "
                                 f"pass check_finite=False to check only the items that are compared.")
    return int(shape[0])


def check_indices(indices, n: int, name: str = "indices") -> np.ndarray:
    """``indices`` as a non-empty integer numpy array with values in ``[0, n)`` (else an error naming it)."""
    if indices is None or isinstance(indices, (str, bytes)):
        raise TypeError(f"`{name}` must be an integer array; got {type(indices).__name__}.")
    idx = np.asarray(indices)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"`{name}` must be integers; got {idx.dtype}.")
    if idx.size == 0:
        raise ValueError(f"`{name}` must select at least one item; got shape {idx.shape}.")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"`{name}` must lie in [0, {n}) (the number of items); got range "
                         f"[{idx.min()}, {idx.max()}].")
    return idx


def _check_finite_rows(table: np.ndarray, item_indices: np.ndarray, name: str) -> None:
    """Raise ValueError naming ``items`` (and the offending indices) if an embedding is NaN/inf."""
    bad = ~np.all(np.isfinite(table), axis=1)
    if np.any(bad):
        idx = item_indices[bad]
        shown = ", ".join(str(int(i)) for i in idx[:10]) + (" ..." if idx.size > 10 else "")
        raise ValueError(f"`items`: {idx.size} item(s) have NaN or infinite {name!r} embeddings (NaN or inf in "
                         f"the items, labels outside the similarity's classes, or an overflow in its features): "
                         f"items [{shown}]. Clean them or drop them first.")


def bucket_size(n: int) -> int:
    """The smallest power of two >= ``n`` (array sizes are padded to it to limit recompilation)."""
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=64)
def _jitted_embed(similarity: Similarity) -> Callable:
    return jax.jit(similarity.embed)


def pairwise(similarity: Similarity, a: Array, b: Array) -> Array:
    """All-pairs similarities ``[..., n, e] x [..., m, e] -> [..., n, m]``."""
    return similarity.compare(a[..., :, None, :], b[..., None, :, :])


def precomputed(similarity: Similarity | str) -> Similarity:
    """The same similarity acting on embeddings already computed with ``similarity.embed``.

    Embed a dataset once (``embed_items(sim, x, np.arange(len(x)))``) and score many sets of
    units or directions against the table, passing ``precomputed(sim)`` and the table as items.
    """
    similarity = as_similarity(similarity)
    return Similarity(similarity.name, _as_float_rows, similarity.compare, similarity.maximum)


def _as_float_rows(e: Array) -> Array:
    return jnp.reshape(e, (e.shape[0], -1)).astype(jnp.float32)


def pad_units(x: Array) -> Array:
    """Pad axis 0 of ``x`` to ``bucket_size`` by repeating its first row (results are sliced back).

    Under ``jit`` (abstract shapes) ``x`` is returned unchanged.
    """
    n = x.shape[0]
    m = bucket_size(n)
    if m == n or isinstance(x, jax.core.Tracer):
        return x
    x = np.asarray(x)
    return np.concatenate([x, np.broadcast_to(x[:1], (m - n, *x.shape[1:]))], axis=0)
