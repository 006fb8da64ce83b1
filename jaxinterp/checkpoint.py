"""Checkpoints of pytrees that lose nothing: atomic, verified ``.npz`` files, the last two kept.

A checkpoint holds the leaves of one pytree (its structure comes back from a template with the
same structure, e.g. the freshly initialised state), typed PRNG keys included, plus a manifest:
a small JSON ``metadata`` dict and a SHA-256 checksum of every stored array.

Writing never destroys the last good checkpoint: the new file is written under a temporary
name and fsynced, then the current checkpoint becomes the previous one (``<name>.prev``) and the
new file is renamed into place, so the file at ``path`` always exists and at most one of the two
can be damaged by a crash. Loading verifies the checksums; if the newest file is truncated,
empty, bit-flipped or not a checkpoint at all, a warning names it and the previous checkpoint is
used; if neither is usable, ``CheckpointError`` names both files and what is wrong with each.

Example::

    save_pytree(path, state, metadata={"steps_done": 500, "fingerprint": fp})
    state, meta = load_pytree(path, like=state)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import types
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxinterp._warnings import CheckpointFallbackWarning

__all__ = ["CheckpointError", "describe", "exists", "fingerprint", "load_pytree", "previous_path",
           "read_metadata", "save_pytree"]

_META = "__metadata__"
_KEY_IMPL = "__key_impl_{}__"
_FORMAT = 2


class CheckpointError(ValueError):
    """No usable checkpoint: the file(s) are missing, truncated, corrupted or not checkpoints."""


def _is_typed_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def previous_path(path: str | os.PathLike) -> Path:
    """Where the previous good checkpoint of ``path`` is kept: ``<path>.prev``."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def exists(path: str | os.PathLike) -> bool:
    """True when a checkpoint (the newest or the previous one) exists at ``path``."""
    return Path(path).exists() or previous_path(path).exists()


def _digest(arr: np.ndarray) -> str:
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:     # not possible on every platform; the file itself is fsynced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _keep_as_previous(path: Path) -> None:
    """Make the current ``path`` the previous checkpoint, leaving ``path`` in place."""
    prev = previous_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{prev.name}.", suffix=".tmp")
    os.close(fd)
    os.remove(tmp)
    try:
        os.link(path, tmp)              # no copy where hard links work
    except OSError:
        shutil.copy2(path, tmp)
    os.replace(tmp, prev)


def save_pytree(path: str | os.PathLike, tree: Any, *, metadata: dict | None = None,
                keep_previous: bool = True) -> Path:
    """Write the leaves of ``tree`` (and ``metadata``) to ``path`` atomically, with checksums.

    Args:
      path: target file (conventionally ``*.npz``); its folder is created if missing.
      tree: any pytree of arrays (jax or numpy, typed PRNG keys allowed) and Python scalars.
      metadata: JSON-serialisable dict stored beside the arrays (e.g. steps done, a config
        fingerprint).
      keep_previous: keep the checkpoint being replaced as ``previous_path(path)``, the
        fallback when the new one turns out unreadable.

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays: dict[str, np.ndarray] = {}
    for i, leaf in enumerate(leaves):
        if _is_typed_key(leaf):
            arrays[_KEY_IMPL.format(i)] = np.asarray(str(jax.random.key_impl(leaf)))
            leaf = jax.random.key_data(leaf)
        arrays[f"leaf_{i}"] = np.asarray(leaf)
    meta = {"format": _FORMAT, "n_leaves": len(leaves), "treedef": str(jax.tree_util.tree_structure(tree)),
            "user": metadata or {}, "sha256": {name: _digest(a) for name, a in arrays.items()}}
    arrays[_META] = np.asarray(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)   # mkstemp creates 0600; checkpoints are ordinary files
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_as_previous(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _read_verified(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(manifest, arrays)`` of one file, every checksum verified; CheckpointError otherwise."""
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with data:
                arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, empty or not a checkpoint): "
                              f"{type(err).__name__}: {err}") from None
    if _META not in arrays:
        raise CheckpointError(f"checkpoint {path} has no manifest; it was not written by save_pytree")
    try:
        meta = json.loads(str(arrays.pop(_META)))
        sums = meta.get("sha256")    # None: written before checksums were stored
        meta["n_leaves"], meta["treedef"], meta["user"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"checkpoint {path} has a damaged manifest") from None
    if sums is None:
        return meta, arrays
    if set(sums) != set(arrays):
        raise CheckpointError(f"checkpoint {path} does not hold the arrays its manifest lists")
    bad = [name for name, arr in arrays.items() if _digest(arr) != sums[name]]
    if bad:
        raise CheckpointError(f"checkpoint {path} is corrupted: checksum mismatch in {', '.join(sorted(bad))}")
    return meta, arrays


