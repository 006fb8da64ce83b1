"""The one training-loop core: compiled chunks of steps, with progress, checkpoints and resume
between chunks.

Every long loop in jaxinterp (the direction learners' ``directions.fit``, the toy-model trainer
``toy.fit`` and the classifier trainer ``models.train_classifier``) runs its steps as jitted
``lax.scan`` chunks and hands the chunks to ``run_chunks``, which owns everything that happens
*between* them: the tqdm bar, the checkpoint written after each chunk, the resume from a
matching checkpoint at start, and the user's callback. What a step is (a minibatch update, a
vmapped and sharded batch of toy models) stays with the caller.

Example::

    def run_chunk(state, start, n):         # steps start .. start + n - 1, compiled once per n
        return jitted_scan(state, start, n)

    state, done_before = resume(checkpoint_path, fingerprint, like=state)   # (state, 0) if none
    state = run_chunks(run_chunk, state, steps=10_000, chunk_size=500, start=done_before,
                       progress=True, after_chunk=lambda done, s: save(done, s))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np

from jaxinterp._validation import check_key, check_positive_int

State = TypeVar("State")

__all__ = ["chunk_sizes", "run_chunks", "run_keyed_chunks"]


def _check_span(steps, start, chunk_size) -> tuple[int, int, int]:
    """``steps >= 1`` and ``chunk_size >= 1`` ints, ``start`` an int in ``[0, steps]``."""
    steps = check_positive_int(steps, "steps")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
        raise TypeError(f"`start` must be an int; got {type(start).__name__}.")
    if not 0 <= start <= steps:
        raise ValueError(f"`start` must lie in [0, steps={steps}]; got {start}.")
    return steps, int(start), chunk_size


def chunk_sizes(steps: int, start: int, chunk_size: int) -> list[int]:
    """Sizes of the chunks that take a run from step ``start`` to step ``steps``.

    All chunks have ``chunk_size`` steps except possibly the last, so a run compiles at most two
    chunk programs (and a resumed run the same two).

    Args:
      steps: total number of steps of the run.
      start: steps already done (0 for a fresh run).
      chunk_size: steps per chunk.

    Returns:
      The list of chunk lengths, summing to ``steps - start`` (empty when ``start == steps``).
    """
    steps, start, chunk_size = _check_span(steps, start, chunk_size)
    sizes, at = [], start
    while at < steps:
        sizes.append(min(chunk_size, steps - at))
        at += sizes[-1]
    return sizes


def run_chunks(run_chunk: Callable[[State, int, int], State], state: State, *, steps: int,
               chunk_size: int, start: int = 0, progress: bool = False, desc: str = "fit",
               after_chunk: Callable[[int, State], Any] | None = None) -> State:
    """Advance ``state`` from step ``start`` to step ``steps`` one compiled chunk at a time.

    Args:
      run_chunk: ``run_chunk(state, first_step, n_steps) -> state``: runs ``n_steps`` steps
        (normally a jitted ``lax.scan`` with ``n_steps`` static, so it compiles once per chunk
        length). ``first_step`` lets the steps derive their keys by ``fold_in(key, step)``.
      state: the state at step ``start``.
      steps: total number of steps of the run.
      chunk_size: steps per chunk; progress, ``after_chunk`` and interruption happen between
        chunks only, so an interrupted run loses at most one chunk of work.
      start: steps already done (from a resumed checkpoint).
      progress: show a tqdm bar over steps.
      desc: the bar's label.
      after_chunk: ``after_chunk(steps_done, state)`` after every chunk: write a checkpoint,
        record metrics, or report to the user.

    Returns:
      The state at step ``steps``.
    """
    steps, start, chunk_size = _check_span(steps, start, chunk_size)
    if not callable(run_chunk):
        raise TypeError(f"`run_chunk` must be callable; got {type(run_chunk).__name__}.")
    bar = None
    if progress:
        from jaxinterp._progress import progress_bar

        bar = progress_bar(total=steps, initial=start, desc=desc, unit="step", leave=False)
    done = start
    try:
        for n in chunk_sizes(steps, start, chunk_size):
            state = run_chunk(state, done, n)
            done += n
            if after_chunk is not None:
                after_chunk(done, state)
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    return state


def run_keyed_chunks(chunk_fn: Callable[[State, Any], tuple[State, Any]], state: State, *, key, steps: int,
                     chunk_size: int, progress: bool = False, desc: str = "fit") -> tuple[State, np.ndarray]:
    """``run_chunks`` for a loop whose step ``t`` draws its randomness from ``split(key, steps)[t]``.

    The minibatch trainers (``models.train_classifier``, ``midrange.training.train_epochs``) share
    this: one key per step, so a run's minibatches do not depend on the chunk size, and the
    per-step outputs (the losses) collected across chunks.

    Args:
      chunk_fn: ``chunk_fn(state, step_keys [n]) -> (state, outputs [n])``, normally a jitted
        ``lax.scan`` over the keys.
      state: the state at step 0.
      key: PRNG key split into one key per step.
      steps: total number of steps.
      chunk_size: steps per chunk.
      progress: show a tqdm bar over steps.
      desc: the bar's label.

    Returns:
      ``(state, outputs)``: the state after ``steps`` steps and the per-step outputs stacked
      along the first axis (``[steps, ...]``).
    """
    check_key(key, "key")
    if not callable(chunk_fn):
        raise TypeError(f"`chunk_fn` must be callable; got {type(chunk_fn).__name__}.")
    step_keys = jax.random.split(key, check_positive_int(steps, "steps"))
    outputs = []

    def run_chunk(carry, start, n):
        carry, out = chunk_fn(carry, step_keys[start:start + n])
        outputs.append(np.asarray(out))
        return carry

    state = run_chunks(run_chunk, state, steps=steps, chunk_size=chunk_size, progress=progress, desc=desc)
    return state, np.concatenate(outputs)
