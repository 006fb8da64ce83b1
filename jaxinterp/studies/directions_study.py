"""Study `directions`: every direction learner on a trained model's activations and on planted
ground truth (the direction-finding half of Klindt et al. 2023), in one table.

Two data sources:
  * ``activations``: post-ReLU activations of the last hidden layer of an MLP trained on mnist1d
    (digits in the quick version); fitted on the training inputs, scored on the test inputs.
    The neuron basis is the baseline. K = number of units (cosine K-means also 0.5x and 2x).
  * ``ground_truth``: sparse features in superposition (``make_superposition_data``: ``n``
    features embedded in ``dim < n`` dimensions); recovery is scored by mean max cosine with the
    planted directions and Hungarian-matched MCC with the planted activations.
Also a vmapped sweep of ReLU+L1 SAEs over the L1 coefficient (the sparsity / reconstruction
frontier and recovery along it): one ``jax.vmap`` over ``directions.sae(..., coef=c)``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import directions as jd
from jaxinterp.keys import named_key
from jaxinterp.studies import claims as claims_lib
from jaxinterp.studies.base import Study, StudyConfig, progress_enabled

NAME = "directions"
ACTIVATION_METHODS = ("neurons", "cosine_kmeans", "cosine_kmeans_0.5x", "cosine_kmeans_2x", "pca", "ica", "nmf",
                      "dictionary", "sae_relu", "sae_topk", "sae_batchtopk", "sae_jumprelu")
GROUND_TRUTH_METHODS = ("cosine_kmeans", "pca", "ica", "dictionary", "sae_relu", "sae_topk", "sae_batchtopk",
                        "sae_jumprelu")
DENSE = ("pca", "ica")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the directions study.

    Attributes:
      dataset: the classifier's dataset, ``mnist1d`` or ``digits``.
      model_steps: classifier training steps (None: the model's default).
      activation_methods: methods fitted on the model's activations.
      ground_truth_methods: methods fitted on the planted features.
      sae_steps: SAE training steps (dictionary learning uses an eighth, at least 50).
      n_features: planted features.
      dim: dimension they are embedded in (``< n_features``: superposition).
      feature_probability: probability that a planted feature is active.
      n_train: planted training rows.
      n_test: planted test rows.
      sweep_coefs: L1 coefficients of the vmapped ReLU SAE sweep.
      recovery_threshold: mean max cosine at which a method counts as recovering the features.
    """

    dataset: str = "mnist1d"
    model_steps: int | None = None
    activation_methods: tuple[str, ...] = ACTIVATION_METHODS
    ground_truth_methods: tuple[str, ...] = GROUND_TRUTH_METHODS
    sae_steps: int = 2000
    n_features: int = 64
    dim: int = 32
    feature_probability: float = 0.03
    n_train: int = 40_000
    n_test: int = 5_000
    sweep_coefs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)
    recovery_threshold: float = 0.9

    @classmethod
    def quick(cls) -> Config:
        return cls(dataset="digits", model_steps=300, activation_methods=("neurons", "cosine_kmeans", "sae_relu"),
                   ground_truth_methods=("pca", "dictionary", "sae_topk"), sae_steps=200, n_features=32, dim=16,
                   feature_probability=0.05, n_train=6000, n_test=2000, sweep_coefs=(0.1, 1.0))

    def validate(self) -> None:
        super().validate()
        if self.dataset not in ("mnist1d", "digits"):
            raise ValueError(f"`dataset` must be 'mnist1d' or 'digits'; got {self.dataset!r}.")
        for field, allowed in (("activation_methods", ACTIVATION_METHODS),
                               ("ground_truth_methods", GROUND_TRUTH_METHODS)):
            bad = [m for m in getattr(self, field) if m not in allowed]
            if bad:
                raise ValueError(f"`{field}` must be drawn from {allowed}; got {bad}.")
        for field in ("sae_steps", "n_features", "dim", "n_train", "n_test"):
            if getattr(self, field) < 1:
                raise ValueError(f"`{field}` must be >= 1; got {getattr(self, field)}.")
        if self.model_steps is not None and self.model_steps < 1:
            raise ValueError(f"`model_steps` must be >= 1 or None; got {self.model_steps}.")
        if not self.dim < self.n_features:
            raise ValueError(f"`dim` must be < `n_features` (superposition); got {self.dim} >= {self.n_features}.")
        if not 0 < self.feature_probability <= 1:
            raise ValueError(f"`feature_probability` must lie in (0, 1]; got {self.feature_probability}.")
        if not self.sweep_coefs or min(self.sweep_coefs) < 0:
            raise ValueError(f"`sweep_coefs` must be one or more coefficients >= 0; got {self.sweep_coefs}.")
        if not 0 < self.recovery_threshold <= 1:
            raise ValueError(f"`recovery_threshold` must lie in (0, 1]; got {self.recovery_threshold}.")


