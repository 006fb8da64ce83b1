"""Mesh helpers: split a leading axis (seeds, instances, a batch) over ``jax.devices()``.

Independent instances (toy models over many seeds, a batch of inputs) parallelise trivially:
put the leading axis of every array on a one-dimensional ``jax.sharding.Mesh`` and let ``jit``
partition the computation. The same code then runs on one CPU, on 8 forced CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on the 8 chips of a TPU host or on
several GPUs. Across processes (a TPU pod, a GPU cluster, ``python -m jaxinterp.launch -n 2``) the
same helpers work after ``jaxinterp.distributed.initialize()``: the default mesh then spans the
devices of every process, ``shard_leading`` / ``replicate`` place each process's copy of a host
value on its own devices, and ``unpad_leading`` / ``gather`` bring results back to every host.

Example::

    mesh = leading_axis_mesh()
    tree, n = pad_leading(tree, mesh.size)        # the axis must divide evenly
    tree = shard_leading(tree, mesh)
    out = jax.jit(jax.vmap(f))(tree)               # runs on every device
    out = unpad_leading(out, n)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxinterp._validation import check_positive_int

DEFAULT_AXIS = "instances"

# ``put`` and ``gather`` are the building blocks of ``jaxinterp.distributed`` (which exports ``gather``)
__all__ = ["DEFAULT_AXIS", "leading_axis_mesh", "leading_sharding", "replicated", "padded_size", "pad_leading",
           "unpad_leading", "shard_leading", "replicate", "CACHE_ENV", "default_cache_dir", "enable_compilation_cache"]


def leading_axis_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = DEFAULT_AXIS) -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: all of ``jax.devices()``).

    Args:
      devices: the devices to use, in order; default every device of the default backend, of
        every process, ordered by process and then device id (so each process holds one
        contiguous block of the axis).
      axis_name: the mesh axis name used in partition specs.

    Returns:
      A ``jax.sharding.Mesh`` with one axis of size ``len(devices)``.
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` must hold at least one device.")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def leading_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Sharding that splits axis 0 over the mesh's (single) axis and replicates the rest."""
    ndim = check_positive_int(ndim, "ndim")
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0], *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that places a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def padded_size(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    multiple = check_positive_int(multiple, "multiple")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"`n` must be an int; got {type(n).__name__}.")
    if n < 0:
        raise ValueError(f"`n` must be >= 0; got {n}.")
    return -(-n // multiple) * multiple


def _leading(tree: Any) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves or any(not hasattr(x, "shape") for x in leaves):
        raise TypeError(f"`tree` must be a pytree of arrays; got {type(tree).__name__}.")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(tree)}
    if None in sizes:
        raise ValueError("every leaf of `tree` must have a leading axis to shard; found a scalar leaf.")
    if len(sizes) != 1:
        raise ValueError(f"all leaves of `tree` must share the leading axis length; got lengths {sorted(sizes)}.")
    return sizes.pop()


def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
    """Pad axis 0 of every leaf to a multiple of ``multiple`` by repeating the last entry.

    Repeating (rather than zero-filling) keeps padded instances valid inputs (e.g. PRNG keys),
    so padded work is merely wasted, never a source of NaNs.

    Args:
      tree: pytree whose leaves share the leading axis length ``n``.
      multiple: the length must become a multiple of this (typically the device count).

    Returns:
      ``(padded_tree, n)``; undo with ``unpad_leading(out, n)``.
    """
    multiple = check_positive_int(multiple, "multiple")
    n = _leading(tree)
    if n == 0:
        raise ValueError("cannot pad an empty leading axis of `tree`.")
    target = padded_size(n, multiple)
    if target == n:
        return tree, n

    def pad(x):
        idx = jnp.concatenate([jnp.arange(n), jnp.full((target - n,), n - 1)])
        return x[idx]

    return jax.tree_util.tree_map(pad, tree), n


def unpad_leading(tree: Any, n: int) -> Any:
    """Keep the first ``n`` entries of axis 0 of every leaf (inverse of ``pad_leading``).

    Leaves spread over the devices of several processes are first gathered to every host
    (``gather``; a collective, so every process must make the same call); the others keep
    their placement.
    """
    n = check_positive_int(n, "n")
    if any(_spans_processes(x) for x in jax.tree_util.tree_leaves(tree)):
        tree = gather(tree)
    return jax.tree_util.tree_map(lambda x: x[:n], tree)


def shard_leading(tree: Any, mesh: Mesh | None = None) -> Any:
    """Place every leaf of ``tree`` with axis 0 split over ``mesh`` (default: all devices).

    Args:
      tree: pytree whose leaves share a leading axis whose length divides by the mesh size
        (use ``pad_leading`` first otherwise).
      mesh: a one-axis mesh; default ``leading_axis_mesh()``.

    Returns:
      The same pytree as committed, sharded ``jax.Array``s.
    """
    mesh = leading_axis_mesh() if mesh is None else mesh
    n = _leading(tree)
    if n % mesh.size:
        raise ValueError(
            f"leading axis length {n} does not divide over {mesh.size} devices; "
            f"pad it first with pad_leading(tree, {mesh.size}).")
    return jax.tree_util.tree_map(lambda x: put(x, leading_sharding(mesh, np.ndim(x))), tree)


