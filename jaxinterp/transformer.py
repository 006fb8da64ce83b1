"""A small Flax Linen transformer and the modular-addition task it is trained on.

The task is the grokking setting (Power et al. 2022; Nanda et al. 2023): the sequence
``[a, b, =]`` of tokens ``a, b`` in ``0 .. p-1`` and ``=`` (token ``p``) is mapped to
``(a + b) mod p``, read from the last position. The model is a pre-layer-norm transformer:
token and position embeddings, ``n_layers`` blocks of multi-head softmax attention and a GELU
MLP on a residual stream, a final layer norm and an unembedding. Its modules are named so that
``capture(model.apply, rules="activations", modules=True)`` reports, per block ``Block_i``,
the attention pattern (``Block_i/Attention_0/softmax:post``), the MLP's GELU pre-activation
(``Block_i/mlp_in/gelu``) and the block's output, the residual stream (``Block_i``).

Trained with ``models.train_classifier`` (AdamW with weight decay, the setting in which
modular addition generalises): tokens are passed as floats and cast back to integers inside
the model, so the classifier trainer and its compilation cache are reused unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int
from jaxinterp.keys import named_key

__all__ = ["Transformer", "ModularAddition", "modular_addition", "TrainedTransformer", "train_modular_addition",
           "fourier_sparsity"]


class Attention(nn.Module):
    """Multi-head causal softmax self-attention on ``[batch, seq, d_model]``.

    Attributes:
      n_heads: number of heads; ``d_model`` must be divisible by it.
    """

    n_heads: int

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        h = self.n_heads
        q = nn.Dense(d, use_bias=False, name="query")(x).reshape(b, t, h, d // h)
        k = nn.Dense(d, use_bias=False, name="key")(x).reshape(b, t, h, d // h)
        v = nn.Dense(d, use_bias=False, name="value")(x).reshape(b, t, h, d // h)
        scores = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(d // h).astype(x.dtype)
        mask = jnp.tril(jnp.ones((t, t), bool))
        pattern = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(x.dtype).min), axis=-1)
        z = jnp.einsum("bhts,bshd->bthd", pattern, v).reshape(b, t, d)
        return nn.Dense(d, use_bias=False, name="out")(z)


class Block(nn.Module):
    """A pre-layer-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    Attributes:
      n_heads: attention heads.
      d_mlp: MLP width (GELU, exact erf form).
    """

    n_heads: int
    d_mlp: int

    @nn.compact
    def __call__(self, x):
        x = x + Attention(self.n_heads)(nn.LayerNorm()(x))
        hidden = nn.gelu(nn.Dense(self.d_mlp, name="mlp_in")(nn.LayerNorm()(x)), approximate=False)
        return x + nn.Dense(x.shape[-1], name="mlp_out")(hidden)


class Transformer(nn.Module):
    """Token sequence ``[batch, seq]`` (ints, or floats holding ints) to logits ``[batch, n_out]``.

    Attributes:
      vocab: token vocabulary size.
      n_out: number of output classes (read from the last position).
      seq_len: maximum sequence length (position embeddings).
      d_model: residual-stream width.
      n_heads: attention heads per block.
      d_mlp: MLP width.
      n_layers: number of blocks.
    """

    vocab: int
    n_out: int
    seq_len: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    n_layers: int = 1

    @nn.compact
    def __call__(self, tokens):
        tokens = jnp.asarray(tokens).astype(jnp.int32)
        x = nn.Embed(self.vocab, self.d_model, name="embed")(tokens)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.seq_len, self.d_model))[: tokens.shape[-1]]
        x = x + pos.reshape((1,) * (x.ndim - 2) + pos.shape)
        for i in range(self.n_layers):
            x = Block(self.n_heads, self.d_mlp, name=f"Block_{i}")(x)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.n_out, use_bias=False, name="unembed")(x[:, -1])


class ModularAddition(NamedTuple):
    """Modular-addition data: every pair ``(a, b)``, split into train and test.

    Attributes:
      x_train, x_test: float ``[n, 3]`` token sequences ``[a, b, p]``.
      y_train, y_test: int ``[n]`` labels ``(a + b) mod p``.
      p: the modulus.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    p: int


