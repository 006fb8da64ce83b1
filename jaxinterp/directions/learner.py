"""The learner idiom and the one driver that runs every learner.

A ``Learner`` is what a factory (``kmeans(k)``, ``sae(n_latents, kind="topk")``, ...) returns: pure
functions ``init(key, sample) -> state``, ``update(state, batch) -> state`` and
``finalize(state) -> Directions``, plus the defaults the driver needs. Static hyperparameters
(sizes, kinds, iteration counts) live in ``update`` and ``finalize``, which compare and hash by
value, so two equal learners share ``jax.jit``'s compiled programs. Numeric hyperparameters
(learning rate, sparsity coefficients, tolerances) live in the state, so a sweep is a ``vmap``
over the factory's numeric arguments::

    from jaxinterp import directions as jd

    dirs = jd.fit(jd.sae(64, kind="topk", k=4), x, key=key)
    sweep = jax.vmap(lambda c: jd.fit(jd.sae(64, kind="relu", coef=c), x, key=key))(coefs)

``fit`` runs any learner: full-batch learners (PCA, FastICA, K-means, NMF) take the whole data in
one ``update``; minibatch learners run jitted ``lax.scan`` chunks through ``jaxinterp.loop``, with
minibatches drawn inside the scan from an in-memory array, gathered on the host from a memmap,
or taken in order from an iterable of batches; progress bars and checkpoints happen between
chunks.

With ``mesh=`` (a one-axis mesh, e.g. ``jaxinterp.distributed.global_mesh()``) minibatch learners
train data-parallel: every minibatch is split over the mesh's devices, possibly in several
processes; each process reads only its own rows of each minibatch (from the array or memmap
by index, or as the batches its own iterable yields), the state is replicated, and XLA
all-reduces the gradients and statistics. The minibatches are the same as without a mesh, so
the result differs only by the order of floating-point sums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxinterp import checkpoint as ckpt
from jaxinterp import sharding
from jaxinterp._validation import check_finite, check_key, check_positive_int, is_concrete
from jaxinterp.directions.base import Directions, compute_dtype, validate_data
from jaxinterp.loop import run_chunks

__all__ = ["Learner", "Static", "fit"]

#: Bytes of minibatches gathered on the host per chunk for memmapped data.
_HOST_CHUNK_BYTES = 64 << 20


class Learner(NamedTuple):
    """A direction learner: pure functions plus what the driver needs to know.

    Attributes:
      init: ``init(key, sample [n, d]) -> state``; ``sample`` is the data (full-batch learners)
        or a representative sample of it (minibatch learners: initialisation, normalisation).
      update: ``update(state, batch [b, d]) -> state``; for full-batch learners the whole solve.
      finalize: ``finalize(state) -> Directions``.
      name: the learner's name (progress bars, checkpoints).
      hyperparams: the factory's arguments, for checkpoint fingerprints and display.
      full_batch: ``update`` takes all the data at once, a single time.
      steps: default number of updates (minibatch learners).
      batch_size: default rows per update (minibatch learners).
    """

    init: Callable[[jax.Array, jax.Array], Any]
    update: Callable[[Any, jax.Array], Any]
    finalize: Callable[[Any], Directions]
    name: str
    hyperparams: dict
    full_batch: bool = False
    steps: int = 1
    batch_size: int = 0


@dataclasses.dataclass(frozen=True)
class Static:
    """``fn`` with static keyword settings, compared and hashed by value.

    A learner's ``update`` is a ``Static``, so ``jax.jit`` (which keys its cache on static
    arguments) compiles once for all equal learners, however many times the factory is called.

    Attributes:
      fn: a module-level function ``fn(*args, **settings)``.
      settings: ``(name, value)`` pairs of hashable settings.
    """

    fn: Callable
    settings: tuple = ()

    def __call__(self, *args):
        return self.fn(*args, **dict(self.settings))


def static(fn: Callable, **settings) -> Static:
    """``Static(fn, settings)`` with ``settings`` in a canonical order."""
    return Static(fn, tuple(sorted(settings.items())))


def fit(learner: Learner, data, *, key: jax.Array, steps: int | None = None, batch_size: int | None = None,
        chunk_size: int = 500, progress: bool = False, checkpoint_path: str | os.PathLike | None = None,
        init_rows: int = 65_536, mesh: Mesh | None = None) -> Directions:
    """Run ``learner`` on ``data`` and return its ``Directions``.

    Args:
      learner: a ``Learner`` from a factory (``kmeans``, ``pca``, ``sae``, ...).
      data: ``[n, d]`` activations: a numpy or jax array (minibatches are sampled with
        replacement inside the jitted loop), a ``numpy.memmap`` (minibatches gathered on the
        host, chunk by chunk; the same rows as for the array in memory), or an iterable of
        ``[b, d]`` batches used in order (minibatch learners only).
      key: typed PRNG key (``jax.random.key(seed)``; raw ``uint32`` keys are refused); same
        key, same result. Full-batch learners get it as
        is; minibatch learners split it into an initialisation key and a sampling key, and the
        minibatch of step ``t`` is drawn with ``fold_in(sampling_key, t)``, so results do not
        depend on ``chunk_size`` or on resuming.
      steps: number of updates (minibatch learners; default ``learner.steps``, or the length
        of an iterable with ``len``).
      batch_size: rows per update (default ``learner.batch_size``; batches of an iterable keep
        their own size).
      chunk_size: updates per compiled chunk; progress and checkpoints happen between chunks.
      progress: show a tqdm bar.
      checkpoint_path: write the state there after every chunk and resume from it when it
        exists and belongs to the same run (learner, hyperparameters, key, steps, data shape);
        a checkpoint of another run is an error. The checkpoint is a host copy written by
        process 0, the same with or without ``mesh``: a run resumes on any mesh.
      init_rows: rows of a memmap read (a random subset) for ``init``.
      mesh: train a minibatch learner data-parallel over this one-axis mesh (see the module
        docstring); ``batch_size`` must divide by its size. Every process passes the same
        array / memmap, or an iterable of its own rows ``jaxinterp.distributed.local_rows(b)``
        of each global batch ``[b, d]``. Not for full-batch learners.

    Returns:
      ``Directions``. Under ``jax.vmap`` over a numeric hyperparameter or the key, stacked
      ``Directions`` (see ``unstack``).
    """
    if not isinstance(learner, Learner):
        raise TypeError(f"`learner` must be a Learner from a factory such as kmeans(k); got {type(learner).__name__}.")
    key = check_key(key, "key")
    check_positive_int(chunk_size, "chunk_size")
    if learner.full_batch:
        for value, name in ((steps, "steps"), (batch_size, "batch_size"), (mesh, "mesh")):
            if value is not None:
                raise ValueError(f"`{name}` does not apply to the full-batch learner {learner.name!r}; leave it None.")
        return _fit_full(learner, data, key, progress, checkpoint_path)
    batch_size = check_positive_int(learner.batch_size if batch_size is None else batch_size, "batch_size")
    _check_mesh(mesh, batch_size if _is_array(data) else None)
    k_init, k_batches = jax.random.split(key)
    if _is_array(data):
        source = _ArraySource(data, k_batches, batch_size, init_rows, mesh)
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        source = _IterableSource(data, mesh)
    else:
        raise TypeError(f"`data` must be an array [n, d], a numpy memmap or an iterable of [b, d] batches; "
                        f"got {type(data).__name__}.")
    if steps is None:
        steps = source.default_steps(learner.steps)
    steps = check_positive_int(steps, "steps")
    state = learner.init(k_init, source.sample)
    fp = _fingerprint(learner, key, steps, batch_size, source.shape)
    state, done = _resume(checkpoint_path, fp, state)
    if mesh is not None:
        if not all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(state)):
            raise ValueError("`mesh` cannot be used under jit or vmap (the state is traced); run fit unwrapped.")
        state = sharding.replicate(state, mesh)
    source.skip(done)
    after = None if checkpoint_path is None else partial(_save, checkpoint_path, fp)
    state = run_chunks(partial(source.run_chunk, learner.update), state, steps=steps, chunk_size=chunk_size,
                       start=done, progress=progress, desc=learner.name, after_chunk=after)
    if mesh is not None:    # every process gets the same local Directions
        state = jax.tree_util.tree_map(jnp.asarray, sharding.gather(state))
    return learner.finalize(state)


def _check_mesh(mesh, batch_size) -> None:
    """A one-axis ``Mesh`` (or None) over which ``batch_size`` (when known) divides evenly."""
    if mesh is None:
        return
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise TypeError(f"`mesh` must be a one-axis jax.sharding.Mesh (jaxinterp.distributed.global_mesh()); "
                        f"got {mesh!r}.")
    if batch_size is not None and batch_size % mesh.size:
        raise ValueError(f"`batch_size` ({batch_size}) must divide over the {mesh.size} devices of `mesh`.")


def _fit_full(learner: Learner, data, key, progress, checkpoint_path) -> Directions:
    if not _is_array(data):
        raise TypeError(f"the full-batch learner {learner.name!r} needs `data` as an array [n, d]; "
                        f"got {type(data).__name__}.")
    x = validate_data(data, "data")
    state = learner.init(key, x)
    fp = _fingerprint(learner, key, 1, 0, x.shape)
    state, done = _resume(checkpoint_path, fp, state)
    after = None if checkpoint_path is None else partial(_save, checkpoint_path, fp)
    state = run_chunks(lambda s, start, n: _full_update(learner.update, s, x), state, steps=1, chunk_size=1, start=done,
                       progress=progress, desc=learner.name, after_chunk=after)
    return learner.finalize(state)


# ---------------------------------------------------------------- data sources


class _ArraySource:
    """Minibatches sampled with replacement from the rows of an array (in memory or memmapped).

    In memory and without a mesh the rows are drawn inside the compiled scan. A memmap, or any
    array with a mesh, is read on the host: the same row indices, gathered chunk by chunk, each
    process reading only the rows its devices hold.
    """

    def __init__(self, data, key, batch_size, init_rows, mesh):
        self.key, self.batch_size, self.mesh = key, batch_size, mesh
        memmap = isinstance(data, np.memmap)
        self.host = memmap or mesh is not None
        if memmap:
            validate_data(data[:1], "data")
            self.data = data
            n = data.shape[0]
            rows = np.sort(np.random.default_rng(0).choice(n, min(n, init_rows), replace=False))
            self.sample = validate_data(np.asarray(data[rows]), "data")
        else:
            self.data = self.sample = validate_data(data, "data")
            if self.host:
                self.data = np.asarray(self.data)
        self.check = memmap     # rows of an array in memory were checked above
        self.dtype = np.dtype(compute_dtype(self.sample[:1]).dtype)
        self.shape = tuple(data.shape)

    def default_steps(self, steps):
        return steps

    def skip(self, done):
        pass

    def run_chunk(self, update, state, start, n):
        if not self.host:
            return _sampled_chunk(update, state, self.data, self.key, jnp.asarray(start), length=n,
                                  batch_size=self.batch_size)
        d = self.shape[1]
        per = max(1, _HOST_CHUNK_BYTES // (self.batch_size * d * self.data.dtype.itemsize))
        for at in range(start, start + n, per):
            m = min(per, start + n - at)
            idx = np.asarray(_chunk_indices(self.key, jnp.asarray(at), length=m, batch_size=self.batch_size,
                                            n_rows=self.shape[0]))
            state = _batches_chunk(update, state, self._batches(idx), mesh=self.mesh)
        return state

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """``data[idx]`` for an index array ``[m, b]``: ``[m, b, d]`` in the compute dtype."""
        rows = np.asarray(self.data[idx.reshape(-1)]).reshape(*idx.shape, self.shape[1])
        if self.check:
            check_finite(rows, "data")
        return rows.astype(self.dtype, copy=False)

    def _batches(self, idx: np.ndarray) -> jax.Array:
        """The minibatches ``[m, b, d]`` of the row indices ``idx [m, b]``, split over the mesh."""
        if self.mesh is None:
            return jnp.asarray(self._rows(idx))
        shape = (*idx.shape, self.shape[1])
        # each process reads the rows of its own devices only
        return jax.make_array_from_callback(shape, _batch_sharding(self.mesh, 3),
                                            lambda index: self._rows(idx[index[:2]]))


class _IterableSource:
    """Batches taken in order from an iterable (a stream larger than memory)."""

    def __init__(self, data, mesh):
        self.length = len(data) if hasattr(data, "__len__") else None
        self.mesh = mesh
        self.it = iter(data)
        first = next(self.it, None)
        if first is None:
            raise ValueError("`data` is an empty iterable; it must yield at least one [b, d] batch.")
        first = validate_data(first, "data")
        self.pending = [first]
        # with a mesh, each process yields its own rows: the sample is the whole first batch
        self.sample = first if mesh is None else jnp.asarray(sharding.gather(self._global(first[None]))[0])
        self.shape = (None, self.sample.shape[1])

    def _global(self, local: jax.Array) -> jax.Array:
        """``[g, b_local, d]`` batches of this process -> the global ``[g, b, d]`` over the mesh."""
        if self.mesh is None:
            return local
        n_local = sum(dev.process_index == jax.process_index() for dev in self.mesh.devices.flat)
        if local.shape[1] % n_local:
            raise ValueError(f"batches of {local.shape[1]} rows from `data` must divide over this process's "
                             f"{n_local} devices of `mesh`.")
        return jax.make_array_from_process_local_data(_batch_sharding(self.mesh, 3), np.asarray(local))

    def default_steps(self, steps):
        if self.length is None:
            raise ValueError("`steps` must be given when `data` is an iterable without len().")
        return self.length

    def _next(self):
        if self.pending:
            return self.pending.pop()
        batch = next(self.it, None)
        if batch is None:
            raise ValueError("`data` ran out of batches before `steps` updates; give fewer `steps`.")
        return validate_data(batch, "data")

    def skip(self, done):
        for _ in range(done):
            self._next()

    def run_chunk(self, update, state, start, n):
        group: list[jax.Array] = []
        for _ in range(n):
            batch = self._next()
            if group and batch.shape != group[0].shape:
                state = _batches_chunk(update, state, self._global(jnp.stack(group)), mesh=self.mesh)
                group = []
            group.append(batch)
        return _batches_chunk(update, state, self._global(jnp.stack(group)), mesh=self.mesh)


def _is_array(data) -> bool:
    return isinstance(data, (np.ndarray, jax.Array)) or hasattr(data, "__array__")


# ---------------------------------------------------------------- compiled chunks


@partial(jax.jit, static_argnums=(0,))
def _full_update(update, state, x):
    """The whole solve of a full-batch learner, compiled once per (learner settings, data shape)."""
    return update(state, x)


@partial(jax.jit, static_argnames=("update", "length", "batch_size"))
def _sampled_chunk(update, state, x, key, start, *, length, batch_size):
    """``length`` updates on minibatches drawn inside the scan; step ``t`` uses ``fold_in(key, t)``."""

    def body(s, step):
        idx = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, x.shape[0])
        return update(s, x[idx]), None

    state, _ = jax.lax.scan(body, state, start + jnp.arange(length))
    return state


@partial(jax.jit, static_argnames=("length", "batch_size", "n_rows"))
def _chunk_indices(key, start, *, length, batch_size, n_rows):
    """The row indices ``[length, batch_size]`` that ``_sampled_chunk`` would draw."""
    steps = start + jnp.arange(length)
    return jax.vmap(lambda t: jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n_rows))(steps)


def _batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batches ``[steps, b, ...]`` split along ``b`` over the mesh's one axis."""
    return NamedSharding(mesh, PartitionSpec(None, mesh.axis_names[0], *([None] * (ndim - 2))))