class Fits(NamedTuple):
    """Scores of the methods fitted on one data source.

    Attributes:
      metrics: ``{method: evaluate(...) dict}`` on the test rows (plus ``n_directions`` and
        ``density_counts``).
      seconds: ``{method: fit seconds}``.
      feature_cosines: ``{method: [n_features]}`` each planted feature's best |cosine| with a
        learned direction (ground truth only; empty otherwise).
    """

    metrics: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    feature_cosines: dict[str, np.ndarray]


class Result(NamedTuple):
    """Everything the study computed.

    Attributes:
      config: the settings.
      model: the classifier and layer (``arch``, ``dataset``, ``layer``, ``test_accuracy``, ``rank``,
        ``units``).
      activations: ``Fits`` on the model's activations.
      ground_truth: ``Fits`` on the planted features.
      sweep: ``{"runs": [{coef, metrics...}], "seconds", "true_l0"}`` of the ReLU SAE sweep.
      sweep_sample_l0: ``[n_coefs, n_test]`` active latents per test row for each coefficient.
    """

    config: Config
    model: dict[str, Any]
    activations: Fits
    ground_truth: Fits
    sweep: dict[str, Any]
    sweep_sample_l0: np.ndarray


def neuron_directions(dim: int) -> jd.Directions:
    """The neuron (standard) basis as ``Directions``: each unit's response is its activation."""
    eye = jnp.eye(dim, dtype=jnp.float32)
    return jd.Directions.create(eye, jd.Linear(eye, jnp.zeros((dim,), jnp.float32)), method="neurons")


def numerical_rank(x: np.ndarray) -> int:
    """Rank of the centred data (dead units and collinear features lower it)."""
    return int(np.linalg.matrix_rank(np.asarray(x, np.float64) - np.mean(x, axis=0)))