def modular_addition(p: int, *, train_fraction: float = 0.5, key: jax.Array) -> ModularAddition:
    """All ``p * p`` sequences ``[a, b, =]`` with labels ``(a + b) mod p``, randomly split.

    Args:
      p: the modulus (>= 2); tokens ``0 .. p-1`` and ``=`` as token ``p``.
      train_fraction: fraction of the ``p * p`` pairs in the training split, in (0, 1).
      key: PRNG key of the split.

    Returns:
      A ``ModularAddition``.
    """
    p = check_positive_int(p, "p")
    if p < 2:
        raise ValueError(f"`p` must be at least 2; got {p}.")
    if not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"`train_fraction` must lie in (0, 1); got {train_fraction}.")
    a, b = np.divmod(np.arange(p * p), p)
    x = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.float32)
    y = ((a + b) % p).astype(np.int32)
    order = np.asarray(jax.random.permutation(key, p * p))
    n_train = min(max(int(round(train_fraction * p * p)), 1), p * p - 1)
    tr, te = order[:n_train], order[n_train:]
    return ModularAddition(x[tr], y[tr], x[te], y[te], p)


class TrainedTransformer(NamedTuple):
    """A transformer trained on modular addition.

    Attributes:
      model: the ``Transformer``.
      params: its parameters.
      data: the ``ModularAddition`` split it was trained on.
      train_accuracy, test_accuracy: accuracies on the two splits.
      losses: per-step training loss ``[steps]``.
    """

    model: Transformer
    params: dict
    data: ModularAddition
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray


def train_modular_addition(p: int = 23, *, key: jax.Array, steps: int = 3000, train_fraction: float = 0.5,
                           d_model: int = 64, n_heads: int = 4, d_mlp: int = 256, n_layers: int = 1,
                           batch_size: int = 256, learning_rate: float = 3e-3, weight_decay: float = 1.0,
                           progress: bool = False) -> TrainedTransformer:
    """Train a ``Transformer`` on ``modular_addition(p)`` with AdamW (``models.train_classifier``).

    Args:
      p: the modulus.
      key: PRNG key; the split and the training derive named keys from it.
      steps: optimisation steps.
      train_fraction: fraction of the pairs used for training.
      d_model, n_heads, d_mlp, n_layers: model size.
      batch_size: minibatch size.
      learning_rate: peak learning rate (cosine decay).
      weight_decay: decoupled weight decay (large values give generalisation).
      progress: show a progress bar.

    Returns:
      A ``TrainedTransformer`` with train and test accuracy.
    """
    from jaxinterp import models

    data = modular_addition(p, train_fraction=train_fraction, key=named_key(key, "split"))
    model = Transformer(vocab=p + 1, n_out=p, seq_len=3, d_model=check_positive_int(d_model, "d_model"),
                        n_heads=check_positive_int(n_heads, "n_heads"), d_mlp=check_positive_int(d_mlp, "d_mlp"),
                        n_layers=check_positive_int(n_layers, "n_layers"))
    if d_model % n_heads:
        raise ValueError(f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads}).")
    params, history = models.train_classifier(
        model, data.x_train, data.y_train, key=named_key(key, "train"), steps=steps,
        batch_size=min(batch_size, len(data.y_train)), learning_rate=learning_rate, weight_decay=weight_decay,
        progress=progress)
    return TrainedTransformer(model, params, data, models.accuracy(model, params, data.x_train, data.y_train),
                              models.accuracy(model, params, data.x_test, data.y_test), np.asarray(history.loss))


def fourier_sparsity(embedding: np.ndarray, *, top: int = 8) -> float:
    """Fraction of the token embedding's norm in its ``top`` largest Fourier frequencies.

    A network that solves modular addition with the Fourier algorithm (Nanda et al. 2023) embeds
    token ``a`` through ``cos(w a)``, ``sin(w a)`` for a few frequencies ``w``: the power of its
    ``[p, d]`` embedding over the token axis concentrates on a few frequencies.

    Args:
      embedding: ``[p, d]`` embedding rows of the tokens ``0 .. p-1``.
      top: number of frequencies counted.

    Returns:
      The fraction of the total (non-constant) power in the ``top`` strongest frequencies, in [0, 1].
    """
    e = np.asarray(embedding, np.float64)
    if e.ndim != 2:
        raise ValueError(f"`embedding` must be [p, d]; got shape {e.shape}.")
    power = (np.abs(np.fft.rfft(e - e.mean(0), axis=0)) ** 2).sum(1)[1:]
    return float(np.sort(power)[::-1][:top].sum() / power.sum())
