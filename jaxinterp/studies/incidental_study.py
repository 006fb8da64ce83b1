"""Study ``incidental``: incidental polysemanticity (Lecomte et al. 2023) against ``n^2 / (4m)``.

The collisions sweep (default ``n = 64``, ``m = 64, 128, 256, 512``, 128 seeds, 7500 AdamW steps,
``lambda = 1e-3``, lr ``1e-3``, weight decay 0.01) counts polysemantic neurons per seed and
compares the mean with ``n^2/(4m)``; the same training records the count of every seed every
``record_every`` steps (``toy.dynamics``, streamed to disk), and the ``dynamics`` figure shows its
distribution over seeds through training at each m (median and quantile bands);
the theory parts simulate the sparsification ODE against its
closed forms, run the Bernoulli-vs-Gaussian noise experiment, measure how often the largest
initial weight picks the final neuron, and train the classic superposition toy model
(Elhage et al. 2022) over feature sparsity for contrast.

``Config.paper_scale()`` (on the command line: ``--n-features 256 --hidden 256 512 1024 2048
4096 --seeds 16``) is the paper's own setting: 12 minutes on 2 CPU cores run with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (seeds sharded over both), measured at
71.6 ± 1.2 polysemantic neurons at m=256 (paper about 72) and 3.75 ± 0.52 at m=4096 (paper 3.8).
The counts and the dynamics come from one training (``--record-every 0`` skips the record).
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinterp.keys import named_key
from jaxinterp.studies import claims as claims_lib
from jaxinterp.studies.base import Study, StudyConfig, progress_enabled

NAME = "incidental"
# Published counts (Lecomte et al. 2023): {n_features: {m: polysemantic neurons}}
PAPER_COUNTS = {64: {64: 15.0, 128: 8.0, 256: 4.0, 512: 2.0}, 256: {256: 72.0, 4096: 3.8}}
# Noise experiment (paper: n=8, m=16, sigma=0.15): Bernoulli noise drives the mean fourth norm
# to about 0.8 (by about 1e4 steps); Gaussian noise leaves it near 0.15-0.17.
PAPER_NOISE = {"sigma": 0.15, "bernoulli": 0.8, "gaussian": 0.16, "min_steps": 10_000}


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the ``incidental`` study.

    Attributes:
      n_features: features n of the collisions sweep.
      hidden: hidden sizes m of the sweep.
      seeds: trained instances per m.
      steps: AdamW steps per instance.
      l1: L1 coefficient lambda.
      lr: AdamW learning rate.
      weight_decay: AdamW weight decay.
      chunk_size: steps per compiled scan chunk.
      pad: pad all m to the largest and train them in one program.
      checkpoint_dir: folder for resumable checkpoints (one per m); None for none.
      record_every: steps between records of the training dynamics (divides ``steps`` and
        ``chunk_size``); 0 skips the dynamics (the sweep's training is recorded, not repeated).
      dynamics_dir: folder for the dynamics' record files (one folder per m); None: a
        temporary folder, deleted once the dynamics are summarised (the result's
        ``sweep["record_paths"]`` are then None).
      noise_steps: SGD steps of the noise experiment.
      noise_seeds: runs per noise kind and scale.
      superposition_steps: training steps of each superposition toy model.
      feature_probabilities: feature probabilities of the superposition sweep.
      sparsification_m: entries of the simulated sparsification ODE.
      sparsification_l1: lambda of the simulated sparsification ODE.
    """

    n_features: int = 64
    hidden: tuple[int, ...] = (64, 128, 256, 512)
    seeds: int = 128
    steps: int = 7500
    l1: float = 1e-3
    lr: float = 1e-3
    weight_decay: float = 0.01
    chunk_size: int = 500
    pad: bool = False
    checkpoint_dir: str | None = None
    record_every: int = 50
    dynamics_dir: str | None = None
    noise_steps: int = 20_000
    noise_seeds: int = 5
    superposition_steps: int = 3000
    feature_probabilities: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
    sparsification_m: int = 10_000
    sparsification_l1: float = 1e-3

    @classmethod
    def quick(cls) -> Config:
        """n=32, m=32..128, 16 seeds, 2000 steps with a stronger L1 and learning rate (about a minute)."""
        return cls(n_features=32, hidden=(32, 64, 128), seeds=16, steps=2000, l1=3e-3, lr=1e-2, chunk_size=1000,
                   pad=True, noise_steps=2000, noise_seeds=2, superposition_steps=400, sparsification_m=1000,
                   sparsification_l1=1e-2)

    @classmethod
    def paper_scale(cls) -> Config:
        """The paper's setting: n=256, m=256..4096 (powers of 2), 16 seeds."""
        return cls(n_features=256, hidden=(256, 512, 1024, 2048, 4096), seeds=16)

    def validate(self) -> None:
        """Positive sizes and steps; non-negative L1 and weight decay; probabilities in (0, 1]."""
        super().validate()
        for name in ("n_features", "seeds", "steps", "chunk_size", "noise_seeds", "superposition_steps",
                     "sparsification_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)}.")
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"`hidden` must be one or more positive sizes; got {self.hidden}.")
        if self.noise_steps < 100:
            raise ValueError(f"`noise_steps` must be at least 100 (the fourth norm is recorded every 100 steps); "
                             f"got {self.noise_steps}.")
        if self.record_every < 0 or (self.record_every and (self.steps % self.record_every
                                                             or self.chunk_size % self.record_every)):
            raise ValueError(f"`record_every` must be 0 or divide `steps` ({self.steps}) and `chunk_size` "
                             f"({self.chunk_size}); got {self.record_every}.")
        for name in ("l1", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0; got {getattr(self, name)}.")
        for name in ("lr", "sparsification_l1"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)}.")
        if not self.feature_probabilities or not all(0 < p <= 1 for p in self.feature_probabilities):
            raise ValueError(f"`feature_probabilities` must be in (0, 1]; got {self.feature_probabilities}.")


