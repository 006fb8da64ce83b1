"""Training dynamics of many toy models, streamed to disk in bounded memory.

``training.fit(..., record=..., record_every=r, record_path=DIR)`` computes a record of every
instance every ``r`` steps inside the compiled chunk and, after each chunk, writes the chunk's
records into ``DIR`` (``RecordFile``): one ``.npy`` per record leaf, ``[n_records, instances,
...]`` (time-major, so a chunk's records are one contiguous block), plus ``records.json``
(the run's fingerprint, the leaves, how many records are written). The host holds one chunk of
records at a time, whatever the number of steps; the records are written before the chunk's
checkpoint, so a run resumed from its checkpoint rewrites the same rows with the same values and
ends with a file identical to an uninterrupted run's.

For the incidental model, ``incidental_record()`` records per instance the loss, the number of
polysemantic neurons and how many features changed their neuron (``assignment``) since the
previous record; ``count_quantiles`` reads the count back, a block of records at a time, as
quantiles over seeds at each recorded step. ``toy.collisions_sweep(..., record=incidental_record(),
record_every=r, record_dir=DIR)`` records its own training (counts and dynamics from one
training), and ``sweep_dynamics`` summarises it.

Example::

    rec = dynamics.incidental_record()
    result = training.fit(init, loss_and_grad, opt, keys, steps=7500, record=rec, record_every=10,
                          record_path="runs/m256")
    steps, values = dynamics.load_records("runs/m256")      # values["polysemantic"]: [750, seeds]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int
from jaxinterp.toy import incidental
from jaxinterp.toy.sweep import collisions_sweep
from jaxinterp.toy.training import StateRecord, TrainState

META = "records.json"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class Records(NamedTuple):
    """Records read back from a ``record_path`` folder.

    Attributes:
      steps: ``[n_records]`` int, the step count after which each record was taken.
      values: dict from leaf name to a read-only ``numpy.memmap`` ``[n_records, instances, ...]``.
      written: records written so far (``n_records`` once the run finished).
    """

    steps: np.ndarray
    values: dict[str, np.ndarray]
    written: int


def leaf_names(tree: Any) -> list[str]:
    """File names of the leaves of a record pytree: dict keys / indices joined by ``.``; ``record`` for a bare array."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names.append(re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(parts)) or "record")
    if len(set(names)) != len(names):
        raise ValueError(f"record leaves need distinct names; got {names}.")
    return names


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