@partial(jax.jit, static_argnames=("update", "mesh"))
def _batches_chunk(update, state, batches, mesh=None):
    """One update per batch of ``batches [steps, b, d]``.

    With ``mesh``, each batch stays split over the mesh and the state replicated: a
    data-parallel step, its reductions over the batch done by XLA collectives.
    """
    if mesh is None:
        state, _ = jax.lax.scan(lambda s, b: (update(s, b), None), state, batches)
        return state
    split, whole = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0])), NamedSharding(mesh, PartitionSpec())

    def body(s, b):
        s = update(s, jax.lax.with_sharding_constraint(b, split))
        return jax.lax.with_sharding_constraint(s, whole), None

    state, _ = jax.lax.scan(body, state, batches)
    return state


# ---------------------------------------------------------------- keys and checkpoints


def _fingerprint(learner: Learner, key, steps, batch_size, shape) -> str | None:
    if not all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves((learner.hyperparams, key))):
        return None
    key_bytes = np.asarray(jax.random.key_data(key)).tobytes()
    hyper = sorted((k, hashlib.sha256(np.asarray(v).tobytes()).hexdigest() if hasattr(v, "shape") else repr(v))
                   for k, v in learner.hyperparams.items())
    parts = (learner.name, hyper, key_bytes, steps, batch_size, tuple(shape))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _resume(path, fp, state) -> tuple[Any, int]:
    """``(state, steps_done)`` from a matching checkpoint at ``path``, or ``(state, 0)``."""
    if path is None:
        return state, 0
    if fp is None or not all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(state)):
        raise ValueError("`checkpoint_path` cannot be used under jit or vmap (the state is traced); "
                         "checkpoint each run of a sweep separately.")
    if not Path(path).exists():
        return state, 0
    meta = ckpt.read_metadata(path)
    if meta.get("fingerprint") != fp:
        raise ValueError(f"checkpoint {path} belongs to a different run (other learner, hyperparameters, "
                         "key, steps or data shape); delete it or choose another `checkpoint_path`.")
    saved, _ = ckpt.load_pytree(path, like=state)
    return jax.tree_util.tree_map(jnp.asarray, saved), int(meta["steps_done"])