def _read_newest_usable(path: str | os.PathLike) -> tuple[Path, dict, dict[str, np.ndarray]]:
    """The newest of ``path`` and its previous checkpoint that verifies, warning about a fallback."""
    path = Path(path)
    errors = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            errors.append(f"{candidate} does not exist")
            continue
        try:
            meta, arrays = _read_verified(candidate)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if candidate != path:
            warnings.warn(f"{errors[0]}; resuming from the previous checkpoint {candidate} instead.",
                          CheckpointFallbackWarning, stacklevel=3)
        return candidate, meta, arrays
    raise CheckpointError("no usable checkpoint: " + "; ".join(errors)
                          + ". Delete these files to start afresh.")


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict of the newest usable checkpoint at ``path`` (see ``load_pytree``)."""
    return _read_newest_usable(path)[1]["user"]


def load_pytree(path: str | os.PathLike, like: Any | Callable[[dict], Any]) -> tuple[Any, dict]:
    """Read the newest usable checkpoint at ``path`` back into the structure of ``like``.

    The checkpoint at ``path`` is verified against its checksums; if it is unusable a
    ``CheckpointFallbackWarning`` (a ``RuntimeWarning``) names it and ``previous_path(path)`` is read instead.

    Args:
      path: checkpoint file.
      like: a pytree with the same structure, leaf shapes and dtypes as the one saved (only
        its structure, shapes and dtypes are used), or a function ``like(metadata) -> pytree``
        for templates that depend on the stored metadata (e.g. on the steps done).

    Returns:
      ``(tree, metadata)``: numpy leaves (typed PRNG keys rebuilt as jax key arrays) and the
      stored metadata.

    Raises:
      CheckpointError: neither the checkpoint nor the previous one is usable (the message names
        both files and what is wrong with each).
      ValueError: the checkpoint's structure, shapes or dtypes differ from ``like``.
    """
    used, meta, arrays = _read_newest_usable(path)
    if callable(like):
        like = like(meta["user"])
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    if meta["n_leaves"] != len(like_leaves) or meta["treedef"] != str(treedef):
        raise ValueError(
            f"checkpoint {used} holds a different pytree structure: {meta['treedef']} "
            f"({meta['n_leaves']} leaves); expected {treedef} ({len(like_leaves)} leaves).")
    leaves = [_restore_leaf(used, i, ref, arrays) for i, ref in enumerate(like_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves), meta["user"]


def _restore_leaf(path: Path, i: int, ref, arrays: dict[str, np.ndarray]):
    arr = arrays[f"leaf_{i}"]
    impl_name = _KEY_IMPL.format(i)
    if impl_name in arrays:
        if not _is_typed_key(ref):
            raise ValueError(f"checkpoint {path}: leaf {i} is a PRNG key, the template's is not.")
        arr = jax.random.wrap_key_data(arr, impl=str(arrays[impl_name]))
    ref_shape = ref.shape if hasattr(ref, "shape") else np.shape(ref)
    ref_dtype = ref.dtype if hasattr(ref, "dtype") else np.asarray(ref).dtype
    if tuple(arr.shape) != tuple(ref_shape) or arr.dtype != ref_dtype:
        raise ValueError(
            f"checkpoint {path}: leaf {i} has shape {tuple(arr.shape)} and dtype {arr.dtype}; "
            f"expected {tuple(ref_shape)} and {ref_dtype}.")
    return arr


# ------------------------------------------------------------------ fingerprints of run settings

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe(obj: Any, _depth: int = 0) -> str:
    """A stable text description of ``obj`` for run fingerprints, the same in every process.

    Values, containers, dataclasses (configs, Flax modules) and arrays (by a hash of their
    bytes) are described by content; functions by their qualified name, a hash of their code,
    their defaults and the values they close over (so ``optax.adamw(1e-3)`` and
    ``optax.adamw(2e-3)``, or two closures over different ``l1``, differ). Memory addresses
    never enter the description.

    Args:
      obj: anything.

    Returns:
      A string; equal for objects that compute the same thing.
    """
    if _depth > 12:
        return "..."
    d = functools.partial(describe, _depth=_depth + 1)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return repr(obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(jax.random.key_data(obj)) if _is_typed_key(obj) else np.asarray(obj)
        return f"array{arr.shape}{arr.dtype}:{_digest(arr)[:16]}"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = ", ".join(f"{f.name}={d(getattr(obj, f.name, None))}" for f in dataclasses.fields(obj))
        return f"{type(obj).__qualname__}({fields})"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__qualname__}[" + ", ".join(d(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{d(k)}: {d(v)}" for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))) + "}"
    if isinstance(obj, functools.partial):
        return f"partial({d(obj.func)}, {d(obj.args)}, {d(obj.keywords)})"
    if isinstance(obj, types.MethodType):
        return f"method({d(obj.__func__)}, {d(obj.__self__)})"
    if isinstance(obj, types.CodeType):
        consts = ", ".join(d(c) for c in obj.co_consts)
        return f"code:{hashlib.sha256(obj.co_code).hexdigest()[:16]}[{consts}]"
    if isinstance(obj, types.FunctionType):
        cells = [c.cell_contents if _cell_full(c) else "<empty>" for c in (obj.__closure__ or ())]
        return (f"fn {obj.__module__}.{obj.__qualname__} {d(obj.__code__)} defaults={d(obj.__defaults__)} "
                f"kw={d(obj.__kwdefaults__)} closure={d(cells)}")
    return f"{type(obj).__module__}.{type(obj).__qualname__}:{_ADDRESS.sub('', repr(obj))}"


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def fingerprint(*parts: Any) -> str:
    """A short stable hash of ``describe(parts)``: matches checkpoints to the runs that wrote them."""
    return hashlib.sha256(describe(parts).encode()).hexdigest()[:16]