class RecordFile:
    """The per-instance records of one ``fit`` run, streamed to a folder (see the module docstring).

    Args:
      path: the folder.
      spec: one instance's record, a pytree of ``jax.ShapeDtypeStruct``.
      n_instances: instances of the run.
      steps: total steps of the run.
      record_every: record interval (divides ``steps``).
      fingerprint: the run's fingerprint; a resumed run refuses a folder of another run.
    """

    def __init__(self, path, spec, *, n_instances: int, steps: int, record_every: int, fingerprint: str):
        self.path = Path(path)
        leaves, self.treedef = jax.tree_util.tree_flatten(spec)
        self.names = leaf_names(spec)
        self.shapes = [(steps // record_every, n_instances, *leaf.shape) for leaf in leaves]
        self.dtypes = [np.dtype(leaf.dtype) for leaf in leaves]
        self.meta = {"fingerprint": fingerprint, "steps": steps, "record_every": record_every,
                     "instances": n_instances, "written": 0,
                     "leaves": {n: {"shape": list(s), "dtype": d.str} for n, s, d in zip(self.names, self.shapes,
                                                                                        self.dtypes)}}

    def like(self, steps_done: int) -> None:
        """Records are not part of the checkpoint (they are in the folder)."""
        del steps_done

    def saved(self) -> None:
        """What the checkpoint holds of the records: nothing."""

    def start(self, first_record: int, saved=None) -> None:
        """Create the folder's files (``first_record == 0``) or reopen them to resume at ``first_record``."""
        del saved
        if first_record == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
                np.lib.format.open_memmap(self.path / f"{name}.npy", mode="w+", dtype=dtype, shape=shape).flush()
            _write_json(self.path / META, self.meta)
            return
        meta_path = self.path / META
        old = json.loads(meta_path.read_text()) if meta_path.exists() else None
        if old is None or {**old, "written": 0} != {**self.meta, "written": 0}:
            raise ValueError(f"`record_path` {self.path} does not hold this run's records (missing, or another "
                             "run's); delete the checkpoint to start over, or pass the folder the run wrote to.")
        if old["written"] < first_record:
            raise ValueError(f"`record_path` {self.path} holds {old['written']} records, fewer than the "
                             f"{first_record} the checkpoint has passed; delete the checkpoint to start over.")
        self.meta["written"] = first_record

    def append(self, rec) -> None:
        """Write one chunk's records, leaves ``[instances, k, ...]``, after those already written."""
        at = self.meta["written"]
        for name, leaf in zip(self.names, jax.tree_util.tree_leaves(rec)):
            block = np.swapaxes(np.asarray(leaf), 0, 1)
            out = np.lib.format.open_memmap(self.path / f"{name}.npy", mode="r+")
            out[at:at + block.shape[0]] = block
            out.flush()
            del out
        self.meta["written"] = at + block.shape[0]
        _write_json(self.path / META, self.meta)

    def history(self):
        """The records as a pytree of read-only memmap views ``[instances, n_records, ...]``."""
        values = load_records(self.path).values
        return jax.tree_util.tree_unflatten(self.treedef, [np.swapaxes(values[n], 0, 1) for n in self.names])


def load_records(path: str | os.PathLike) -> Records:
    """The records a ``fit(..., record_path=path)`` run wrote (read-only memmaps, nothing loaded).

    Args:
      path: the ``record_path`` folder.

    Returns:
      ``Records``: ``steps [n_records]``, ``values`` (name -> ``[n_records, instances, ...]``)
      and the number of records ``written``.
    """
    path = Path(path)
    if not (path / META).exists():
        raise ValueError(f"`path` {path} holds no records ({META} not found).")
    meta = json.loads((path / META).read_text())
    values = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in meta["leaves"]}
    n = meta["steps"] // meta["record_every"]
    return Records(np.arange(1, n + 1) * meta["record_every"], values, int(meta["written"]))


def assignment(w: jax.Array) -> jax.Array:
    """Each feature's neuron: ``argmax_k |W_ik|``, int32 ``[..., n]`` for weights ``[..., n, m]``."""
    return jnp.argmax(jnp.abs(w), axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _IncidentalRecord:
    low: float
    high: float
    min_features: int

    def __call__(self, previous: jax.Array, state: TrainState) -> dict[str, jax.Array]:
        w = state.params
        count = incidental.count_polysemantic(w, low=self.low, high=self.high, min_features=self.min_features)
        changes = jnp.sum(assignment(previous) != assignment(w)).astype(jnp.int32)
        return {"loss": state.loss, "polysemantic": count, "assignment_changes": changes}


def incidental_record(*, low: float = 0.8, high: float = 1.2, min_features: int = 2) -> StateRecord:
    """The incidental model's per-instance record for ``training.fit``.

    Every ``record_every`` steps: ``loss`` (float32, the loss at the last step taken),
    ``polysemantic`` (int32, ``incidental.count_polysemantic`` with these thresholds) and
    ``assignment_changes`` (int32, features whose ``assignment`` differs from the previous
    record's, or from the initial weights' at the first record; with ``record_every=1``, per
    step). Zero padding columns change none of them.

    Args:
      low, high: a neuron represents a feature when ``low <= |W_ik| <= high``.
      min_features: features that make a neuron polysemantic.

    Returns:
      A ``training.StateRecord`` (equal for equal settings, so compiled programs are shared).
    """
    if not low <= high:
        raise ValueError(f"need low <= high; got low={low}, high={high}.")
    check_positive_int(min_features, "min_features")
    return StateRecord(_IncidentalRecord(float(low), float(high), int(min_features)))


def count_quantiles(values: np.ndarray, quantiles=QUANTILES, *, block: int = 4096) -> np.ndarray:
    """Quantiles over instances of a record ``[n_records, instances]``, read ``block`` records at a time.

    Args:
      values: ``[n_records, instances]`` (e.g. ``load_records(path).values["polysemantic"]``,
        a memmap: only ``block`` records are in memory at once).
      quantiles: the quantile levels, in [0, 1].
      block: records per read.

    Returns:
      float64 ``[len(quantiles), n_records]``.
    """
    if np.ndim(values) != 2:
        raise ValueError(f"`values` must be [n_records, instances]; got shape {np.shape(values)}.")
    q = np.asarray(quantiles, float)
    if q.ndim != 1 or q.size == 0 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"`quantiles` must be levels in [0, 1]; got {quantiles}.")
    check_positive_int(block, "block")
    return per_record(values, lambda b: np.quantile(b, q, axis=1), block=block)


def per_record(values: np.ndarray, fn, *, block: int = 4096) -> np.ndarray:
    """``fn`` of each block of ``block`` records of ``values [n_records, instances]`` (as float64),
    concatenated along the last axis: statistics over instances without loading every record."""
    return np.concatenate([fn(np.asarray(values[i:i + block], float)) for i in range(0, len(values), block)], axis=-1)


def _summarise_run(path: str | os.PathLike, columns, quantiles) -> dict:
    """Per-record statistics over the seeds ``columns = (start, stop)`` of one record folder, a
    block of records at a time."""
    recs = load_records(path)
    cols = slice(int(columns[0]), int(columns[1]))
    v = {name: values[:, cols] for name, values in recs.values.items()}   # memmap views: nothing read yet
    return {"count_quantiles": count_quantiles(v["polysemantic"], quantiles),
            "count_mean": per_record(v["polysemantic"], lambda b: b.mean(axis=1)),
            "changes_median": count_quantiles(v["assignment_changes"], (0.5,))[0],
            "loss_median": count_quantiles(v["loss"], (0.5,))[0],
            "final_counts": np.asarray(v["polysemantic"][-1]), "steps": recs.steps}


def sweep_dynamics(sweep: dict, quantiles=QUANTILES) -> dict:
    """The counts through training of a sweep recorded with ``incidental_record()``.

    Args:
      sweep: ``toy.collisions_sweep(..., record=incidental_record(), record_every=r,
        record_dir=DIR)``'s dict (its ``record_paths`` and ``record_columns`` say where each
        size's records are).
      quantiles: quantile levels over seeds.

    Returns:
      dict: ``m [k]``, ``steps [n_records]``, ``quantiles [q]``, ``count_quantiles [k, q,
      n_records]``, ``count_mean [k, n_records]``, ``changes_median [k, n_records]``
      (features changing neuron per interval), ``loss_median [k, n_records]``, ``final_counts
      [k, n_seeds]`` (the last record: the final weights' counts).
    """
    paths = sweep.get("record_paths")
    if not paths or any(p is None for p in paths):
        raise ValueError("`sweep` was not recorded: run collisions_sweep with record=incidental_record(), "
                         "record_every and record_dir.")
    runs = [_summarise_run(p, c, quantiles) for p, c in zip(paths, sweep["record_columns"])]
    out = {name: np.stack([r[name] for r in runs]) for name in runs[0] if name != "steps"}
    return {"m": list(sweep["m"]), "steps": runs[0]["steps"], "quantiles": list(quantiles), **out}


def collisions_dynamics(key: jax.Array, base: incidental.IncidentalConfig, hidden_sizes, n_seeds: int, *,
                        record_every: int, record_dir: str | os.PathLike | None = None, chunk_size: int = 500,
                        quantiles=QUANTILES, progress: bool = False, shard: bool = True, pad: bool = False) -> dict:
    """The collisions sweep's training, recorded: the polysemantic count of every seed through training.

    ``toy.collisions_sweep(key, base, hidden_sizes, n_seeds, record=incidental_record(), ...)``
    (one training per size, or one padded training with ``pad``) with the records streamed to
    ``record_dir``, so thousands of seeds fit in bounded host memory; the summary
    (``sweep_dynamics``) is read back a block at a time. To get the sweep's counts from the
    same training, call ``collisions_sweep`` with the record and ``sweep_dynamics`` directly.

    Args:
      key: root PRNG key (the sweep's).
      base: settings shared by every size (``n_hidden`` and ``pad_hidden`` are replaced).
      hidden_sizes: the ``m`` values.
      n_seeds: instances per size.
      record_every: record interval; divides ``base.steps`` and ``chunk_size``.
      record_dir: folder for the record files (kept); None: a temporary folder, removed after
        the summary is read.
      chunk_size: steps per compiled chunk.
      quantiles: quantile levels over seeds.
      progress: show progress bars.
      shard: split the seeds over all devices.
      pad: train every size padded to the largest in one program.

    Returns:
      ``sweep_dynamics``'s dict.
    """
    with tempfile.TemporaryDirectory(prefix="jaxinterp-dynamics-") as tmp:
        res = collisions_sweep(key, base, hidden_sizes, n_seeds, chunk_size=chunk_size, pad=pad, progress=progress,
                               shard=shard, record=incidental_record(), record_every=record_every,
                               record_dir=tmp if record_dir is None else record_dir)
        return sweep_dynamics(res, quantiles)
