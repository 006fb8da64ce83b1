"""Train many independent toy-model instances at once: optax, ``lax.scan`` in chunks, ``vmap``
over seeds, sharded over ``jax.devices()``, resumable from atomic ``.npz`` checkpoints.

The model is given as two pure functions of ONE instance:

- ``init_params(key, hyper) -> params``
- ``loss_and_grad(params, key, hyper) -> (loss, grads)`` where ``key`` is fresh every step (for
  sampled data or noise),

where ``hyper`` is that instance's hyperparameters (any pytree, or None): settings that differ
between instances (a noise scale, a hidden size under padding) are data, so sweeps vmap,

plus an ``optax.GradientTransformation``. ``fit`` vmaps one step over the instances, scans
``chunk_size`` steps under ``jit``, and between chunks updates a tqdm bar, writes a checkpoint
and calls an optional callback. The leading instance axis is sharded over a one-axis mesh of
all devices (padded to a multiple of the device count), so the same call uses 1 CPU, 8 forced
CPU devices or 8 accelerators and gives the same numbers.

Example::

    cfg = IncidentalConfig(n_features=64, n_hidden=128)
    result = fit(make_init(cfg), make_loss_and_grad(cfg),
                 make_optimizer(cfg), jax.random.split(jax.random.key(0), 64), steps=cfg.steps)
    counts = count_polysemantic(result.state.params)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp import checkpoint as ckpt
from jaxinterp import sharding
from jaxinterp._validation import check_positive_int
from jaxinterp.loop import run_chunks


class TrainState(NamedTuple):
    """State of one instance (or, with a leading axis, of many).

    Attributes:
      params: model parameters.
      opt_state: the optax state.
      key: the run's PRNG key; step ``t`` uses ``fold_in(key, t)``.
      step: number of steps taken (int32).
      loss: loss at the last step taken (float32).
    """

    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    loss: jax.Array


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      state: final ``TrainState`` with a leading instance axis ``[instances, ...]`` (numpy-backed
        jax arrays, gathered from the devices).
      history: recorded metrics, a pytree with leaves ``[instances, n_records, ...]`` (None when
        nothing is recorded; read-only memmap views of the record files with ``record_path``).
      record_steps: ``[n_records]`` int, the step count after which each record was taken.
      resumed_from: steps already done when ``fit`` started (0 unless resumed).
    """

    state: TrainState
    history: Any
    record_steps: np.ndarray
    resumed_from: int


@dataclasses.dataclass(frozen=True)
class _Rebuilt:
    """Calls ``build(*args, **kwargs).<method>``: a hashable stand-in for an optax closure."""

    build: Callable
    args: tuple
    kwargs: tuple
    method: str

    def __call__(self, *a, **k):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with Python floats
            return getattr(self.build(*self.args, **dict(self.kwargs)), self.method)(*a, **k)


@dataclasses.dataclass(frozen=True)
class StateRecord:
    """A record of the training state rather than of the parameters alone.

    ``fn(previous_params, state) -> pytree`` is called every ``record_every`` steps with the
    parameters of the previous record (or of the start of the run) and the ``TrainState`` now,
    so a record can hold the loss (``state.loss``) and what changed since the last record. The
    previous parameters are those at the start of the current compiled chunk or record interval,
    so nothing extra is carried between chunks or stored in checkpoints.

    ``fn`` should compare equal for equal settings (a frozen dataclass, a module-level function)
    so compiled programs and checkpoint fingerprints are shared across calls.
    """

    fn: Callable


def take_record(record: Callable | StateRecord, previous_params, state: TrainState):
    """The record of one instance: ``record.fn(previous_params, state)`` or ``record(state.params)``."""
    if isinstance(record, StateRecord):
        return record.fn(previous_params, state)
    return record(state.params)