class Result(NamedTuple):
    """What ``compute`` returns.

    Attributes:
      config: the settings it ran with.
      sweep: ``toy.collisions_sweep``'s dict (``m``, ``counts [k, seeds]``, ``count_mean``, ...).
      trace: the simulated sparsification (``theory.SparsificationTrace``).
      ode: ``theory.sparsification_agreement`` of the trace.
      noise: ``theory.NoiseResult``.
      superposition: ``toy.superposition.sweep_sparsity``'s dict.
      dynamics: ``toy.dynamics.sweep_dynamics``'s dict (counts through training, from the
        sweep's own training), or None when ``record_every`` is 0.
    """

    config: Config
    sweep: dict[str, Any]
    trace: Any
    ode: dict[str, float]
    noise: Any
    superposition: dict[str, Any]
    dynamics: dict[str, Any] | None = None


def compute(config: Config, key) -> Result:
    """Run the collisions sweep and its dynamics, the sparsification ODE, the noise experiment and the
    superposition sweep."""
    from jaxinterp.toy import dynamics, incidental, superposition, sweep, theory

    progress = progress_enabled()
    base = incidental.IncidentalConfig(n_features=config.n_features, n_hidden=config.hidden[0], l1=config.l1,
                                       learning_rate=config.lr, weight_decay=config.weight_decay,
                                       steps=config.steps)
    with tempfile.TemporaryDirectory(prefix="jaxinterp-dynamics-") as tmp:
        recorded = {} if not config.record_every else {
            "record": dynamics.incidental_record(), "record_every": config.record_every,
            "record_dir": config.dynamics_dir or tmp}
        res = sweep.collisions_sweep(named_key(key, "collisions"), base, list(config.hidden), config.seeds,
                                     chunk_size=config.chunk_size, pad=config.pad,
                                     checkpoint_dir=config.checkpoint_dir, progress=progress, **recorded)
        # in a multi-process run process 0 writes the records (and the results); the others skip reading them
        dyn = dynamics.sweep_dynamics(res) if recorded and jax.process_index() == 0 else None
    if recorded and not config.dynamics_dir:   # the temporary record files are gone: point at nothing
        res = {**res, "record_paths": [None] * len(res["record_paths"])}
    m_ode, l1_ode = config.sparsification_m, config.sparsification_l1
    trace = theory.simulate_sparsification(named_key(key, "sparsification"), m_ode, l1_ode)
    noise = theory.noise_experiment(named_key(key, "noise"), steps=config.noise_steps, n_seeds=config.noise_seeds,
                                    record_every=100, chunk_size=min(10_000, config.noise_steps), progress=progress)
    sup_cfg = superposition.SuperpositionConfig(steps=config.superposition_steps, batch_size=256)
    sup = superposition.sweep_sparsity(named_key(key, "superposition"), sup_cfg, list(config.feature_probabilities),
                                       progress=progress)
    return Result(config, res, trace, theory.sparsification_agreement(trace, m_ode, l1_ode), noise, sup, dyn)


