"""Multi-process runs on JAX's own distributed runtime: start it, one global mesh, data in and out.

One program runs in every process (a TPU pod's hosts, a GPU cluster's tasks, or the local
processes of ``python -m jaxinterp.launch -n 2 -- ...``). After ``initialize()``,
``jax.devices()`` lists the devices of *every* process, and a ``jax.Array`` placed on a mesh
over them is one global array of which each process holds its own shards. ``jit`` compiles one
SPMD program for the whole mesh and XLA inserts the collectives (on CPU through gloo, on GPUs
through NCCL, on TPUs over the interconnect).

In jaxinterp:

- ``toy.fit`` / ``toy.collisions_sweep`` split their seeds over ``global_mesh()`` (their default
  mesh already spans every process), so each process trains its block of seeds;
- ``directions.fit(learner, data, key=key, mesh=global_mesh())`` trains a minibatch learner (an
  SAE) data-parallel: every process reads only its rows of each minibatch and XLA all-reduces
  the gradients and statistics;
- checkpoints are host copies (``gather``) written by process 0 with ``jaxinterp.checkpoint``,
  independent of the mesh, so a run resumes on any number of processes.

Why host copies and not orbax-checkpoint: the states checkpointed here (toy models of every
seed, an SAE's replicated parameters and optimiser moments) fit in one host's memory, and the
existing format already gives atomic writes, checksums, a previous checkpoint to fall back on
and run fingerprints; a host copy has no layout, so resuming on another process count needs no
resharding logic. The cost is one all-gather per checkpoint and a state bounded by host memory;
a model sharded because it does not fit one host would need orbax's per-shard writes.

Example (the same file runs in every process)::

    from jaxinterp import distributed
    distributed.initialize()            # from the launcher's environment, SLURM, a TPU pod, ...
    mesh = distributed.global_mesh()
    dirs = jd.fit(jd.sae(512, kind="topk", k=16), activations, key=key, mesh=mesh)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxinterp._validation import check_positive_int
from jaxinterp.launch import COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV
from jaxinterp.sharding import DEFAULT_AXIS, gather, leading_axis_mesh

__all__ = ["COORDINATOR_ENV", "NUM_PROCESSES_ENV", "PROCESS_ID_ENV", "initialize", "is_initialized",
           "is_main_process", "global_mesh", "local_rows", "from_process_local", "gather", "barrier"]



def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {text!r}.") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               cpu_collectives: str = "gloo", initialization_timeout: int = 300) -> bool:
    """Join this process to a multi-process JAX run (``jax.distributed.initialize``).

    Call it once, first thing, before any other JAX call. The settings come from, in order:
    the arguments; the environment the local launcher sets (``JAX_COORDINATOR_ADDRESS``,
    ``JAXINTERP_NUM_PROCESSES``, ``JAXINTERP_PROCESS_ID``); otherwise JAX's cluster detection
    (SLURM, Open MPI, Cloud TPU pods, Kubernetes). Where none applies (a plain ``python``
    on a laptop) the run stays a single process and this returns False, so scripts may call
    it unconditionally. A second call is a no-op.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: number of processes in the run.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: restrict this process to these local accelerators (default all).
      cpu_collectives: cross-process collectives on CPU (``"gloo"`` or ``"mpi"``); used only
        when JAX's ``jax_cpu_collectives_implementation`` is not set already.
      initialization_timeout: seconds to wait for all processes to connect.

    Returns:
      True when this process is part of a multi-process run (``jax.process_count() > 1``).

    Raises:
      ValueError: some but not all of address, count and id are given, or they are invalid.
      RuntimeError: JAX was already used in this process (JAX's own error).
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    coordinator_address = coordinator_address or os.environ.get(COORDINATOR_ENV) or None
    num_processes = _env_int(NUM_PROCESSES_ENV) if num_processes is None else num_processes
    process_id = _env_int(PROCESS_ID_ENV) if process_id is None else process_id
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if all(v is None for v in given.values()):
        return _auto_initialize(local_device_ids, initialization_timeout)
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise ValueError(f"give all of coordinator_address, num_processes and process_id (or none, for cluster "
                         f"detection); missing {', '.join(missing)}.")
    if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
        raise ValueError(f"`coordinator_address` must be 'host:port'; got {coordinator_address!r}.")
    num_processes = check_positive_int(num_processes, "num_processes")
    if isinstance(process_id, bool) or not isinstance(process_id, (int, np.integer)) \
            or not 0 <= process_id < num_processes:
        raise ValueError(f"`process_id` must be an int in [0, num_processes={num_processes}); got {process_id!r}.")
    if num_processes == 1:
        return False
    # every setting is given: no cluster detection (it could override them inside a SLURM job)
    jax.distributed.initialize(coordinator_address, num_processes, int(process_id), local_device_ids=local_device_ids,
                               cluster_detection_method="deactivate", initialization_timeout=initialization_timeout)
    return True


def _auto_initialize(local_device_ids, initialization_timeout) -> bool:
    """``jax.distributed.initialize()`` with JAX's cluster detection; False where no cluster is found."""
    try:
        jax.distributed.initialize(local_device_ids=local_device_ids, initialization_timeout=initialization_timeout)
    except ValueError as err:
        # JAX's message when no cluster environment supplied the coordinator address
        if "coordinator_address" in str(err):
            return False
        raise
    return jax.process_count() > 1


def is_initialized() -> bool:
    """True once this process has joined a multi-process run."""
    return jax.distributed.is_initialized()


def is_main_process() -> bool:
    """True in process 0, the one that writes files (checkpoints, results)."""
    return jax.process_index() == 0


def global_mesh(axis_name: str = DEFAULT_AXIS) -> Mesh:
    """A one-axis mesh over every device of every process, process by process.

    Each process holds one contiguous block of the axis (its local devices in id order), so
    the rows of a batch split over the mesh fall to the processes in order (``local_rows``).

    Args:
      axis_name: the mesh axis name.

    Returns:
      A ``jax.sharding.Mesh`` of ``jax.device_count()`` devices.
    """
    return leading_axis_mesh(None, axis_name)


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise TypeError(f"`mesh` must be a one-axis jax.sharding.Mesh (global_mesh()); got {mesh!r}.")
    return mesh


def local_rows(n_rows: int, mesh: Mesh | None = None) -> slice:
    """The rows of an ``[n_rows, ...]`` array split over ``mesh`` that this process's devices hold.

    A data-parallel stream reads exactly these rows of every global batch in this process.

    Args:
      n_rows: global length of the split axis; must divide by the mesh size.
      mesh: a one-axis mesh (default ``global_mesh()``).

    Returns:
      ``slice(start, stop)`` into the global axis.
    """
    mesh = _check_mesh(global_mesh() if mesh is None else mesh)
    n_rows = check_positive_int(n_rows, "n_rows")
    if n_rows % mesh.size:
        raise ValueError(f"`n_rows` ({n_rows}) must divide over the {mesh.size} devices of `mesh`.")
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    slices = sorted(s[0].indices(n_rows)[:2] for s in sharding.addressable_devices_indices_map((n_rows,)).values())
    start, stop = slices[0][0], slices[-1][1]
    if sum(b - a for a, b in slices) != stop - start:
        raise ValueError("this process's devices do not hold one contiguous block of `mesh`; "
                         "order the mesh by process (global_mesh()).")
    return slice(start, stop)


def from_process_local(local: Any, mesh: Mesh | None = None, axis: int = 0) -> jax.Array:
    """One global array from each process's own block of rows (``jax.make_array_from_process_local_data``).

    Process ``p`` passes the rows ``local_rows(global_length, mesh)`` of the global array along
    ``axis``; all processes pass blocks of the same shape. The result is split over ``mesh``
    along ``axis`` and replicated along the other axes; nothing is copied between processes.

    Args:
      local: ``[..., n_local, ...]`` this process's block (numpy or jax array).
      mesh: a one-axis mesh (default ``global_mesh()``).
      axis: the split axis.

    Returns:
      A global ``jax.Array`` of length ``n_local * process_count`` along ``axis`` (for a mesh
      over every process).
    """
    mesh = _check_mesh(global_mesh() if mesh is None else mesh)
    local = np.asarray(local)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"`axis` must be an int; got {type(axis).__name__}.")
    if not 0 <= axis < local.ndim:
        raise ValueError(f"`axis` must lie in [0, {local.ndim}) for `local` of shape {local.shape}; got {axis}.")
    n_local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if n_local_devices == 0 or local.shape[axis] % n_local_devices:
        raise ValueError(f"`local` has {local.shape[axis]} rows along axis {axis}; they must divide over this "
                         f"process's {n_local_devices} devices of `mesh`.")
    spec = [None] * local.ndim
    spec[axis] = mesh.axis_names[0]
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec(*spec)), local)


def barrier(name: str) -> None:
    """Wait until every process reaches ``barrier(name)`` (no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