def static_optimizer(build: Callable[..., optax.GradientTransformation], *args, **kwargs
                     ) -> optax.GradientTransformation:
    """``build(*args, **kwargs)`` as a transformation that compares equal for equal arguments.

    optax builds a new closure on every call, so two ``optax.adamw(1e-3)`` never compare equal
    and ``fit`` would compile its program again for each. The transformation returned here
    rebuilds ``build(*args, **kwargs)`` when it is traced (same numbers) and is equal to any other
    made from the same ``build`` and arguments, so ``jax.jit``'s cache reuses compiled programs
    and checkpoint fingerprints see the hyperparameters.

    Args:
      build: a module-level factory such as ``optax.adamw``.
      *args, **kwargs: its (hashable) arguments, e.g. the learning rate.

    Returns:
      An ``optax.GradientTransformation``.
    """
    items = tuple(sorted(kwargs.items()))
    return optax.GradientTransformation(_Rebuilt(build, args, items, "init"), _Rebuilt(build, args, items, "update"))


def init_state(init_params: Callable, optimizer: optax.GradientTransformation, key: jax.Array,
               hyper: Any = None) -> TrainState:
    """Initial ``TrainState`` of one instance: ``init_params(k, hyper)`` gets one split ``k`` of ``key``."""
    k_param, k_run = jax.random.split(key)
    params = init_params(k_param, hyper)
    return TrainState(params, optimizer.init(params), k_run, jnp.zeros((), jnp.int32),
                      jnp.full((), jnp.nan, jnp.float32))


def initial_params(init_params: Callable, keys: jax.Array, hyper: Any = None) -> Any:
    """The parameters ``fit`` starts from for each of ``keys`` ``[instances]`` (same split as ``init_state``)."""
    return _params_jit(keys, hyper, init_params=init_params)


def make_step(loss_and_grad: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """``step(state, hyper) -> state``: one optimiser step of one instance."""

    def step(state: TrainState, hyper) -> TrainState:
        # the step's key is derived from (run key, step count): no key is carried forward, so a
        # loss that ignores its key costs no random-number work (XLA drops the dead fold_in)
        k_step = jax.random.fold_in(state.key, state.step)
        value, grads = loss_and_grad(state.params, k_step, hyper)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with Python floats
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.key, state.step + 1, jnp.asarray(value, jnp.float32))

    return step