def replicate(tree: Any, mesh: Mesh | None = None) -> Any:
    """Place a full copy of every leaf of ``tree`` on each device of ``mesh``.

    When ``mesh`` spans several processes, process 0's value is broadcast to all of them
    first (a collective), so the copies agree even if the processes computed slightly
    different values.
    """
    mesh = leading_axis_mesh() if mesh is None else mesh
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    impls = [jax.random.key_impl(x) if _is_typed_key(x) else None for x in leaves]
    data = [jax.random.key_data(x) if impl is not None else x for x, impl in zip(leaves, impls)]
    host = [np.asarray(gather(x)) for x in data]
    # the broadcast is a sum with zeros from the other processes: booleans travel as uint8
    sent = multihost_utils.broadcast_one_to_all([x.astype(np.uint8) if x.dtype == bool else x for x in host])
    placed = [put(np.asarray(y).astype(x.dtype, copy=False), sharding) for x, y in zip(host, sent)]
    placed = [jax.random.wrap_key_data(x, impl=impl) if impl is not None else x for x, impl in zip(placed, impls)]
    return jax.tree_util.tree_unflatten(treedef, placed)


# ----------------------------------------------------------------- several processes


def _is_typed_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _spans_processes(x) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def _with_trailing_axis(sharding: NamedSharding, ndim: int) -> NamedSharding:
    """The sharding of ``key_data`` of keys sharded by ``sharding``: one more, unsplit axis."""
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    return NamedSharding(sharding.mesh, PartitionSpec(*spec, None))


def put(x: Any, sharding: NamedSharding) -> jax.Array:
    """``jax.device_put(x, sharding)`` that also works when ``sharding`` spans several processes.

    Across processes, every process passes the same host value (numpy array, local jax array,
    typed PRNG keys) and each copies only the slices that live on its own devices
    (``jax.make_array_from_callback``); nothing is sent between processes. An array already
    spread over the same devices is resharded by XLA.

    Args:
      x: an array (or typed keys) with the full global shape.
      sharding: the target ``NamedSharding``.

    Returns:
      A ``jax.Array`` with that sharding.
    """
    if sharding.is_fully_addressable or _spans_processes(x):
        return jax.device_put(x, sharding)
    if _is_typed_key(x):
        data = put(jax.random.key_data(x), _with_trailing_axis(sharding, x.ndim))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def gather(tree: Any) -> Any:
    """Every leaf of ``tree`` as a whole host copy, on every process.

    Leaves spread over several processes are all-gathered (a collective: every process must
    call ``gather`` on the same arrays in the same order); fully replicated leaves are read from
    a local copy; local arrays are copied to the host. Typed PRNG keys come back as local key
    arrays, everything else as numpy arrays.

    Args:
      tree: a pytree of arrays.

    Returns:
      The same pytree with host (numpy) leaves.
    """
    return jax.tree_util.tree_map(_gather_leaf, tree)


def _gather_leaf(x):
    if _is_typed_key(x):
        return jax.random.wrap_key_data(_gather_leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if not _spans_processes(x):
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ----------------------------------------------------------------- persistent compilation cache

#: Environment variable: ``0``/``off``/``false`` turns the persistent compilation cache off; any
#: other non-empty value is the cache folder.
CACHE_ENV = "JAXINTERP_COMPILATION_CACHE"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxinterp/xla`` (default ``~/.cache/jaxinterp/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxinterp" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache, so a second run of a program skips compiling it.

    The trainers (``toy.fit``, ``models.train_classifier``) call this on entry, so the cache is
    on by default. A folder the user set for JAX (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update("jax_compilation_cache_dir", ...)``) is respected; otherwise the folder
    is ``path``, ``$JAXINTERP_COMPILATION_CACHE``, or ``default_cache_dir()``. Set
    ``JAXINTERP_COMPILATION_CACHE=0`` to opt out. Programs that compile in under 0.1 s are not
    stored.

    JAX decides once per process, at its first compilation, whether the cache is used; when
    that decision was already "no cache" this function makes JAX decide again (through
    ``jax._src.compilation_cache.reset_cache``; where that hook is missing the cache takes
    effect in the next process).

    Args:
      path: the cache folder (default as above).

    Returns:
      The folder in use, or None when the cache is off.
    """
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    folder = Path(path) if path is not None else Path(setting) if setting else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:         # read-only home, sandbox: run without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if jax.config.jax_persistent_cache_min_compile_time_secs >= 1.0:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    try:
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    return folder
