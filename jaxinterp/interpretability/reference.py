"""Direct loop implementations of the II and the 2AFC score, one unit and one pair at a time.

They follow the paper's definitions word for word with numpy and Python loops, share no code
with the vectorised implementation, and exist to test and benchmark it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PairSim = Callable[[np.ndarray, np.ndarray], float]


def pixel_l2_sim(x: np.ndarray, y: np.ndarray) -> float:
    """Minus the Euclidean distance between two inputs."""
    return -float(np.sqrt(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)))


def label_sim(x, y) -> float:
    """1 if the labels agree, else 0."""
    return float(int(x) == int(y))


def lpips_sim(feats_x: list[np.ndarray], feats_y: list[np.ndarray], eps: float = 1e-10) -> float:
    """Minus the unweighted LPIPS distance between two inputs' feature maps ``[*spatial, c]``."""
    total = 0.0
    for fx, fy in zip(feats_x, feats_y):
        fx = np.asarray(fx, np.float64).reshape(-1, fx.shape[-1])
        fy = np.asarray(fy, np.float64).reshape(-1, fy.shape[-1])
        nx = fx / (np.linalg.norm(fx, axis=-1, keepdims=True) + eps)
        ny = fy / (np.linalg.norm(fy, axis=-1, keepdims=True) + eps)
        total += float(np.mean(np.sum((nx - ny) ** 2, axis=-1)))
    return -total


def loop_index(acts: np.ndarray, items, sim: PairSim, k: int = 5, include_self_pairs: bool = False) -> np.ndarray:
    """II of every column of ``acts [n, units]``: mean ``sim`` over ordered pairs of its top-k inputs.

    ``include_self_pairs`` averages all ``k x k`` pairs (the authors' II), else the distinct ones.
    """
    acts = np.asarray(acts)
    out = np.zeros(acts.shape[1])
    for u in range(acts.shape[1]):
        top = np.argsort(acts[:, u], kind="stable")[::-1][:k]  # the authors' get_mei_data (ties: later first)
        vals = [sim(items[i], items[j]) for i in top for j in top if include_self_pairs or i != j]
        out[u] = np.mean(vals)
    return out


def loop_two_afc_paper(acts: np.ndarray, items, sim: PairSim, quantiles=(0.0, 0.25), n_trials: int = 20,
                       n_refs: int = 9, seed: int = 42) -> np.ndarray:
    """Klindt et al.'s 2AFC construction, unit by unit and trial by trial.

    Per unit: one legacy numpy generator seeded with ``seed``; for each quantile in order, keep
    the inputs between the float64 ``q`` and ``1-q`` quantiles (more than
    ``4 * n_trials * (n_refs + 1)`` of them), rank them by ascending argsort (stable) and its
    reversal, draw a permutation of the top queries and then one of the bottom queries, and for
    trial ``t`` compare the queries with the references at ranks ``n_trials + n_trials*j + t``,
    z-scoring the trial's ``[2 n_refs, 2]`` similarity block (a zero std counts as 1).

    Returns:
      ``[units, len(quantiles), n_trials]`` probabilities of the correct choice.
    """
    acts = np.asarray(acts, np.float64)
    out = np.zeros((acts.shape[1], len(quantiles), n_trials))
    for u in range(acts.shape[1]):
        rs = np.random.RandomState(seed)
        a = acts[:, u]
        for qi, q in enumerate(quantiles):
            keep = np.flatnonzero((a >= np.quantile(a, q)) & (a <= np.quantile(a, 1 - q)))
            if len(keep) <= n_trials * (n_refs + 1) * 2 * 2:
                raise ValueError("not enough inputs in the quantile range")
            bottom = keep[np.argsort(a[keep], kind="stable")]
            top = bottom[::-1]
            q_top = top[:n_trials][rs.choice(n_trials, n_trials, replace=False)]
            q_bottom = bottom[:n_trials][rs.choice(n_trials, n_trials, replace=False)]
            ranks = n_trials + np.arange(n_refs) * n_trials
            for t in range(n_trials):
                refs = list(top[ranks + t]) + list(bottom[ranks + t])
                s = np.array([[sim(items[r], items[qq]) for qq in (q_top[t], q_bottom[t])] for r in refs])
                s = s - s.mean()
                sd = s.std()
                s = s / (1.0 if sd == 0 else sd)
                pick_top = s[:n_refs, 0].mean() + s[n_refs:, 1].mean()
                pick_bottom = s[:n_refs, 1].mean() + s[n_refs:, 0].mean()
                out[u, qi, t] = 1.0 / (1.0 + np.exp(pick_bottom - pick_top))
    return out


def loop_two_afc(acts: np.ndarray, items, sim: PairSim, q: float = 0.0, n_trials: int = 20, n_refs: int = 9,
                 zscore: str = "unit") -> tuple[np.ndarray, np.ndarray]:
    """2AFC of every column of ``acts [n, units]``; returns ``(scores [units], trial_probs [units, T])``."""
    acts = np.asarray(acts)
    units = acts.shape[1]
    probs = np.zeros((units, n_trials))
    for u in range(units):
        a = acts[:, u]
        lo, hi = np.quantile(a, [q, 1 - q]) if q > 0 else (a.min(), a.max())
        keep = np.array([i for i in range(len(a)) if lo <= a[i] <= hi])
        desc = keep[np.argsort(-a[keep], kind="stable")]
        asc = keep[np.argsort(a[keep], kind="stable")]
        sims = np.zeros((n_trials, 2, 2, n_refs))  # [t, query side, ref side, j]
        for t in range(n_trials):
            query = (desc[t], asc[t])
            refs = ([desc[n_trials + n_trials * j + t] for j in range(n_refs)],
                    [asc[n_trials + n_trials * j + t] for j in range(n_refs)])
            for qs in range(2):
                for rs in range(2):
                    for j in range(n_refs):
                        sims[t, qs, rs, j] = sim(items[query[qs]], items[refs[rs][j]])
        for t in range(n_trials):
            block = sims if zscore == "unit" else sims[t]
            mu, sd = block.mean(), block.std()
            z = (sims[t] - mu) / sd if sd > 0 else np.zeros_like(sims[t])
            m = z.mean(axis=-1)
            correct = m[0, 0] + m[1, 1]
            wrong = m[1, 0] + m[0, 1]
            probs[u, t] = np.exp(correct) / (np.exp(correct) + np.exp(wrong))
    return probs.mean(axis=1), probs