def run_steps(step: Callable, state: TrainState, hyper, n_steps: int, *,
              record: Callable | None = None, record_every: int = 0):
    """Run ``n_steps`` steps of one instance under ``lax.scan``.

    Args:
      step: from ``make_step``.
      state: one instance's state.
      hyper: that instance's hyperparameters.
      n_steps: number of steps (static).
      record: optional ``record(params) -> pytree`` or ``StateRecord`` taken every
        ``record_every`` steps.
      record_every: record interval; must divide ``n_steps`` when ``record`` is given.

    Returns:
      ``(state, records)``; records has a leading axis ``n_steps // record_every`` (None
      without ``record``).
    """
    if record is None:
        state, _ = jax.lax.scan(lambda s, _: (step(s, hyper), None), state, None, length=n_steps)
        return state, None

    def inner(s, _):
        previous = s.params
        s, _ = jax.lax.scan(lambda t, _: (step(t, hyper), None), s, None, length=record_every)
        return s, take_record(record, previous, s)

    return jax.lax.scan(inner, state, None, length=n_steps // record_every)


def _batched_init(keys, hyper, *, init_params, optimizer):
    return jax.vmap(lambda k, h: init_state(init_params, optimizer, k, h))(keys, hyper)


def _run_chunk(state, hyper, *, loss_and_grad, optimizer, record, record_every, n, groups, block):
    """``n`` steps of every instance: vmapped, or per device group ``lax.map`` over seed blocks."""
    step = make_step(loss_and_grad, optimizer)
    run = jax.vmap(lambda s, h: run_steps(step, s, h, n, record=record, record_every=record_every))
    if block is None:
        return run(state, hyper)
    # [instances] -> [groups (one per device), blocks, block]: vmap over devices' groups,
    # lax.map over blocks (cache-sized working sets), vmap within a block
    total = jax.tree_util.tree_leaves(state)[0].shape[0]
    split = lambda x: x.reshape(groups, total // (groups * block), block, *x.shape[1:])
    blocked = jax.vmap(lambda s, h: jax.lax.map(lambda a: run(a[0], a[1]), (s, h)))
    out = blocked(*jax.tree_util.tree_map(split, (state, hyper)))
    return jax.tree_util.tree_map(lambda x: x.reshape(total, *x.shape[3:]), out)


# The functions and settings are static: ``jax.jit``'s own cache compiles once per distinct
# (init, loss, optimiser, record, chunk length, blocking) and shapes, across ``fit`` calls. The
# toy models' ``make_*`` factories return values that compare equal for equal configs, so
# repeated fits of one configuration reuse the compiled programs.
_init_jit = jax.jit(_batched_init, static_argnames=("init_params", "optimizer"))
_chunk_jit = jax.jit(_run_chunk, donate_argnames="state",
                     static_argnames=("loss_and_grad", "optimizer", "record", "record_every", "n", "groups",
                                      "block"))
_params_jit = jax.jit(lambda keys, hyper, *, init_params: jax.vmap(
    lambda k, h: init_params(jax.random.split(k)[0], h))(keys, hyper), static_argnames="init_params")


def _blocking(n_instances: int, n_devices: int, seed_block: int | None) -> tuple[int, int | None]:
    """``(pad multiple, block)``: instances per device are cut into near-equal blocks <= seed_block."""
    per_device = -(-n_instances // n_devices)
    if seed_block is None or per_device <= seed_block:
        return n_devices, None
    n_blocks = -(-per_device // seed_block)
    block = -(-per_device // n_blocks)
    return n_devices * block, block


def default_seed_block(state_bytes_per_instance: int) -> int | None:
    """Instances per block for ``seed_block="auto"``.

    On CPU, as many instances as fit in about 8 MiB of training state (so a block's weights and
    optimiser moments stay in cache across its steps), between 1 and 256; on accelerators None
    (all instances at once).
    """
    if jax.default_backend() != "cpu":
        return None
    return int(min(256, max(1, (8 << 20) // max(1, state_bytes_per_instance))))


def _check_fit_args(keys, steps, chunk_size, hyper, record, record_every) -> int:
    """Validate ``fit``'s arguments; returns the number of instances."""
    check_positive_int(steps, "steps")
    check_positive_int(chunk_size, "chunk_size")
    if not (isinstance(keys, jax.Array) and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)):
        raise TypeError("`keys` must be typed PRNG keys from jax.random.key(...) / jax.random.split; "
                        f"got {type(keys).__name__} of dtype {getattr(keys, 'dtype', None)}.")
    if keys.ndim != 1:
        raise ValueError(f"`keys` must have shape (instances,); got {keys.shape}.")
    if keys.shape[0] == 0:
        raise ValueError("`keys` must hold at least one key (one per instance); got 0.")
    if record is not None:
        check_positive_int(record_every, "record_every")
        if chunk_size % record_every or steps % record_every:
            raise ValueError(f"`record_every` ({record_every}) must divide `chunk_size` ({chunk_size}) "
                             f"and `steps` ({steps}).")
    n_instances = keys.shape[0]
    for leaf in jax.tree_util.tree_leaves(hyper):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n_instances:
            raise ValueError(f"every leaf of `hyper` needs a leading axis of {n_instances} instances; "
                             f"got shape {np.shape(leaf)}.")
    return n_instances


def _resolve_seed_block(seed_block, init_params, optimizer, keys, hyper) -> int | None:
    if seed_block == "auto":
        # shapes through the jitted init's own trace cache: a repeated fit traces nothing
        every = _init_jit.eval_shape(keys, hyper, init_params=init_params, optimizer=optimizer)
        total = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(every)
                    if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))
        seed_block = default_seed_block(total // keys.shape[0])
    if seed_block is not None:
        check_positive_int(seed_block, "seed_block")
    return seed_block


def run_fingerprint(init_params: Callable, loss_and_grad: Callable, optimizer: optax.GradientTransformation,
                    keys: jax.Array, *, steps: int, hyper: Any = None, record: Callable | None = None,
                    record_every: int = 0, run_id: Any = None) -> dict[str, str]:
    """What identifies a ``fit`` run in its checkpoints: one hash per part that changes the numbers.

    The model functions, the optimiser (its hyperparameters included, e.g. the learning rate),
    ``hyper``, the keys, the step count, the recorded metric, ``run_id`` and the jaxinterp
    version are each described by ``checkpoint.describe`` (content, not identity) and hashed.
    The chunk size, sharding and seed blocks are left out: they do not change the result.

    Returns:
      dict from part name to a 16-hex-digit hash.
    """
    import jaxinterp

    parts = {"init_params": init_params, "loss_and_grad": loss_and_grad, "optimizer": optimizer, "keys": keys,
             "hyper": hyper, "steps": steps, "record": (record, record_every), "run_id": run_id,
             "jaxinterp_version": jaxinterp.__version__}
    return {name: ckpt.fingerprint(value) for name, value in parts.items()}


def fit(init_params: Callable, loss_and_grad: Callable, optimizer: optax.GradientTransformation,
        keys: jax.Array, *, steps: int, hyper: Any = None, chunk_size: int = 500,
        record: Callable | None = None, record_every: int = 0, shard: bool = True,
        mesh: jax.sharding.Mesh | None = None, checkpoint_path: str | os.PathLike | None = None,
        run_id: Any = None, progress: bool = False, desc: str = "train",
        callback: Callable[[int, TrainState], None] | None = None,
        seed_block: int | None | str = "auto", record_path: str | os.PathLike | None = None) -> FitResult:
    """Train one model per key, all at once; resumable.

    The chunks run through ``jaxinterp.loop.run_chunks`` (progress, checkpoints and the callback
    happen between chunks); each chunk is one compiled program, cached by ``jax.jit`` across
    calls with equal functions, settings and shapes, and across processes by JAX's persistent
    compilation cache (``jaxinterp.sharding.enable_compilation_cache``; opt out with
    ``JAXINTERP_COMPILATION_CACHE=0``).

    Args:
      init_params: ``init_params(key, hyper) -> params`` of one instance.
      loss_and_grad: ``loss_and_grad(params, key, hyper) -> (loss, grads)`` of one instance.
      optimizer: an optax transformation (its hyperparameters are shared by all instances;
        per-instance settings go in ``hyper``).
      keys: ``[instances]`` typed PRNG keys; instance ``i`` depends on ``keys[i]`` only.
      steps: total number of steps.
      hyper: optional pytree with leaves ``[instances, ...]`` passed (per instance) to
        ``init_params`` and ``loss_and_grad`` (None is passed when absent).
      chunk_size: steps per compiled ``lax.scan`` chunk; progress, checkpoints and callbacks
        happen between chunks.
      record: optional ``record(params) -> pytree`` of one instance, or a ``StateRecord``
        (``fn(previous_params, state)``), taken every ``record_every`` steps (which must
        divide ``chunk_size`` and ``steps``) inside the compiled chunk.
      record_every: record interval in steps.
      shard: split the instances over ``mesh`` (default all of ``jax.devices()``).
      mesh: a one-axis mesh from ``jaxinterp.sharding.leading_axis_mesh``.
      checkpoint_path: if given, the state is saved there after every chunk (atomically,
        verified by checksums, the previous checkpoint kept as a fallback; see
        ``jaxinterp.checkpoint``), and a checkpoint found there at start is resumed from.
      run_id: anything identifying further settings of the run (e.g. the config); it enters
        the fingerprint beside the functions, optimiser, ``hyper``, keys and step count
        (``run_fingerprint``). A checkpoint of another run is refused with a ValueError naming
        the parts that differ.
      progress: show a tqdm bar over steps.
      desc: the bar's label.
      callback: ``callback(steps_done, state)`` after each chunk (and its checkpoint).
      seed_block: train at most this many instances per device together, looping over blocks
        (``lax.map``) so each block's state stays in cache; ``None``: all at once; ``"auto"``:
        ``default_seed_block`` (on CPU about 8 MiB of state per block; all at once on
        accelerators). Results do not depend on it.
      record_path: stream the records to this folder (``dynamics.RecordFile``: one ``.npy``
        per record leaf, ``[n_records, instances, ...]``) after each chunk instead of holding
        them in memory and in the checkpoints, so the host holds one chunk of records whatever
        the number of steps; resumed with the checkpoint, it ends identical to an
        uninterrupted run's. ``history`` is then read-only memmap views of the folder.

    In a multi-process run (``jaxinterp.distributed``) every process trains its block of the
    instances and gets the whole final state; the checkpoints and the ``record_path`` files are
    gathered to the host and written by process 0 alone (``history`` is None in the other
    processes when streamed). Resuming reads the checkpoint in every process, so it must lie on
    a file system all processes see.

    Returns:
      A ``FitResult``; same keys and settings give the same result, whether run in one go,
      resumed, sharded or not.
    """
    n_instances = _check_fit_args(keys, steps, chunk_size, hyper, record, record_every)
    if record_path is not None and record is None:
        raise ValueError("`record_path` needs a `record` to stream; got record=None.")
    sharding.enable_compilation_cache()
    use_mesh = mesh if mesh is not None else (sharding.leading_axis_mesh() if shard else None)
    seed_block = _resolve_seed_block(seed_block, init_params, optimizer, keys, hyper)
    groups = 1 if use_mesh is None else use_mesh.size
    multiple, block = _blocking(n_instances, groups, seed_block)
    p_keys, p_hyper = _place((keys, hyper), multiple, use_mesh)
    state = _init_jit(p_keys, p_hyper, init_params=init_params, optimizer=optimizer)

    parts = run_fingerprint(init_params, loss_and_grad, optimizer, keys, steps=steps, hyper=hyper, record=record,
                            record_every=record_every, run_id=run_id)
    records = _record_store(record, record_every, record_path, steps, n_instances, state, ckpt.fingerprint(parts))
    done, saved = 0, None
    if checkpoint_path is not None and ckpt.exists(checkpoint_path):
        done, state, saved = _resume(checkpoint_path, parts, state, n_instances, records, use_mesh, multiple)
    if records is not None:
        records.start(done // record_every, saved)
    unpad = functools.partial(sharding.unpad_leading, n=n_instances)
    pending = []

    def run_chunk(state, start, n):
        state, rec = _chunk_jit(state, p_hyper, loss_and_grad=loss_and_grad, optimizer=optimizer, record=record,
                                record_every=record_every, n=n, groups=groups, block=block)
        if rec is not None:
            pending.append(jax.device_get(unpad(rec)))
        return state

    def after_chunk(done, state):
        if pending:   # the records first: a checkpoint never runs ahead of its records
            records.append(pending.pop())
        if checkpoint_path is not None:
            host = jax.device_get(unpad(state))      # a collective across processes: every process gathers
            if jax.process_index() == 0:             # and process 0 writes
                ckpt.save_pytree(checkpoint_path, {"state": host,
                                                   "records": None if records is None else records.saved()},
                                 metadata={"fingerprint": ckpt.fingerprint(parts), "parts": parts,
                                           "steps_done": done})
        if callback is not None:
            callback(done, unpad(state))

    resumed_from = done
    state = run_chunks(run_chunk, state, steps=steps, chunk_size=chunk_size, start=done, progress=progress,
                       desc=desc, after_chunk=after_chunk)
    final = jax.tree_util.tree_map(jnp.asarray, jax.device_get(unpad(state)))
    if records is None:
        return FitResult(final, None, np.zeros(0, np.int64), resumed_from)
    return FitResult(final, records.history(), np.arange(1, steps // record_every + 1) * record_every, resumed_from)


def record_spec(record: Callable | StateRecord, state: TrainState) -> Any:
    """One instance's record as ``jax.ShapeDtypeStruct`` leaves, for ``state`` with a leading instance axis."""
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state)
    return jax.eval_shape(lambda s: take_record(record, s.params, s), one)


class _HeldRecords:
    """Records held in memory and saved in the checkpoints: leaves ``[instances, n_records, ...]``."""

    def __init__(self, spec, n_instances: int, record_every: int):
        self.spec, self.n_instances, self.record_every, self.tree = spec, n_instances, record_every, None

    def like(self, steps_done: int):
        n_rec = steps_done // self.record_every
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((self.n_instances, n_rec, *s.shape), s.dtype),
                                      self.spec)

    def start(self, first_record: int, saved) -> None:
        del first_record
        self.tree = saved

    def append(self, rec) -> None:
        self.tree = rec if self.tree is None else _concat_records([self.tree, rec])

    def saved(self):
        return self.tree

    def history(self):
        return self.tree


class _RecordsElsewhere:
    """Streamed records in a process other than 0 of a multi-process run: every process computes
    and gathers them (one program, one collective), process 0 writes them; here they are dropped."""

    def like(self, steps_done: int) -> None:
        del steps_done

    def start(self, first_record: int, saved) -> None:
        del first_record, saved

    def append(self, rec) -> None:
        del rec

    def saved(self) -> None:
        """Streamed records are not part of the checkpoint."""

    def history(self) -> None:
        """None: the records are in process 0's ``record_path``."""


def _record_store(record, record_every, record_path, steps, n_instances, state, fingerprint):
    """Where ``fit`` keeps its records: None, in memory, or streamed to ``record_path``."""
    if record is None:
        return None
    spec = record_spec(record, state)
    if record_path is None:
        return _HeldRecords(spec, n_instances, record_every)
    if jax.process_index() != 0:
        return _RecordsElsewhere()
    from jaxinterp.toy.dynamics import RecordFile   # dynamics builds on this module

    return RecordFile(record_path, spec, n_instances=n_instances, steps=steps, record_every=record_every,
                      fingerprint=fingerprint)


def _place(tree, multiple: int, mesh):
    """Pad the leading (instance) axis of ``tree`` to ``multiple`` and shard it over ``mesh``."""
    tree, _ = sharding.pad_leading(tree, multiple)
    return tree if mesh is None else sharding.shard_leading(tree, mesh)


def _concat_records(records: list) -> Any:
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=1), *records)


def _resume(path, parts, state, n_instances, records, mesh, multiple):
    """Load the newest usable checkpoint of this run: ``(steps_done, state on the devices, saved records or None)``."""
    like_state = sharding.unpad_leading(state, n_instances)

    def like(meta: dict):
        saved = meta.get("parts") or {}
        differ = sorted(name for name in parts if saved.get(name) != parts[name])
        if differ:
            raise ValueError(f"checkpoint {path} belongs to a different run: {', '.join(differ)} differ from this "
                             "call's; delete it (and its .prev) or choose another `checkpoint_path`.")
        like_records = None if records is None else records.like(int(meta["steps_done"]))
        return {"state": like_state, "records": like_records}

    saved, meta = ckpt.load_pytree(path, like)
    restored = _place(saved["state"], multiple, mesh)
    restored = jax.tree_util.tree_map(jnp.asarray, restored)
    return int(meta["steps_done"]), restored, saved["records"]
