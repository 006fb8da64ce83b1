"""In-silico 2AFC psychophysics (Zimmermann et al. 2023, as used by Klindt et al. 2023).

For each unit and trial ``t``, an observer sees 9 top references (inputs at ranks
``20 + 20j + t`` from the top of the kept range), 9 bottom references (same ranks from the
bottom) and two queries (one of the 20 most and one of the 20 least activating inputs) and must
say which query is the top one. The simulated observer compares with a similarity function:

  logit(choice A is top) = mean_j z(sim(top_ref_j, A)) + mean_j z(sim(bottom_ref_j, B)),

and the swapped expression for the other choice; the choice is a softmax over the two logits.
The score of a unit is the probability of the correct choice averaged over its trials (0.5 =
chance). Vectorised over units.

By default (``protocol="paper"``) the task is built as in Klindt et al.'s code
(david-klindt/Superposition, ``psychophysics/psychophysics.py``): the 20 queries of each side
are shuffled with a fixed seed (separately for top and bottom), similarities are z-scored
within each trial (its 18 x 2 block), quantiles are taken in float64, and more than 800 inputs
must lie in the range. ``protocol="ranked"`` keeps the unshuffled variant (query ``t`` with the
references of trial ``t``, z-scores over all trials of a unit).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._display import array_summary, numbers_summary, summary_html, summary_repr, summary_treescope
from jaxinterp._validation import check_positive_int, check_rank
from jaxinterp.interpretability.exemplars import (
    N_REFS,
    N_TRIALS,
    PAPER_SEED,
    PROTOCOLS,
    TwoAFCStimuli,
    as_compute_array,
    two_afc_stimuli,
)
from jaxinterp.interpretability.index import check_items_match
from jaxinterp.interpretability.similarity import (
    Similarity,
    as_similarity,
    check_indices,
    check_items,
    embed_items,
    pad_units,
)

Array = jax.Array
ZSCORE = ("unit", "trial")


class TwoAFCResult(NamedTuple):
    """2AFC scores.

    Attributes:
      scores: ``[units]`` mean probability of the correct choice.
      trial_probs: ``[units, trials]`` probability of the correct choice in each trial.
      stimuli: the ``TwoAFCStimuli`` used.
    """

    scores: np.ndarray
    trial_probs: np.ndarray
    stimuli: TwoAFCStimuli

    def _summary(self) -> list[tuple[str, str | None]]:
        units, trials = (np.shape(self.trial_probs) + (None, None))[:2]
        refs = np.shape(self.stimuli.references)[-1] if self.stimuli is not None else None
        return [("units", str(units)), ("trials", str(trials)), ("refs", None if refs is None else str(refs)),
                ("scores", numbers_summary(self.scores) or array_summary(self.scores))]

    __repr__ = summary_repr
    _repr_html_ = summary_html
    __treescope_repr__ = summary_treescope


def _trial_probs_one(q: Array, r: Array, similarity: Similarity, zscore: str) -> Array:
    """``q [2, T, e]``, ``r [2, T, R, e]`` -> ``[T]`` probability of the correct choice."""
    # s[a, b, t, j] = sim(query side a of trial t, reference j of side b of trial t)
    s = similarity.compare(q[:, None, :, None, :], r[None, :, :, :, :])
    axes = (0, 1, 3) if zscore == "trial" else (0, 1, 2, 3)
    mu = jnp.mean(s, axis=axes, keepdims=True)
    sd = jnp.std(s, axis=axes, keepdims=True)
    z = jnp.where(sd > 0, (s - mu) / jnp.where(sd > 0, sd, 1.0), 0.0)
    m = jnp.mean(z, axis=-1)  # [2 query side, 2 reference side, T]
    correct = m[0, 0] + m[1, 1]  # top query with top refs, bottom query with bottom refs
    wrong = m[1, 0] + m[0, 1]  # the queries swapped
    return jax.nn.softmax(jnp.stack([correct, wrong]), axis=0)[0]


def _trial_probs_impl(queries: Array, refs: Array, similarity: Similarity, zscore: str, unit_batch: int) -> Array:
    return jax.lax.map(lambda qr: _trial_probs_one(qr[0], qr[1], similarity, zscore), (queries, refs),
                       batch_size=unit_batch)


_trial_probs_jit = jax.jit(_trial_probs_impl, static_argnums=(2, 3, 4))


def two_afc_from_embeddings(query_embeddings: Array, reference_embeddings: Array, similarity: Similarity | str, *,
                            zscore: str = "trial", unit_batch: int = 16) -> Array:
    """Per-trial probabilities of the correct choice from embedded stimuli.

    Args:
      query_embeddings: ``[units, 2, trials, e]`` (side 0: top query, side 1: bottom query);
        finite, half precision computed in float32 (as ``reference_embeddings``).
      reference_embeddings: ``[units, 2, trials, refs, e]`` (side 0: top references).
      similarity: supplies ``compare``.
      zscore: ``"trial"`` (z-score within each trial's ``2 x 2 refs`` block, the authors'
        choice) or ``"unit"`` (over all trials of a unit). Where all similarities are equal the
        z-scores are 0 (chance).
      unit_batch: units per vectorised step (memory ``unit_batch * 4 * trials * refs * e``).

    Returns:
      ``[units, trials]`` probabilities (numpy outside ``jit``).
    """
    similarity = as_similarity(similarity)
    check_rank(query_embeddings, "query_embeddings", 4)
    check_rank(reference_embeddings, "reference_embeddings", 5)
    query_embeddings = as_compute_array(query_embeddings, "query_embeddings")
    reference_embeddings = as_compute_array(reference_embeddings, "reference_embeddings")
    qs, rs = query_embeddings.shape, reference_embeddings.shape
    if qs[1] != 2 or rs[1] != 2 or qs[0] != rs[0] or qs[2] != rs[2] or qs[3] != rs[4]:
        raise ValueError(f"`query_embeddings` [units, 2, trials, e] and `reference_embeddings` "
                         f"[units, 2, trials, refs, e] do not match: got {qs} and {rs}.")
    if zscore not in ZSCORE:
        raise ValueError(f"`zscore` must be one of {ZSCORE}; got {zscore!r}.")
    unit_batch = check_positive_int(unit_batch, "unit_batch")
    units = qs[0]
    out = _trial_probs_jit(pad_units(query_embeddings), pad_units(reference_embeddings), similarity, zscore,
                           unit_batch)
    return out if isinstance(out, jax.core.Tracer) else np.asarray(out)[:units]


#: default bound on the stimulus embeddings and comparison intermediates of ``two_afc_of_stimuli``
MEMORY_BUDGET_BYTES = 1 << 30


def stimulus_block_bytes(block: int, n_trials: int, n_refs: int, e: int, unit_batch: int) -> int:
    """Bytes held at once while scoring ``block`` units with ``e``-dim float32 embeddings.

    Counts, per unit, the embedding table of its distinct stimuli, the gathered query and
    reference embeddings and their padded copy (``3 * 2 * n_trials * (1 + n_refs) * e`` floats),
    plus the ``[2, 2, n_trials, n_refs, e]`` difference of the ``min(unit_batch, block)`` units
    compared at once. The similarity's own features (``embed``) are bounded by ``embed_batch``.
    """
    stim = 3 * 2 * n_trials * (1 + n_refs) * e
    compare = min(unit_batch, block) * 4 * n_trials * n_refs * e
    return 4 * (block * stim + compare)


def block_units(units: int, n_trials: int, n_refs: int, e: int, unit_batch: int, memory_budget_bytes: int) -> int:
    """The largest power-of-two number of units (at most ``bucket_size(units)``) scored within the budget.

    Raises ValueError (naming ``memory_budget_bytes``) when not even one unit fits.
    """
    need = stimulus_block_bytes(1, n_trials, n_refs, e, unit_batch)
    if need > memory_budget_bytes:
        raise ValueError(f"`memory_budget_bytes` ({memory_budget_bytes}) is below the {need} bytes needed to score "
                         f"one unit with {e}-dim embeddings; raise it.")
    block = 1
    while block < units and stimulus_block_bytes(2 * block, n_trials, n_refs, e, unit_batch) <= memory_budget_bytes:
        block *= 2
    return block


def _embedding_dim(similarity: Similarity, items) -> int:
    """``e`` of ``similarity.embed`` on ``items`` (from shapes only; nothing is computed)."""
    first = jnp.asarray(np.asarray(items[:1]))
    shape = jax.eval_shape(similarity.embed, first).shape
    if len(shape) != 2:
        raise ValueError(f"`similarity.embed(items)` must return [n, e]; got shape {shape}.")
    return int(shape[1])


def two_afc_of_stimuli(stimuli: TwoAFCStimuli, items, similarity: Similarity | str, *, zscore: str = "trial",
                       unit_batch: int = 16, embed_batch: int = 1024, check_finite: bool = True,
                       memory_budget_bytes: int = MEMORY_BUDGET_BYTES) -> TwoAFCResult:
    """2AFC scores of every unit given its stimuli (``two_afc_stimuli`` or the streamed version).

    Units are scored in blocks: a block's stimuli are embedded, compared and dropped before the
    next, so the memory held is ``stimulus_block_bytes(block, ...)`` <= ``memory_budget_bytes``
    whatever the number of units (an item shared by units of different blocks is embedded once
    per block). Scores do not depend on the blocking.

    Args:
      stimuli: ``TwoAFCStimuli`` with ``queries [units, 2, T]`` and ``references [units, 2, T, R]``.
      items: ``[n, ...]`` what the similarity compares.
      similarity: a ``Similarity``.
      zscore, unit_batch: see ``two_afc_from_embeddings``.
      embed_batch: items embedded per call.
      check_finite: refuse NaN/inf anywhere in ``items`` (False: only in the stimuli used).
      memory_budget_bytes: bound on the stimulus embeddings and comparison intermediates held at
        once (default 1 GiB; ``block_units`` picks the block).

    Returns:
      ``TwoAFCResult``.
    """
    similarity = as_similarity(similarity)
    q, r = np.asarray(stimuli.queries), np.asarray(stimuli.references)
    check_rank(q, "stimuli.queries", 3)
    check_rank(r, "stimuli.references", 4)
    if q.shape[:3] != r.shape[:3]:
        raise ValueError(f"`stimuli.queries` {q.shape} and `stimuli.references` {r.shape} disagree on "
                         f"[units, 2, trials].")
    n = check_items(items, check_finite=check_finite)
    check_indices(q, n, "stimuli.queries")
    check_indices(r, n, "stimuli.references")
    unit_batch = check_positive_int(unit_batch, "unit_batch")
    memory_budget_bytes = check_positive_int(memory_budget_bytes, "memory_budget_bytes")
    units, _, n_trials, n_refs = r.shape
    block = block_units(units, n_trials, n_refs, _embedding_dim(similarity, items), unit_batch,
                        memory_budget_bytes)
    probs = []
    for start in range(0, units, block):
        sel = slice(start, start + block)
        qe = embed_items(similarity, items, q[sel], batch_size=embed_batch, check_finite=False)
        re = embed_items(similarity, items, r[sel], batch_size=embed_batch, check_finite=False)
        probs.append(np.asarray(two_afc_from_embeddings(qe, re, similarity, zscore=zscore,
                                                        unit_batch=unit_batch)))
        del qe, re
    probs = np.concatenate(probs, axis=0)
    return TwoAFCResult(probs.mean(axis=1), probs, stimuli)


def psychophysics(acts, items, similarity: Similarity | str, *, q: float = 0.0, protocol: str = "paper",
                  seed: int = PAPER_SEED, draw: int | None = None, n_trials: int = N_TRIALS,
                  n_refs: int = N_REFS, zscore: str | None = None, unit_batch: int = 16,
                  embed_batch: int = 1024, check_finite: bool = True,
                  memory_budget_bytes: int = MEMORY_BUDGET_BYTES) -> TwoAFCResult:
    """In-silico 2AFC score of every unit (column) of ``acts``.

    Args:
      acts: ``[n, units]`` responses to ``n`` inputs; more than ``4 * n_trials * (1 + n_refs)``
        (800 for the defaults; ``"ranked"``: at least 400) inside each unit's ``[q, 1-q]``
        quantile range. float16/bfloat16 are computed in float32 (float64 for the quantiles).
      items: ``[n, ...]`` the inputs as the similarity sees them (finite).
      similarity: a ``Similarity`` or a built-in's name (``"pixel"``, ``"mean_colour"``; see ``similarity.NAMED``).
      q: difficulty quantile (0: extremes; 0.25: the harder task).
      protocol: ``"paper"`` (Klindt et al.'s construction, the default) or ``"ranked"``; see
        ``two_afc_stimuli``.
      seed, draw: the paper protocol's query shuffle (``query_orders``); ``draw=None`` takes the
        authors' draw for ``q``.
      n_trials: trials per unit (20).
      n_refs: references per side (9).
      zscore: ``"trial"`` or ``"unit"``; None takes the protocol's (paper: ``"trial"``, ranked:
        ``"unit"``).
      unit_batch, embed_batch, check_finite, memory_budget_bytes: see ``two_afc_of_stimuli``
        (units are scored in blocks whose stimulus embeddings fit in the budget, default 1 GiB).

    Returns:
      ``TwoAFCResult`` (``scores [units]`` in ``(0, 1)``; 0.5 is chance).

    Raises:
      ValueError: NaN/inf in ``acts``, in ``items`` or in the embeddings of the stimuli drawn from ``items``,
        too few inputs in range, mismatched lengths, constant units, an unknown ``protocol``.
    """
    similarity = as_similarity(similarity)
    check_rank(acts, "acts", 2)
    check_items_match(items, int(np.shape(acts)[0]), check_finite)
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}.")
    if zscore is None:
        zscore = "trial" if protocol == "paper" else "unit"
    stimuli = two_afc_stimuli(acts, q, n_trials=n_trials, n_refs=n_refs, protocol=protocol, seed=seed, draw=draw)
    return two_afc_of_stimuli(stimuli, items, similarity, zscore=zscore, unit_batch=unit_batch,
                              embed_batch=embed_batch, check_finite=False,
                              memory_budget_bytes=memory_budget_bytes)


def max_score() -> float:
    """The largest attainable mean 2AFC probability (per-trial or per-unit z-scores): ``sigmoid(4)``.

    The logit difference of a trial is a signed mean of z-scores with weights ``+-1/n_refs``
    (``4 * n_refs`` of them, summing to 0, norm ``2 / sqrt(n_refs)``). Under zero mean and unit
    variance over a trial's ``4 * n_refs`` z-scores (or over all trials' z-scores, averaging the
    trials) its maximum is ``sqrt(4 * n_refs) * 2 / sqrt(n_refs) = 4``, for any numbers of trials
    and references; it is reached when same-side similarities are all equal and above all equal
    cross-side ones.
    """
    return float(jax.nn.sigmoid(4.0))