def metrics(result: Result) -> dict:
    """The sweep (``n_features``, ``m``, ``count_mean``, ``count_sem``, ``theory``, ``loglog_slope``,
    ``n_seeds``, ``counts_per_seed``, ``ratio_to_theory``, ...) and the theory experiments."""
    res, trace, noise, sup = result.sweep, result.trace, result.noise, result.superposition
    ratio = np.asarray(res["count_mean"]) / np.asarray(res["theory"])
    return {
        "n_features": res["n_features"], "m": res["m"], "count_mean": res["count_mean"],
        "count_sem": res["count_sem"], "theory": res["theory"], "loglog_slope": res["loglog_slope"],
        "n_seeds": res["n_seeds"], "counts_per_seed": res["counts"], "ratio_to_theory": ratio,
        "within_factor_1_5": bool(np.all((ratio >= 1 / 1.5) & (ratio <= 1.5))),
        "final_loss_mean": res["final_loss"], "sweep_seconds": res["seconds"],
        "winner_match_rate": res["match_rate"], "winner_match_chance": [1.0 / m for m in res["m"]],
        "winner_mean_rank": res["mean_rank"],
        "sparsification": {"m": result.config.sparsification_m, "l1": result.config.sparsification_l1, **result.ode,
                           "t": trace.t[::10], "n_active": trace.n_active[::10], "l1_norm": trace.l1_norm[::10]},
        "noise": {"kinds": list(noise.kinds), "sigmas": list(noise.sigmas), "steps": noise.steps,
                  "fourth_norm_mean": noise.fourth_norm.mean(axis=2),
                  "initial": float(noise.fourth_norm[..., 0].mean()),
                  "final": noise.fourth_norm[..., -1].mean(axis=-1)},
        "superposition": {k: sup[k] for k in ("feature_probability", "dimensions_per_feature", "n_represented",
                                              "loss", "feature_dimensionality")},
        "dynamics": None if result.dynamics is None else dynamics_summary(result.dynamics),
    }


