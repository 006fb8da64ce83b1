"""PRNG keys derived by name, so that no two uses of a root key collide.

``named_key(key, "train", "mlp")`` folds a stable hash of each name into ``key``: the same names
give the same key whatever the order in which a program asks for them, and different names
give independent keys (unlike ``key(seed + width)``, where seed 1 / width 8 and seed 8 /
width 1 coincide).
"""

from __future__ import annotations

import hashlib

import jax

__all__ = ["name_hash", "named_key"]


def name_hash(name: str | int) -> int:
    """A stable 31-bit hash of ``name`` (its ``str``), the same in every process and run."""
    digest = hashlib.sha256(str(name).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def named_key(key: jax.Array, *names: str | int) -> jax.Array:
    """The key for the use called ``names`` (a path: ``"directions", "sae", 3``) under ``key``.

    Args:
      key: a typed PRNG key from ``jax.random.key``.
      names: one or more names (strings or integers), folded in one after another.

    Returns:
      A typed PRNG key; equal for equal ``(key, names)``, independent otherwise.
    """
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError("`key` must be a typed PRNG key from jax.random.key(seed); "
                        f"got {type(key).__name__} {getattr(key, 'dtype', '')}.")
    if not names:
        raise ValueError("`names` must name at least one use of the key.")
    for name in names:
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise TypeError(f"`names` must be strings or integers; got {type(name).__name__}.")
        key = jax.random.fold_in(key, name_hash(name))
    return key
