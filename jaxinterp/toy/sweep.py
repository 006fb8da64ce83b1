"""The collisions sweep: polysemantic-neuron counts over hidden sizes ``m``, many seeds each.

Each ``m`` is one ``training.fit`` call over all seeds (vmapped, sharded over devices), run one
after another (or, with ``pad=True``, every ``m`` padded with zero columns to the largest so they
share one compiled program; zero columns stay exactly zero, see ``IncidentalConfig.pad_hidden``).
With ``checkpoint_dir`` every ``m`` checkpoints between chunks, so an interrupted sweep resumes
where it stopped and finished sizes are not retrained.

With ``record`` (e.g. ``dynamics.incidental_record()``) and ``record_dir`` the same training also
streams a record of every seed every ``record_every`` steps to disk (``training.fit``'s
``record_path``; read back with ``dynamics.sweep_dynamics``): the counts and the dynamics come
from one training, and the counts are those of the unrecorded sweep.

The seeds are split over every device of every process: after
``jaxinterp.distributed.initialize()`` (e.g. under ``python -m jaxinterp.launch -n 2``) each
process trains its block of seeds and every process gets the whole result. Each seed's numbers
do not depend on the devices or processes, and a checkpoint written by one process count
resumes under another.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int
from jaxinterp.toy import incidental, theory, training


def collisions_sweep(key: jax.Array, base: incidental.IncidentalConfig, hidden_sizes, n_seeds: int, *,
                     chunk_size: int = 500, pad: bool = False, checkpoint_dir: str | os.PathLike | None = None,
                     progress: bool = False, shard: bool = True, mesh: jax.sharding.Mesh | None = None,
                     record: Callable | training.StateRecord | None = None, record_every: int = 0,
                     record_dir: str | os.PathLike | None = None) -> dict:
    """Train ``n_seeds`` models for each ``m`` in ``hidden_sizes`` and count polysemantic neurons.

    Args:
      key: root PRNG key; seed ``s`` uses ``jax.random.split(key, n_seeds)[s]`` for every ``m``.
      base: settings shared by every size (``n_hidden`` and ``pad_hidden`` are replaced).
      hidden_sizes: the ``m`` values.
      n_seeds: instances per size.
      chunk_size: steps per compiled chunk (progress and checkpoints between chunks).
      pad: pad every size to ``max(hidden_sizes)`` columns (one compiled program for all).
      checkpoint_dir: folder for one resumable checkpoint per size.
      progress: show progress bars.
      shard: split the seeds over all devices (of all processes in a multi-process run).
      mesh: the one-axis mesh to split the seeds over instead (``jaxinterp.sharding.leading_axis_mesh``);
        default every device of every process when ``shard``.
      record: optional per-instance record (``training.fit``'s ``record``, e.g.
        ``dynamics.incidental_record()``) taken every ``record_every`` steps of the same training
        and streamed to ``record_dir``; needs ``record_dir``.
      record_every: record interval; divides ``base.steps`` and ``chunk_size``.
      record_dir: folder of the record files: ``m<m>/`` per size, or with ``pad`` one
        ``padded_<sizes>/`` holding every size's seeds (``record_columns`` says which).

    Returns:
      dict: ``n_features``, ``m [k]``, ``counts [k, n_seeds]`` (int), ``count_mean [k]``,
      ``count_sem [k]`` (standard error of the mean over seeds), ``theory [k]`` (``n^2/4m``),
      ``loglog_slope``, ``n_seeds``, ``match_rate [k]`` / ``mean_rank [k]`` (largest initial
      weight vs final winner, averaged over seeds), ``final_loss [k]``, ``seconds [k]``;
      ``record_paths [k]`` (the record folder of each size, None unrecorded) and
      ``record_columns [k, 2]`` (each size's ``[start, stop)`` instances in its folder).
    """
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            and key.shape == ()):
        raise TypeError("`key` must be one typed PRNG key from jax.random.key(seed); "
                        f"got {type(key).__name__} {getattr(key, 'dtype', '')} {getattr(key, 'shape', '')}.")
    if not isinstance(base, incidental.IncidentalConfig):
        raise TypeError(f"`base` must be an IncidentalConfig; got {type(base).__name__}.")
    check_positive_int(n_seeds, "n_seeds")
    hidden_sizes = _check_sizes(hidden_sizes)
    if (record is None) != (record_dir is None):
        raise ValueError("`record` and `record_dir` go together (the records are streamed to the folder); got "
                         f"record={record!r}, record_dir={record_dir!r}.")
    rec = None if record is None else _Recording(record, record_every, Path(record_dir))
    keys = jax.random.split(key, n_seeds)
    k = len(hidden_sizes)
    if pad:
        runs = _padded(keys, base, hidden_sizes, chunk_size, checkpoint_dir, progress, shard, mesh, rec)
    else:
        runs = [_one_size(keys, base, m, chunk_size, checkpoint_dir, progress, shard, mesh, rec)
                for m in hidden_sizes]
    counts = np.stack([r["counts"] for r in runs])
    mean = counts.mean(axis=1)
    sem = counts.std(axis=1, ddof=1) / np.sqrt(n_seeds) if n_seeds > 1 else np.full(k, np.nan)
    return {"n_features": base.n_features, "m": hidden_sizes, "counts": counts, "count_mean": mean,
            "count_sem": sem, "theory": theory.theory_count(base.n_features, hidden_sizes),
            "loglog_slope": theory.loglog_slope(hidden_sizes, mean), "n_seeds": n_seeds,
            **{name: np.asarray([r[name] for r in runs])
               for name in ("match_rate", "mean_rank", "final_loss", "seconds")},
            "record_paths": [r["record_path"] for r in runs],
            "record_columns": np.asarray([r["record_columns"] for r in runs], np.int64).reshape(k, 2)}


class _Recording(NamedTuple):
    """What a recorded sweep passes to each ``training.fit``: the record, its interval and the root folder."""

    record: Callable | training.StateRecord
    every: int
    root: Path

    def fit_kwargs(self, name: str) -> dict:
        return {"record": self.record, "record_every": self.every, "record_path": self.root / name}

    def suffix(self) -> str:
        """Checkpoint-name suffix: a recorded run is another run than the unrecorded one."""
        return f"_rec{self.every}"


def _check_sizes(hidden_sizes) -> list[int]:
    """The ``m`` values as Python ints; TypeError for non-integers, ValueError for none or < 1."""
    if isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__iter__"):
        raise TypeError(f"`hidden_sizes` must be a list of integer sizes; got {type(hidden_sizes).__name__}.")
    sizes = list(hidden_sizes)
    if not sizes:
        raise ValueError("`hidden_sizes` must hold at least one size.")
    for m in sizes:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise TypeError(f"`hidden_sizes` must hold integers; got {m!r} ({type(m).__name__}).")
        if m < 1:
            raise ValueError(f"`hidden_sizes` entries must be >= 1; got {m}.")
    return [int(m) for m in sizes]


def _summarise(w_init, w_final, final_loss, seconds, record_path=None, columns=(0, 0)) -> dict:
    agree = theory.winner_agreement(w_init, w_final)
    return {"counts": np.asarray(incidental.count_polysemantic(w_final)),
            "match_rate": float(np.mean(agree["match_rate"])), "mean_rank": float(np.mean(agree["mean_rank"])),
            "final_loss": float(np.mean(final_loss)), "seconds": seconds,
            "record_path": None if record_path is None else str(record_path), "record_columns": columns}


def _one_size(keys, base, m, chunk_size, checkpoint_dir, progress, shard, mesh, rec) -> dict:
    cfg = dataclasses.replace(base, n_hidden=m, pad_hidden=0)
    init = incidental.make_init(cfg)
    name = f"incidental_n{cfg.n_features}_m{m}" + ("" if rec is None else rec.suffix())
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / f"{name}.npz"
    recorded = {} if rec is None else rec.fit_kwargs(f"m{m}")
    start = time.perf_counter()
    result = training.fit(init, incidental.make_loss_and_grad(cfg), incidental.make_optimizer(cfg), keys,
                          steps=cfg.steps, chunk_size=chunk_size, checkpoint_path=path, run_id=cfg,
                          progress=progress, desc=f"m={m}", shard=shard, mesh=mesh, **recorded)
    seconds = time.perf_counter() - start
    return _summarise(training.initial_params(init, keys), result.state.params, result.state.loss, seconds,
                      recorded.get("record_path"), (0, keys.shape[0]))


def _padded(keys, base, hidden_sizes, chunk_size, checkpoint_dir, progress, shard, mesh, rec) -> list[dict]:
    """All sizes in ONE fit: instances ``(m, seed)``, ``W`` padded to ``max(m)`` columns."""
    width, n_seeds = max(hidden_sizes), keys.shape[0]
    cfg = dataclasses.replace(base, n_hidden=width, pad_hidden=width)
    init = incidental.make_init(cfg)
    all_keys = jnp.tile(keys, len(hidden_sizes))
    hyper = {"n_hidden": jnp.repeat(jnp.asarray(hidden_sizes, jnp.int32), n_seeds)}
    tag = f"padded_{'-'.join(map(str, hidden_sizes))}"
    path = None
    if checkpoint_dir is not None:
        suffix = "" if rec is None else rec.suffix()
        path = Path(checkpoint_dir) / f"incidental_n{cfg.n_features}_{tag}{suffix}.npz"
    recorded = {} if rec is None else rec.fit_kwargs(tag)
    start = time.perf_counter()
    result = training.fit(init, incidental.make_loss_and_grad(cfg), incidental.make_optimizer(cfg), all_keys,
                          steps=cfg.steps, hyper=hyper, chunk_size=chunk_size, checkpoint_path=path,
                          run_id=(cfg, tuple(hidden_sizes)), progress=progress, desc="padded sweep", shard=shard,
                          mesh=mesh, **recorded)
    seconds = (time.perf_counter() - start) / len(hidden_sizes)
    w0 = training.initial_params(init, all_keys, hyper)
    runs = []
    for i, m in enumerate(hidden_sizes):
        sl = slice(i * n_seeds, (i + 1) * n_seeds)
        runs.append(_summarise(w0[sl, :, :m], result.state.params[sl, :, :m], result.state.loss[sl], seconds,
                               recorded.get("record_path"), (sl.start, sl.stop)))
    return runs