def dynamics_summary(dyn: dict, max_points: int = 50) -> dict:
    """A compact summary of the counts through training, at most ``max_points`` recorded steps.

    Keys: ``steps [p]`` (every few records, the last included), ``quantiles``,
    ``count_quantiles [k, q, p]`` and ``count_mean [k, p]`` over seeds, ``changes_median [k, p]``
    (features changing neuron between records), ``final_count_mean [k]`` (the last record's),
    ``settle_step [k]`` (the first recorded step from which the median count stays at its final
    value).
    """
    steps = np.asarray(dyn["steps"])
    idx = np.arange(len(steps) - 1, -1, -max(1, -(-len(steps) // max_points)))[::-1]
    return {"m": list(dyn["m"]), "steps": steps[idx], "quantiles": list(dyn["quantiles"]),
            "count_quantiles": np.asarray(dyn["count_quantiles"])[:, :, idx],
            "count_mean": np.asarray(dyn["count_mean"])[:, idx],
            "changes_median": np.asarray(dyn["changes_median"])[:, idx],
            "final_count_mean": np.asarray(dyn["final_counts"]).mean(axis=1),
            "settle_step": [_settle_step(steps, row) for row in _middle(dyn)]}


def _middle(dyn: dict) -> np.ndarray:
    """``[k, n_records]``: the median count over seeds (the mean when 0.5 is not among the quantiles)."""
    q = list(dyn["quantiles"])
    return np.asarray(dyn["count_quantiles"])[:, q.index(0.5)] if 0.5 in q else np.asarray(dyn["count_mean"])


def _settle_step(steps: np.ndarray, series: np.ndarray) -> int:
    """The first recorded step from which ``series`` stays at its final value."""
    off = np.nonzero(series != series[-1])[0]
    return int(steps[0] if off.size == 0 else steps[off[-1] + 1])


def summary(result: Result) -> dict:
    """Slope, counts per m against the theory, winner agreement."""
    res = result.sweep
    ratio = np.asarray(res["count_mean"]) / np.asarray(res["theory"])
    return {"loglog slope (theory -1)": round(float(res["loglog_slope"]), 3),
            "seeds per m": res["n_seeds"],
            **{f"count m={m} (theory {t:g})": f"{c:.2f} ± {e:.2f}"
               for m, t, c, e in zip(res["m"], res["theory"], res["count_mean"], res["count_sem"])},
            "within 1.5x of n^2/4m": bool(np.all((ratio >= 1 / 1.5) & (ratio <= 1.5))),
            "winner = largest initial weight": f"{np.mean(res['match_rate']):.2f}"}


def count_claims(res: dict) -> list[claims_lib.Claim]:
    """Counts per m against n^2/4m, the log-log slope, and the published counts the config runs."""
    n, out = res["n_features"], []
    for i, m in enumerate(res["m"]):
        counts, sem = np.asarray(res["counts"][i], float), float(res["count_sem"][i])
        sem = sem if np.isfinite(sem) else 0.0
        theory = float(res["theory"][i])
        # the n^2/4m estimate is itself approximate (the paper: 72 at n=m=256 for 64): 25% plus 2 s.e.m.
        claim = claims_lib.within(f"polysemantic neurons ≈ n²/4m (n={n}, m={m})", theory, counts,
                                  tolerance=0.25 * theory + 2 * sem, figure="collisions")
        out.append(dataclasses.replace(claim, rule=claim.rule + " (25% of n²/4m + 2 s.e.m.)"))
        paper = PAPER_COUNTS.get(n, {}).get(m)
        if paper is not None:
            claim = claims_lib.within(f"published count at n={n}, m={m}", paper, counts,
                                      tolerance=0.1 * paper + 2 * sem, figure="collisions")
            out.append(dataclasses.replace(claim, rule=claim.rule + " (10% of the published value + 2 s.e.m.)"))
    if len(res["m"]) >= 2:
        out.append(claims_lib.within("count ∝ 1/m: log-log slope of count vs m", -1.0, res["loglog_slope"],
                                     tolerance=0.3, figure="collisions"))
    return out


def noise_claims(noise) -> list[claims_lib.Claim]:
    """Bernoulli noise sparsifies (fourth norm up), Gaussian does not, at the paper's sigma."""
    if PAPER_NOISE["sigma"] not in noise.sigmas or set(noise.kinds) != {"bernoulli", "gaussian"}:
        return []
    j = noise.sigmas.index(PAPER_NOISE["sigma"])
    final = {k: noise.fourth_norm[i, j, :, -1] for i, k in enumerate(noise.kinds)}
    if noise.fourth_norm.shape[2] < 4:  # a rank test of fewer seeds per kind cannot reach p < 0.05
        return []
    out = [claims_lib.ordering("Bernoulli hidden noise raises the fourth norm more than Gaussian (σ=0.15)",
                               final["bernoulli"], final["gaussian"], paper_value="Bernoulli > Gaussian",
                               figure="noise")]
    if noise.steps[-1] >= PAPER_NOISE["min_steps"]:
        out.append(claims_lib.within("fourth norm under Bernoulli noise σ=0.15 after ≥1e4 steps",
                                     PAPER_NOISE["bernoulli"], final["bernoulli"], tolerance=0.15, figure="noise"))
        out.append(claims_lib.within("fourth norm under Gaussian noise σ=0.15 stays near its start",
                                     PAPER_NOISE["gaussian"], final["gaussian"], tolerance=0.05, figure="noise"))
    return out


def sparsification_claim(ode: dict[str, float]) -> claims_lib.Claim:
    """Sparsification of one neuron ends at ``t ≈ 1/λ`` (``theory.sparsification_agreement``'s dict)."""
    return claims_lib.within("sparsification of one neuron ends at t ≈ 1/λ (t·λ)", 1.0,
                             ode["t_single_over_inverse_l1"], tolerance=0.5, figure="sparsification")


def claims(result: Result) -> list[claims_lib.Claim]:
    """Counts vs n²/4m per m, the published counts the config runs, slope, sparsification time, noise."""
    return count_claims(result.sweep) + [sparsification_claim(result.ode)] + noise_claims(result.noise)


def _plot_collisions(ax, res: dict) -> None:
    from jaxinterp.toy import theory

    m = np.asarray(res["m"], float)
    grid = np.geomspace(m.min() / 1.2, m.max() * 1.2, 100)
    ax.plot(grid, theory.theory_count(res["n_features"], grid), "k--", label="theory $n^2/4m$")
    ax.errorbar(m, res["count_mean"], yerr=res["count_sem"], fmt="o", capsize=4,
                label=f"trained ({res['n_seeds']} seeds, mean ± s.e.m.)")
    paper = PAPER_COUNTS.get(res["n_features"], {})
    if paper:
        ax.plot(list(paper), list(paper.values()), "rx", ms=9, label="paper")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("hidden neurons m")
    ax.set_ylabel("polysemantic neurons")
    ax.set_title(f"n = {res['n_features']}: log-log slope {res['loglog_slope']:.2f} (theory -1)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def _plot_sparsification(ax, trace, m: int, l1: float) -> None:
    from jaxinterp.toy import theory

    t = trace.t[1:]
    ax.loglog(t, trace.n_active[1:], "b-", label="$m'(t)$ simulated")
    ax.loglog(t, np.maximum(theory.predicted_active(t, m, l1), 1), "c--", label="$m'(t)$ closed form")
    ax.loglog(t, trace.l1_norm[1:], "r-", label=r"$\|w\|_1$ simulated")
    ax.loglog(t, np.maximum(theory.predicted_l1_norm(t, m, l1), 1), "m--", label=r"$\|w\|_1$ closed form")
    ax.axvline(1 / l1, color="gray", lw=0.8, label=r"$t = 1/\lambda$")
    ax.set_xlabel("time t")
    ax.set_ylabel("entries / norm")
    ax.set_title(f"sparsification, m = {m}, $\\lambda$ = {l1:g}")
    ax.legend(fontsize=8)


def _plot_noise(ax, noise) -> None:
    from jaxinterp.plotting import colormap

    cmaps = {"bernoulli": colormap("Reds"), "gaussian": colormap("Blues")}
    steps = np.maximum(noise.steps, 1)
    for i, kind in enumerate(noise.kinds):
        for j, sigma in enumerate(noise.sigmas):
            colour = cmaps[kind](0.4 + 0.6 * (j + 1) / len(noise.sigmas))
            ax.plot(steps, noise.fourth_norm[i, j].mean(axis=0), color=colour, label=f"{kind} σ={sigma:g}")
    ax.axhline(PAPER_NOISE["bernoulli"], color="tab:red", ls=":", lw=1, label="paper: Bernoulli σ=0.15")
    ax.axhline(PAPER_NOISE["gaussian"], color="tab:blue", ls=":", lw=1, label="paper: Gaussian")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel(r"mean fourth norm $\sum_k W_{ik}^4$")
    ax.set_title("hidden-layer noise instead of L1")
    ax.legend(fontsize=7)


def _plot_superposition(fig, axes, sup: dict) -> None:
    p = np.asarray(sup["feature_probability"])
    axes[0].semilogx(1 / p, sup["dimensions_per_feature"], "o-")
    for y in (1.0, 0.5, 0.4, 1 / 3):
        axes[0].axhline(y, color="gray", lw=0.5)
    axes[0].set_xlabel("1 / feature probability")
    axes[0].set_ylabel("hidden dimensions per feature")
    axes[0].set_title("superposition grows with sparsity")
    im = axes[1].imshow(sup["feature_dimensionality"], aspect="auto", vmin=0, vmax=1, cmap="viridis")
    axes[1].set_yticks(range(len(p)), [f"{x:g}" for x in p])
    axes[1].set_ylabel("feature probability")
    axes[1].set_xlabel("feature (by importance)")
    axes[1].set_title("feature dimensionality $D_i$")
    fig.colorbar(im, ax=axes[1])


def _plot_dynamics(ax, dyn: dict, n_features: int) -> None:
    """Median and quantile bands over seeds of the polysemantic count vs step, one colour per m."""
    from jaxinterp.plotting import colormap

    cmap, q = colormap("viridis"), list(dyn["quantiles"])
    cq, steps = np.asarray(dyn["count_quantiles"]), np.asarray(dyn["steps"])
    for i, m in enumerate(dyn["m"]):
        colour = cmap(0.85 * i / max(1, len(dyn["m"]) - 1))   # the pale end of viridis is hard to see
        ax.fill_between(steps, cq[i, 0], cq[i, -1], color=colour, alpha=0.15, lw=0)
        if len(q) >= 4:
            ax.fill_between(steps, cq[i, 1], cq[i, -2], color=colour, alpha=0.3, lw=0)
        ax.plot(steps, _middle(dyn)[i], color=colour, lw=1.5, label=f"m={m}")
        ax.axhline(n_features**2 / (4 * m), color=colour, ls=":", lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("polysemantic neurons")
    ax.set_title(f"count through training over {np.shape(dyn['final_counts'])[1]} seeds: median, "
                 f"{q[1]:g}-{q[-2]:g} and {q[0]:g}-{q[-1]:g} quantiles; dotted $n^2/4m$" if len(q) >= 4
                 else "count through training over seeds", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def figures(result: Result) -> dict:
    """``collisions`` (with the paper's counts), ``dynamics`` (when recorded), ``sparsification``,
    ``noise``, ``superposition``."""
    from jaxinterp.plotting import subplots

    out = {}
    fig, ax = subplots(figsize=(6, 4.4))
    _plot_collisions(ax, result.sweep)
    out["collisions"] = fig
    if result.dynamics is not None:
        fig, ax = subplots(figsize=(7, 4.6))
        _plot_dynamics(ax, result.dynamics, result.sweep["n_features"])
        out["dynamics"] = fig
    fig, ax = subplots(figsize=(6, 4.4))
    _plot_sparsification(ax, result.trace, result.config.sparsification_m, result.config.sparsification_l1)
    out["sparsification"] = fig
    fig, ax = subplots(figsize=(6, 4.4))
    _plot_noise(ax, result.noise)
    out["noise"] = fig
    fig, axes = subplots(1, 2, figsize=(10, 4))
    _plot_superposition(fig, axes, result.superposition)
    out["superposition"] = fig
    return out


STUDY = Study(
    name=NAME,
    description="incidental polysemanticity: counts vs n^2/4m, theory, noise, superposition",
    config=Config,
    compute=compute,
    metrics=metrics,
    figures=figures,
    claims=claims,
    summary=summary,
)