def learner(method: str, k: int, *, rank: int, topk: int, steps: int, overcomplete: int) -> jd.Learner | None:
    """The learner of ``method`` with ``k`` directions (None for the neuron basis).

    Args:
      method: one of ``ACTIVATION_METHODS``.
      k: directions of the K-means / dictionary / NMF family.
      rank: numerical rank of the data; PCA and ICA use ``min(k, rank)`` components.
      topk: active latents of the TopK / BatchTopK SAEs.
      steps: SAE steps (dictionary learning: an eighth, at least 50).
      overcomplete: SAE latents = ``overcomplete * k``.
    """
    m, r = overcomplete * k, min(k, rank)
    if method.startswith("cosine_kmeans"):
        mult = {"cosine_kmeans": 1.0, "cosine_kmeans_0.5x": 0.5, "cosine_kmeans_2x": 2.0}[method]
        return jd.kmeans(max(2, int(mult * k)), cosine=True)
    table = {
        "neurons": lambda: None,
        "pca": lambda: jd.pca(r),
        "ica": lambda: jd.ica(r),
        "nmf": lambda: jd.nmf(k, max_iter=100),
        "dictionary": lambda: jd.dictionary(k, alpha=0.1, steps=max(50, steps // 8), batch_size=256, code_iter=50,
                                            encode_iter=200),
        # Klindt et al. 2023: ReLU encoder, 2x overcomplete, L1 0.1, lr 1e-3, batch 64, z-scored inputs
        "sae_relu": lambda: jd.sae(m, kind="relu", coef=0.1, normalize="zscore", learning_rate=1e-3, batch_size=64,
                                   steps=steps),
        "sae_topk": lambda: jd.sae(m, kind="topk", k=topk, steps=steps, batch_size=256),
        "sae_batchtopk": lambda: jd.sae(m, kind="batchtopk", k=topk, steps=steps, batch_size=256),
        "sae_jumprelu": lambda: jd.sae(m, kind="jumprelu", coef=3.0, steps=steps, batch_size=256),
    }
    return table[method]()


def _fit_all(methods: dict, x_train, x_test, key, *, desc: str, true_codes=None, true_dirs=None) -> Fits:
    from jaxinterp._progress import progress_bar

    metrics, seconds, cosines = {}, {}, {}
    for name, lrn in progress_bar(methods.items(), desc=desc, disable=not progress_enabled()):
        start = time.perf_counter()
        d = neuron_directions(x_train.shape[1]) if lrn is None else jd.fit(lrn, x_train, key=named_key(key, name))
        jax.block_until_ready(d.components)
        seconds[name] = time.perf_counter() - start
        m = jd.evaluate(d, x_test, true_codes=true_codes, true_directions=true_dirs, histogram=True)
        m["density_counts"] = m.pop("density_histogram")["counts"].tolist()
        m["n_directions"] = int(d.n_directions)
        metrics[name] = m
        if true_dirs is not None:
            cosines[name] = np.abs(np.asarray(jd.cosine_matrix(true_dirs, d.unit_directions()))).max(1)
    return Fits(metrics, seconds, cosines)


def model_activations(config: Config):
    """Train (memoised) the MLP and capture its last hidden layer's post-ReLU activations.

    Returns:
      ``(train [n, units], test [m, units], info dict)``.
    """
    from jaxinterp.capture import activation_names, capture
    from jaxinterp.models import trained_classifier

    tc = trained_classifier("mlp", config.dataset, seed=config.seed, steps=config.model_steps)
    layer = activation_names(tc.model.apply, tc.params, tc.dataset.x_test[:2])[-1]
    fn = jax.jit(lambda xb: capture(tc.model.apply, names=[layer])(tc.params, xb)[1][layer])

    def acts(x):
        return np.concatenate([np.maximum(np.asarray(fn(x[i:i + 512])), 0.0) for i in range(0, len(x), 512)])

    info = {"arch": "mlp", "dataset": config.dataset, "layer": layer, "test_accuracy": tc.test_accuracy}
    return acts(tc.dataset.x_train).astype(np.float32), acts(tc.dataset.x_test).astype(np.float32), info


def _sweep(config: Config, x_train, x_test, z_test, w, key):
    """The vmapped ReLU+L1 SAE sweep over ``config.sweep_coefs`` (one program, shared batches)."""
    start = time.perf_counter()

    def one(coef):
        return jd.fit(jd.sae(config.n_features, kind="relu", coef=coef, steps=config.sae_steps, batch_size=256),
                      x_train, key=key)

    stacked = jax.vmap(one)(jnp.asarray(config.sweep_coefs, jnp.float32))
    runs, sample_l0 = [], []
    for coef, d in zip(config.sweep_coefs, jd.unstack(stacked)):
        runs.append({"coef": coef, **jd.evaluate(d, x_test, true_codes=z_test, true_directions=w)})
        sample_l0.append(np.sum(np.asarray(d.codes(x_test)) != 0, axis=1))
    sweep = {"runs": runs, "seconds": time.perf_counter() - start,
             "true_l0": float(np.mean((z_test != 0).sum(1)))}
    return sweep, np.stack(sample_l0)


def compute(config: Config, key: jax.Array) -> Result:
    """Fit every method on model activations and on planted features, and run the SAE sweep."""
    from jaxinterp.datasets import make_superposition_data

    x_tr, x_te, info = model_activations(config)
    info["units"], info["rank"] = x_tr.shape[1], numerical_rank(x_tr)
    units = info["units"]
    act_methods = {m: learner(m, units, rank=info["rank"], topk=max(1, units // 16), steps=config.sae_steps,
                              overcomplete=2) for m in config.activation_methods}
    activations = _fit_all(act_methods, x_tr, x_te, named_key(key, "activations"), desc="activations")

    n_feat, n_train = config.n_features, config.n_train
    x, z, w = make_superposition_data(named_key(key, "planted"), n_train + config.n_test, n_feat, config.dim,
                                      config.feature_probability)
    topk = max(1, round(2 * config.feature_probability * n_feat))
    gt_methods = {m: learner(m, n_feat, rank=config.dim, topk=topk, steps=config.sae_steps, overcomplete=1)
                  for m in config.ground_truth_methods}
    ground_truth = _fit_all(gt_methods, x[:n_train], x[n_train:], named_key(key, "ground_truth"),
                            desc="ground truth", true_codes=z[n_train:], true_dirs=w)
    sweep, sample_l0 = _sweep(config, x[:n_train], x[n_train:], z[n_train:], w, named_key(key, "sweep"))
    return Result(config, info, activations, ground_truth, sweep, sample_l0)


def metrics(result: Result) -> dict:
    """The JSON contract: per-method tables for both sources, the sweep, recovery and timings."""
    gt = result.ground_truth.metrics
    thr = result.config.recovery_threshold
    return {"model": result.model, "activations": result.activations.metrics, "ground_truth": gt,
            "sweep": result.sweep,
            # where each method recovers the planted features (mean max cosine >= threshold) and where it fails
            "ground_truth_recovered": {n: bool(m["mean_max_cosine"] >= thr) for n, m in gt.items()},
            "fit_seconds": {"activations": result.activations.seconds,
                            "ground_truth": result.ground_truth.seconds}}


def _bar_table(act: dict, gt: dict):
    from jaxinterp.plotting import subplots

    cols = [("activations", act, ["explained_variance", "l0", "dead_fraction"]),
            ("ground truth", gt, ["explained_variance", "l0", "mean_max_cosine", "mcc"])]
    fig, axes = subplots(2, 4, figsize=(16, 6.5))
    for row, (label, table, keys) in enumerate(cols):
        names = list(table)
        for j in range(4):
            ax = axes[row, j]
            if j >= len(keys):
                ax.axis("off")
                continue
            ax.barh(range(len(names)), [table[n][keys[j]] for n in names], color="tab:orange" if row else "tab:blue")
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{label}: {keys[j]}", fontsize=9)
            if keys[j] == "l0":
                ax.set_xscale("log")
    return fig


def _sweep_figure(sweep: dict):
    from jaxinterp.plotting import subplots

    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    runs = sweep["runs"]
    l0s = [r["l0"] for r in runs]
    axes[0].plot(l0s, [r["explained_variance"] for r in runs], "o-")
    axes[0].set_ylabel("explained variance")
    for r in runs:
        axes[0].annotate(f"{r['coef']:g}", (r["l0"], r["explained_variance"]), fontsize=7)
    axes[1].plot(l0s, [r["mean_max_cosine"] for r in runs], "o-", label="mean max cosine")
    axes[1].plot(l0s, [r["mcc"] for r in runs], "s-", label="MCC")
    axes[1].axvline(sweep["true_l0"], color="gray", ls=":", label="true L0")
    axes[1].legend(fontsize=8)
    for ax, what in zip(axes, ("reconstruction", "recovery")):
        ax.set_xscale("log")
        ax.set_xlabel("L0 (active latents per sample)")
        ax.set_title(f"ReLU+L1 SAE sweep over the L1 coefficient: {what}", fontsize=9)
    return fig


def _density_figure(act_metrics: dict):
    from jaxinterp.plotting import subplots

    fig, ax = subplots(figsize=(7, 3.8))
    edges = np.linspace(-6, 0, 31)
    centers = 0.5 * (edges[1:] + edges[:-1])
    for n, m in act_metrics.items():
        if n.startswith("sae") or n in ("dictionary", "nmf"):
            ax.plot(centers, m["density_counts"], label=n)
    ax.set_xlabel("log10 feature density (test activations)")
    ax.set_ylabel("latents")
    ax.legend(fontsize=7)
    ax.set_title("feature-density histograms")
    return fig


def figures(result: Result) -> dict:
    """The per-method table (both sources), the sweep frontier and the feature-density histograms."""
    return {"table": _bar_table(result.activations.metrics, result.ground_truth.metrics),
            "sweep": _sweep_figure(result.sweep), "density": _density_figure(result.activations.metrics)}


def claims(result: Result) -> list[claims_lib.Claim]:
    """What the study checks: recovery of planted features, sparse beyond dense bases, the L1 trade-off.

    Recovery in superposition is the toy-data test of Sharkey, Braun & Millidge (2022, "Taking
    features out of superposition with sparse autoencoders"): a sparse dictionary with at least
    as many atoms as planted features finds them (mean max cosine near 1), while a dense basis of
    ``dim < n_features`` directions cannot.
    """
    gt, cos = result.ground_truth.metrics, result.ground_truth.feature_cosines
    thr = result.config.recovery_threshold
    out = []
    for name in [n for n in gt if n not in DENSE]:
        out.append(claims_lib.within(f"{name} recovers the planted features (mean max |cosine| >= {thr:g})", 1.0,
                                     gt[name]["mean_max_cosine"], tolerance=1.0 - thr, figure="table"))
    dense = [n for n in DENSE if n in cos]
    sparse = [n for n in cos if n not in DENSE]
    if dense and sparse:
        best = max(sparse, key=lambda n: gt[n]["mean_max_cosine"])
        out.append(claims_lib.paired_ordering(
            f"{best} matches each planted feature better than {dense[0]} (paired over features)",
            cos[best], cos[dense[0]], paper_value="sparse > dense", figure="table"))
    if len(result.config.sweep_coefs) > 1:
        lo, hi = np.argmin(result.config.sweep_coefs), np.argmax(result.config.sweep_coefs)
        out.append(claims_lib.paired_ordering(
            "a larger L1 coefficient gives sparser SAE codes (active latents per test row)",
            result.sweep_sample_l0[lo], result.sweep_sample_l0[hi], paper_value="L0 falls as L1 rises",
            figure="sweep"))
    return out


def summary(result: Result) -> dict:
    """Headline numbers: the model, the best ground-truth recovery, and a few methods' scores."""
    info, gt, act = result.model, result.ground_truth.metrics, result.activations.metrics
    out = {"model": f"{info['arch']}/{info['dataset']} {info['layer']} (test acc {info['test_accuracy']:.3f})"}
    if gt:
        best = max(gt, key=lambda n: gt[n]["mean_max_cosine"])
        out["best ground-truth recovery"] = f"{best} (mean max cosine {gt[best]['mean_max_cosine']:.3f})"
    for src, table, key in (("ground truth", gt, "mean_max_cosine"), ("activations", act, "explained_variance")):
        for name in ("sae_topk", "dictionary", "cosine_kmeans"):
            if name in table:
                out[f"{name} {src} {key}"] = table[name][key]
    return out


STUDY = Study(NAME, "sparse directions (K-means, PCA, ICA, NMF, dictionary, SAEs) on activations and planted features",
              config=Config, compute=compute, metrics=metrics, figures=figures, claims=claims, summary=summary)