def _save(path, fp, done, state) -> None:
    """Checkpoint a host copy of ``state``; in a multi-process run process 0 writes it."""
    state = sharding.gather(state)
    if jax.process_index() == 0:
        ckpt.save_pytree(path, state, metadata={"fingerprint": fp, "steps_done": done})


# ---------------------------------------------------------------- hyperparameter checks for factories


def check_number(value, name: str, *, low: float = 0.0, high: float = float("inf"), open_low: bool = False):
    """Return a numeric hyperparameter unchanged, raising ValueError unless it lies in its range.

    A traced value (a ``vmap`` sweep over the hyperparameter) is passed through unchecked.
    """
    if not is_concrete(value):
        return value
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.number))
                                       or (hasattr(value, "shape") and np.shape(value) == ())):
        raise TypeError(f"`{name}` must be a number; got {type(value).__name__}.")
    v = float(value)
    ok = (low < v if open_low else low <= v) and v <= high and np.isfinite(v)
    if not ok:
        lo = "(" if open_low else "["
        raise ValueError(f"`{name}` must be a finite number in {lo}{low}, {high}]; got {value}.")
    return value


def check_choice(value, name: str, choices) -> Any:
    """Return ``value``, raising ValueError unless it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}; got {value!r}.")
    return value


def check_bool(value, name: str) -> bool:
    """Return ``value``, raising TypeError unless it is a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; got {type(value).__name__}.")
    return bool(value)
