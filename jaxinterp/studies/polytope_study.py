"""Study ``polytope``: the polytope lens (Black, Sharkey et al. 2022) on an MLP and a CNN on mnist1d,
and on deeper convolutional networks on image data (scikit-learn digits, procedural shapes), per layer.

Boundaries are counted where the network's affine map can change: ReLU sign flips plus max-pool
argmax changes (``kink`` counts). Max-pool ordering changes that keep the window's maximum are
not boundaries of linear regions and are reported separately (``pool_ordering_changes``).

1. Boundary density (exact line walk, float64) on paths between test inputs of the same class and
   of different classes: the paper reports higher density across classes.
2. Where along different-class paths the density peaks, relative to where the predicted class
   first changes (``peak_offset``, a fraction of the path length). Controls: ``peak_offset_chance``
   (a peak uniform on the path) and ``peak_offset_midpoint`` (a peak at the middle of every path,
   where same-class paths peak too).
3. Clustering test inputs by polytope codes (Hamming) vs by their activations (Euclidean), with
   the same algorithms (K-means; agglomerative, average linkage): purity / NMI against labels,
   averaged over ``cluster_repeats`` random draws of test inputs.
4. Hanin & Rolnick (2019): regions crossed per unit length along lines at initialisation vs the
   number of neurons (MLPs of depth 2 and growing width), with a linear fit.
5. Where the paper looked: a deeper all-convolutional ReLU network (``deep_channels`` conv layers,
   no pooling, then a dense ReLU layer) trained on each of ``deep_datasets``; paths between test
   inputs in input space and in the activation space of every conv layer L (the walk's network is
   the network from layer L + 1 on, so it counts the boundaries of all later layers). Per layer:
   density across vs within class (Mann-Whitney), peak vs class change (Wilcoxon), on the same
   input pairs for every layer.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal, NamedTuple

import numpy as np

from jaxinterp.keys import named_key
from jaxinterp.studies import claims as claims_lib
from jaxinterp.studies.base import Study, StudyConfig, numpy_rng

NAME = "polytope"
MAXPOOL = {"Conv_0/relu": 2, "Conv_1/relu": 2}  # models.CNN max-pools each conv block by 2
CLUSTER_KINDS = ("codes", "activations", "codes_agglomerative", "activations_agglomerative")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the ``polytope`` study (models trained on mnist1d).

    Attributes:
      archs: classifiers analysed (``models.MLP``; ``models.CNN`` with its max-pools declared).
      mlp_steps: MLP training steps; None for the model's default.
      cnn_steps: CNN training steps; None for the model's default.
      pairs: paths per group (same class / different class).
      cluster_points: test inputs per clustering draw.
      cluster_repeats: independent draws of test inputs (and K-means seeds) for the clustering.
      n_clusters: clusters per method.
      max_crossings: most boundaries recorded per path.
      tol: tolerance of the exact walk.
      profile_bins: bins of the density profile along the path.
      class_change_steps: resolution of the class-change search along each path.
      widths: hidden widths of the 2-layer MLPs of the Hanin-Rolnick sweep.
      lines_per_width: lines walked per width.
      deep_datasets: image datasets of the deeper CNN (``"digits"``: scikit-learn 8x8 digits;
        ``"shapes"``: unbiased procedural shapes, 3 classes); empty to skip part 5.
      deep_channels: channels of its conv layers (3x3, SAME, ReLU, no pooling).
      deep_hidden: width of its dense ReLU layer.
      deep_steps: its training steps (Adam, lr 3e-3, cosine, batch 128).
      deep_pairs: paths per group (same / different class), per dataset; reused in every layer.
      shapes_train: training images of the shapes dataset (its test set has ``shapes_train // 2``).
      shapes_size: their size in pixels (16, not the default 20: the walk's cost grows with the pixels of every layer).
    """

    archs: tuple[Literal["mlp", "cnn"], ...] = ("mlp", "cnn")
    mlp_steps: int | None = None
    cnn_steps: int | None = None
    pairs: int = 150
    cluster_points: int = 600
    cluster_repeats: int = 10
    n_clusters: int = 10
    max_crossings: int = 4096
    tol: float = 1e-9
    profile_bins: int = 20
    class_change_steps: int = 200
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    lines_per_width: int = 24
    deep_datasets: tuple[Literal["digits", "shapes"], ...] = ("digits", "shapes")
    deep_channels: tuple[int, ...] = (8, 16, 16)
    deep_hidden: int = 32
    deep_steps: int = 1000
    deep_pairs: int = 50
    shapes_train: int = 3000
    shapes_size: int = 16

    @classmethod
    def quick(cls) -> Config:
        """300-step classifiers (shared with the other quick studies), 10 paths, 150 points, 3 widths;
        a small deeper CNN on digits only (150 steps, 8 paths per group per layer)."""
        return cls(mlp_steps=300, cnn_steps=300, pairs=10, cluster_points=150, cluster_repeats=5,
                   widths=(8, 16, 32), lines_per_width=6, deep_datasets=("digits",), deep_channels=(4, 8, 8),
                   deep_hidden=16, deep_steps=150, deep_pairs=8)

    def validate(self) -> None:
        """Positive counts; at least 2 paths and 2 lines per width; clusters fewer than points."""
        super().validate()
        for name in ("pairs", "cluster_points", "cluster_repeats", "n_clusters", "max_crossings", "profile_bins",
                     "class_change_steps", "lines_per_width", "deep_hidden", "deep_steps", "deep_pairs",
                     "shapes_train", "shapes_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)}.")
        for name in ("mlp_steps", "cnn_steps"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive (or None for the default); got {getattr(self, name)}.")
        if not self.archs:
            raise ValueError("`archs` must name at least one classifier.")
        if self.pairs < 2 or self.lines_per_width < 2 or self.deep_pairs < 2:
            raise ValueError(f"`pairs`, `lines_per_width` and `deep_pairs` must be >= 2; got {self.pairs}, "
                             f"{self.lines_per_width}, {self.deep_pairs}.")
        if not self.deep_channels or min(self.deep_channels) <= 0:
            raise ValueError(f"`deep_channels` must be one or more positive channel counts; got {self.deep_channels}.")
        if self.n_clusters >= self.cluster_points:
            raise ValueError(f"`n_clusters` must be below `cluster_points`; got {self.n_clusters} and "
                             f"{self.cluster_points}.")
        if not self.widths or min(self.widths) <= 0:
            raise ValueError(f"`widths` must be one or more positive widths; got {self.widths}.")
        if not self.tol > 0:
            raise ValueError(f"`tol` must be positive; got {self.tol}.")


class Result(NamedTuple):
    """What ``compute`` returns.

    Attributes:
      per_arch: ``{arch: dict}`` of per-path arrays (``density_same [pairs]``, ``density_diff``,
        ``peak_offset [paths with a class change]``, ...), ``clustering`` (``{metric: [repeats]}``),
        ``test_accuracy`` and ``train_steps``.
      sweep: the Hanin-Rolnick width sweep (``n_neurons``, ``regions_per_unit_length``, fits).
      seconds: wall time per part.
      deep: ``{dataset: deep_cnn_paths result}`` of the deeper CNN (per layer).
    """

    per_arch: dict[str, dict[str, Any]]
    sweep: dict[str, Any]
    seconds: dict[str, float]
    deep: dict[str, dict[str, Any]] = {}


def _pairs(y: np.ndarray, n: int, rng: np.random.Generator, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """``n`` index pairs of distinct test inputs with equal (``same``) or different labels."""
    a, b = [], []
    while len(a) < n:
        i, j = rng.integers(0, len(y), 2)
        if i != j and (y[i] == y[j]) == same:
            a.append(i)
            b.append(j)
    return np.array(a), np.array(b)


def kink_events(walk) -> np.ndarray:
    """Boundaries of linear regions crossed at each walk event: ReLU sign flips plus max-pool argmax
    changes (ordering changes inside a window are left out): ``[paths, max_crossings]``."""
    from jaxinterp.polytope.network import MAXPOOL_SUFFIX

    relu = np.array([not n.endswith(MAXPOOL_SUFFIX) for n in walk.layout.names], bool)
    return np.asarray(walk.layer_flips)[..., relu].sum(-1) + np.asarray(walk.argmax_changes)


def kink_histogram(walk, bins: int) -> np.ndarray:
    """``kink_events`` in ``bins`` equal bins of ``t in [0, 1]``: ``[paths, bins]``."""
    pos = np.nan_to_num(np.asarray(walk.positions), nan=0.0)
    idx = np.clip(np.floor(pos * bins).astype(int), 0, bins - 1)
    out = np.zeros((pos.shape[0], bins))
    np.add.at(out, (np.repeat(np.arange(pos.shape[0]), pos.shape[1]), idx.reshape(-1)), kink_events(walk).reshape(-1))
    return out


def _aligned_profile(positions: np.ndarray, weights: np.ndarray, change: np.ndarray,
                     has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary density (``weights [paths, events]`` at ``positions``) against ``t - t(class change)``,
    averaged over the paths reaching each offset."""
    rel = (positions - change[:, None])[has]
    w = weights[has]
    finite = np.isfinite(rel)
    hist, edges = np.histogram(rel[finite], bins=40, range=(-1, 1), weights=w[finite])
    centers = (edges[:-1] + edges[1:]) / 2  # a path covers offsets [-c, 1 - c]
    covered = ((centers[None] >= -change[has, None]) & (centers[None] <= 1 - change[has, None])).sum(0)
    return np.where(covered > 0, hist / np.maximum(covered, 1) / (2 / 40), np.nan), edges


def peak_offsets(fn, x0, x1, histogram: np.ndarray, *, n_steps: int = 200) -> dict[str, np.ndarray]:
    """Distance from each path's density peak to where the predicted class first changes.

    Args:
      fn: the classifier, ``x [batch, ...] -> logits``.
      x0, x1: path ends ``[paths, ...]``.
      histogram: boundary crossings per position bin ``[paths, bins]`` (``LineWalk.position_histogram``).
      n_steps: resolution of the class-change search.

    Returns:
      For the paths whose class changes: ``peak_offset`` (``|peak - change|``, fractions of the
      path), ``peak_offset_chance`` (``E|U - change|`` for a peak ``U`` uniform on the path),
      ``peak_offset_midpoint`` (``|0.5 - change|``, every path peaking at its midpoint) and
      ``class_change_position``; ``has_change [paths]`` marks those paths.
    """
    from jaxinterp.polytope import class_change_positions

    change = class_change_positions(fn, x0, x1, n_steps=n_steps)
    has = np.isfinite(change)
    peak = (np.argmax(histogram, axis=1) + 0.5) / histogram.shape[1]
    return {"peak_offset": np.abs(peak - change)[has], "peak_offset_chance": ((change**2 + (1 - change) ** 2) / 2)[has],
            "peak_offset_midpoint": np.abs(0.5 - change)[has], "class_change_position": change[has],
            "has_change": has, "change": change}


def path_statistics(fn, ends: dict[str, tuple[np.ndarray, np.ndarray]], config: Config, *, maxpool=None) -> dict:
    """Exact-walk boundary densities per path group, and the peak offset on the ``"diff"`` group.

    All groups are walked in one call (one compilation).

    Args:
      fn: the network from the path's space on, ``a [batch, ...] -> logits [batch, n_classes]``; its
        ReLUs (and declared max-pools) are the units counted.
      ends: ``{group: (a0 [paths, ...], a1 [paths, ...])}``; ``"diff"`` must be one of the groups.
      config: walk settings (``max_crossings``, ``tol``, ``profile_bins``, ``class_change_steps``).
      maxpool: max-pooled ReLU outputs of ``fn`` (see ``relu_preactivations``).

    Returns:
      Per group ``g``: ``density_g [paths]`` (linear-region boundaries per unit length: ReLU sign
      flips + max-pool argmax changes), ``layer_density_g [paths, relu layers]``, ``length_g``,
      ``pool_ordering_changes_g`` (mean per path), ``truncated_g``, ``affine_error_g``,
      ``profile_g [bins]``, ``peak_position_g [paths]``; for ``"diff"`` the ``peak_offsets`` arrays,
      ``aligned_hist`` / ``aligned_edges`` and ``paths_with_class_change``; ``layer_names``.
    """
    from jaxinterp.polytope import exact_walk
    from jaxinterp.polytope.network import MAXPOOL_SUFFIX

    groups = list(ends)
    sizes = np.cumsum([0] + [len(ends[g][0]) for g in groups])
    walk = exact_walk(fn, np.concatenate([ends[g][0] for g in groups]),
                      np.concatenate([ends[g][1] for g in groups]), maxpool=maxpool,
                      max_crossings=config.max_crossings, tol=config.tol, keep_regions=False)
    relu = np.array([not n.endswith(MAXPOOL_SUFFIX) for n in walk.layout.names], bool)
    length = np.asarray(walk.length)
    kinks, hist = kink_events(walk), kink_histogram(walk, config.profile_bins)
    layer = np.asarray(walk.layer_flips)[..., relu].sum(1) / length[:, None]
    out = {"layer_names": [n for n, r in zip(walk.layout.names, relu) if r]}
    for g, lo, hi in zip(groups, sizes[:-1], sizes[1:]):
        out[f"density_{g}"] = kinks[lo:hi].sum(-1) / length[lo:hi]
        out[f"layer_density_{g}"] = layer[lo:hi]
        out[f"length_{g}"] = length[lo:hi]
        out[f"pool_ordering_changes_{g}"] = float(np.mean(walk.ordering_changes[lo:hi]))
        out[f"truncated_{g}"] = int(np.asarray(walk.truncated)[lo:hi].sum())
        out[f"affine_error_{g}"] = float(np.asarray(walk.affine_error)[lo:hi].max())
        out[f"profile_{g}"] = (hist[lo:hi] / length[lo:hi, None]).mean(0) * config.profile_bins
        out[f"peak_position_{g}"] = (np.argmax(hist[lo:hi], axis=1) + 0.5) / config.profile_bins
    lo, hi = sizes[groups.index("diff")], sizes[groups.index("diff") + 1]
    peaks = peak_offsets(fn, ends["diff"][0], ends["diff"][1], hist[lo:hi], n_steps=config.class_change_steps)
    has = peaks.pop("has_change")
    out["aligned_hist"], out["aligned_edges"] = _aligned_profile(
        np.asarray(walk.positions)[lo:hi], kinks[lo:hi] / length[lo:hi, None], peaks.pop("change"), has)
    out.update(peaks)
    out["paths_with_class_change"] = int(has.sum())
    return out


def _density_and_peaks(fn, x, y, config: Config, key, maxpool=None) -> dict:
    """``path_statistics`` on ``config.pairs`` same-class and different-class paths between inputs ``x``."""
    ends = {}
    for group, same in (("same", True), ("diff", False)):
        i, j = _pairs(y, config.pairs, numpy_rng(named_key(key, group)), same)
        ends[group] = (x[i], x[j])
    return path_statistics(fn, ends, config, maxpool=maxpool)


def clustering_draws(fn, x, y, key, *, points: int, repeats: int, n_clusters: int) -> dict[str, np.ndarray]:
    """Cluster ``repeats`` random draws of ``points`` inputs by polytope codes and by activations.

    Codes (Hamming) and post-activations (Euclidean) of all ReLU layers, and of the last hidden
    layer alone, are clustered with the same algorithms (``polytope.compare_clusterings``).

    Args:
      fn: the network, ``x [batch, ...] -> output``.
      x, y: inputs ``[n, ...]`` and class labels ``[n]``.
      key: PRNG key of the draws (and of each draw's K-means seed).
      points: inputs per draw (at most ``n``).
      repeats: number of draws.
      n_clusters: clusters per method.

    Returns:
      ``{metric: [repeats]}`` with the keys of ``compare_clusterings`` and their ``_last_layer`` twins.
    """
    import jax

    from jaxinterp.capture import POST_SUFFIX, capture
    from jaxinterp.polytope import codes_from_preactivations, compare_clusterings

    captured = jax.jit(lambda v: capture(fn, post_activations=True)(v)[1])
    runs: dict[str, list[float]] = {}
    for r in range(repeats):
        rng = numpy_rng(named_key(key, "draw", r))
        idx = rng.choice(len(x), points, replace=False)
        acts = captured(x[idx])
        names = [n for n in acts if not n.endswith(POST_SUFFIX)]
        seed = int(rng.integers(0, 2**31 - 1))
        for suffix, layers in (("", names), ("_last_layer", names[-1:])):
            codes = np.asarray(codes_from_preactivations({n: acts[n] for n in layers}))
            flat = np.concatenate([np.asarray(acts[n + POST_SUFFIX]).reshape(len(idx), -1) for n in layers], axis=1)
            for k, v in compare_clusterings(codes, flat, np.asarray(y)[idx], n_clusters, seed=seed).items():
                runs.setdefault(k + suffix, []).append(v)
    return {k: np.asarray(v) for k, v in runs.items()}


def _width_sweep(x: np.ndarray, config: Config, key) -> dict:
    """Regions crossed per unit length along lines between test inputs, at initialisation."""
    from jaxinterp import models
    from jaxinterp.polytope import exact_walk, relu_preactivations

    rng = numpy_rng(named_key(key, "lines"))
    i = rng.choice(len(x), config.lines_per_width, replace=False)
    j = rng.choice(len(x), config.lines_per_width, replace=False)
    i, j = i[i != j], j[i != j]
    rows = []
    for width in config.widths:
        model = models.MLP(hidden=(width, width), n_classes=10)
        params = models.init_params(model, x.shape[1:], key=named_key(key, "init", width))
        pre = relu_preactivations(lambda v, model=model, params=params: model.apply(params, v),
                                  promote=np.float64)  # float32 parameters, walked in float64 (explicitly)
        walk = exact_walk(pre, x[i], x[j], max_crossings=config.max_crossings, tol=config.tol, keep_regions=False)
        rows.append((width, 2 * width, float(np.mean(walk.n_crossings / walk.length))))
    widths, neurons, regions = (np.array(c, dtype=float) for c in zip(*rows))
    slope, intercept = np.polyfit(neurons, regions, 1) if len(neurons) > 1 else (np.nan, np.nan)
    pred = slope * neurons + intercept
    ss_tot = np.sum((regions - regions.mean()) ** 2)
    r2 = 1 - np.sum((regions - pred) ** 2) / ss_tot if len(neurons) > 2 and ss_tot > 0 else np.nan
    loglog = np.polyfit(np.log(neurons), np.log(regions), 1)[0] if len(neurons) > 1 else np.nan
    return {"widths": widths.astype(int).tolist(), "n_neurons": neurons.astype(int).tolist(),
            "regions_per_unit_length": regions.tolist(),
            "regions_per_unit_length_per_neuron": (regions / neurons).tolist(),
            "linear_fit_slope": float(slope), "linear_fit_intercept": float(intercept), "linear_fit_r2": float(r2),
            "loglog_exponent": float(loglog)}


def cnn_stages(model, params) -> list:
    """A ``models.CNN`` as a chain of functions: one per conv block (Conv -> ReLU [-> max-pool]),
    then the head (flatten -> Dense ReLU -> logits). Composing them gives ``model.apply(params, x)``.

    Args:
      model: a ``models.CNN`` (2-D images, channels last).
      params: its parameters.

    Returns:
      ``[stage_0, ..., stage_{n_conv}]``, each ``a [batch, ...] -> [batch, ...]``.
    """
    import flax.linen as nn

    p = params["params"]
    stages = []
    for i, c in enumerate(model.channels):
        conv = nn.Conv(c, (model.kernel_size,) * 2, padding="SAME")

        def block(h, conv=conv, w={"params": p[f"Conv_{i}"]}):
            h = nn.relu(conv.apply(w, h))
            return nn.max_pool(h, (2, 2), strides=(2, 2)) if model.pool else h

        stages.append(block)

    def head(h):
        h = nn.relu(nn.Dense(model.hidden).apply({"params": p["Dense_0"]}, h.reshape(h.shape[0], -1)))
        return nn.Dense(model.n_classes).apply({"params": p["Dense_1"]}, h)

    return stages + [head]


def _chain(stages):
    def f(h):
        for stage in stages:
            h = stage(h)
        return h
    return f


def _deep_data(dataset: str, config: Config):
    """``(x_train, y_train, x_test, y_test, n_classes)`` of a ``deep_datasets`` entry."""
    from jaxinterp import datasets

    if dataset == "digits":
        ds = datasets.load_digits(seed=config.seed)
        return ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.n_classes
    train, test = datasets.load_shapes_bias(0.0, seed=config.seed, n_train=config.shapes_train,
                                            n_test=config.shapes_train // 2, size=config.shapes_size)
    return train.x, train.y, test.x, test.y, int(train.y.max()) + 1


def deep_cnn_paths(dataset: str, config: Config, key) -> dict:
    """Train the deeper CNN on ``dataset`` and walk paths in input space and every conv layer's space.

    The same ``deep_pairs`` same-class and different-class test pairs are used in every space: in
    the space after conv layer ``L`` the path joins the two inputs' activations there and the walk
    counts the boundaries of the network from layer ``L + 1`` on.

    Returns:
      ``{"test_accuracy", "spaces": {space: path_statistics dict}}`` with spaces ``"input"``,
      ``"Conv_0"``, ... (the last conv layer's space sees only the dense layer's boundaries).
    """
    import jax

    from jaxinterp import models

    x_train, y_train, x_test, y_test, n_classes = _deep_data(dataset, config)
    model = models.CNN(channels=config.deep_channels, hidden=config.deep_hidden, n_classes=n_classes, pool=False)
    params, _ = models.train_classifier(model, x_train, y_train, key=named_key(key, "train"),
                                        steps=config.deep_steps, learning_rate=3e-3)
    stages = cnn_stages(model, params)
    ends = {}
    for group, same in (("same", True), ("diff", False)):
        i, j = _pairs(y_test, config.deep_pairs, numpy_rng(named_key(key, "pairs", group)), same)
        ends[group] = (x_test[i], x_test[j])
    spaces = {}
    for layer in range(len(config.deep_channels) + 1):  # 0: input space; L >= 1: after conv layer L - 1
        space = "input" if layer == 0 else f"Conv_{layer - 1}"
        prefix, suffix = jax.jit(_chain(stages[:layer])), _chain(stages[layer:])
        layer_ends = {g: (np.asarray(prefix(a), np.float32), np.asarray(prefix(b), np.float32))
                      for g, (a, b) in ends.items()}
        spaces[space] = path_statistics(suffix, layer_ends, config)
    return {"test_accuracy": models.accuracy(model, params, x_test, y_test), "spaces": spaces}


def compute(config: Config, key) -> Result:
    """Train (or reuse) the classifiers, walk the paths, cluster, and sweep widths at initialisation.

    The mnist1d classifiers come from ``models.trained_classifier(arch, "mnist1d", seed=config.seed)``
    (memoised and shared with the other studies, so keyed by the integer seed); every other
    random choice derives from ``key`` by name.
    """
    from jaxinterp import datasets, models

    ds = datasets.load_mnist1d()
    x_test, y_test = np.asarray(ds.x_test, np.float32), np.asarray(ds.y_test)
    per_arch, seconds = {}, {}
    for arch in config.archs:
        start = time.perf_counter()
        steps = getattr(config, f"{arch}_steps")
        trained = models.trained_classifier(arch, "mnist1d", seed=config.seed, steps=steps)
        fn = lambda v, model=trained.model, params=trained.params: model.apply(params, v)  # noqa: E731
        r = _density_and_peaks(fn, x_test, y_test, config, named_key(key, "paths", arch),
                               maxpool=MAXPOOL if arch == "cnn" else None)
        r["clustering"] = clustering_draws(fn, x_test, y_test, named_key(key, "clustering", arch),
                                           points=config.cluster_points, repeats=config.cluster_repeats,
                                           n_clusters=config.n_clusters)
        r["test_accuracy"] = float(trained.test_accuracy)
        r["train_steps"] = steps if steps is not None else models.DEFAULT_STEPS[(arch, "mnist1d")]
        per_arch[arch] = r
        seconds[arch] = time.perf_counter() - start
    start = time.perf_counter()
    sweep = _width_sweep(x_test, config, named_key(key, "width_sweep"))
    seconds["width_sweep"] = time.perf_counter() - start
    deep = {}
    for dataset in config.deep_datasets:
        start = time.perf_counter()
        deep[dataset] = deep_cnn_paths(dataset, config, named_key(key, "deep", dataset))
        seconds[f"deep_{dataset}"] = time.perf_counter() - start
    return Result(per_arch, sweep, seconds, deep)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if np.size(values) else None


def _per_arch_metrics() -> dict[str, Any]:
    """``metric name -> function of one arch's dict`` (the JSON contract, per classifier)."""
    from scipy.stats import mannwhitneyu

    table = {
        "density_same_class": lambda r: float(r["density_same"].mean()),
        "density_diff_class": lambda r: float(r["density_diff"].mean()),
        "density_ratio_diff_over_same": lambda r: float(r["density_diff"].mean() / r["density_same"].mean()),
        "fraction_diff_above_same_median": lambda r: float(np.mean(r["density_diff"] > np.median(r["density_same"]))),
        "density_diff_greater_p_value": lambda r: float(  # one-sided Mann-Whitney U test
            mannwhitneyu(r["density_diff"], r["density_same"], alternative="greater").pvalue),
        "path_length_same_class": lambda r: float(r["length_same"].mean()),
        "path_length_diff_class": lambda r: float(r["length_diff"].mean()),
        "peak_position_same_class": lambda r: float(r["peak_position_same"].mean()),
        "peak_position_diff_class": lambda r: float(r["peak_position_diff"].mean()),
        "paths_with_class_change": lambda r: r["paths_with_class_change"],
        "test_accuracy": lambda r: r["test_accuracy"],
        "train_steps": lambda r: r["train_steps"],
        "truncated_walks": lambda r: r["truncated_same"] + r["truncated_diff"],
        "pool_ordering_changes_per_path": lambda r: (r["pool_ordering_changes_same"]
                                                     + r["pool_ordering_changes_diff"]) / 2,
        "max_affine_error": lambda r: max(r["affine_error_same"], r["affine_error_diff"]),
    }
    for name in ("peak_offset", "peak_offset_chance", "peak_offset_midpoint", "class_change_position"):
        table[name] = lambda r, name=name: _mean_or_none(r[name])
    for suffix in ("", "_last_layer"):
        for kind in CLUSTER_KINDS if not suffix else CLUSTER_KINDS[:2]:
            for score in ("purity", "nmi"):
                key = f"{score}_{kind}{suffix}"
                table[key] = lambda r, key=key: float(r["clustering"][key].mean())
    return table


_DEEP_KEYS = ("density_same_class", "density_diff_class", "density_ratio_diff_over_same",
              "density_diff_greater_p_value", "peak_offset", "peak_offset_chance", "peak_offset_midpoint",
              "paths_with_class_change", "truncated_walks", "max_affine_error")


def _deep_metrics(deep: dict) -> dict:
    """``{dataset: {"test_accuracy", "layers": {space: {metric: value, "layer_density_same_class":
    {later layer: value}, ...}}}}`` and the per-path densities / peak offsets behind the claims."""
    table = _per_arch_metrics()
    out = {}
    for dataset, d in deep.items():
        layers = {}
        for space, r in d["spaces"].items():
            row = {k: table[k](r) for k in _DEEP_KEYS}
            for g, name in (("same", "same_class"), ("diff", "diff_class")):
                row[f"layer_density_{name}"] = dict(zip(r["layer_names"], r[f"layer_density_{g}"].mean(0).tolist()))
            row["per_path"] = {k: r[k] for k in ("density_same", "density_diff", "peak_offset", "peak_offset_chance")}
            layers[space] = row
        out[dataset] = {"test_accuracy": d["test_accuracy"], "layers": layers}
    return out


def metrics(result: Result) -> dict:
    """Per classifier (``{arch: value}``): densities, peak offsets, clustering purity/NMI (mean over
    draws), accuracy, walk checks; the per-draw and per-path values behind the claims
    (``clustering_per_draw``, ``per_path``); ``regions_per_unit_length_vs_width``; ``deep_cnn``
    (per dataset and per layer space, see ``_deep_metrics``) and ``seconds``."""
    out = {name: {arch: f(r) for arch, r in result.per_arch.items()} for name, f in _per_arch_metrics().items()}
    out["clustering_per_draw"] = {arch: r["clustering"] for arch, r in result.per_arch.items()}
    out["per_path"] = {arch: {k: r[k] for k in ("density_same", "density_diff", "peak_offset", "peak_offset_chance",
                                                "peak_offset_midpoint")} for arch, r in result.per_arch.items()}
    out["regions_per_unit_length_vs_width"] = result.sweep
    out["deep_cnn"] = _deep_metrics(result.deep)
    out["seconds"] = result.seconds
    return out


def summary(result: Result) -> dict:
    """Density across / within class, peak offset against chance, code vs activation purity, R²."""
    m = metrics(result)
    out = {}
    for arch in result.per_arch:
        out[f"{arch}: density diff / same class"] = (
            f"{m['density_diff_class'][arch]:.1f} / {m['density_same_class'][arch]:.1f}")
        out[f"{arch}: peak offset (chance)"] = (
            f"{m['peak_offset'][arch]:.3f} ({m['peak_offset_chance'][arch]:.3f})"
            if m["peak_offset"][arch] is not None else "no class change")
        out[f"{arch}: purity codes / activations"] = (
            f"{m['purity_codes'][arch]:.3f} / {m['purity_activations'][arch]:.3f}")
    out["regions per length vs neurons: linear R^2"] = round(result.sweep["linear_fit_r2"], 3)
    for dataset, d in m["deep_cnn"].items():
        out[f"deep CNN, {dataset}: density diff / same class per layer space"] = ", ".join(
            f"{space} {row['density_diff_class']:.3g} / {row['density_same_class']:.3g}"
            for space, row in d["layers"].items())
    return out


def _arch_claims(arch: str, r: dict) -> list[claims_lib.Claim]:
    """The paper's three qualitative claims, tested on one classifier."""
    out = [claims_lib.ordering(f"{arch}: boundary density is higher across classes than within",
                               r["density_diff"], r["density_same"], paper_value="across > within",
                               figure="density_same_vs_diff")]
    if r["paths_with_class_change"] >= 2:
        out.append(claims_lib.paired_ordering(
            f"{arch}: density peaks nearer the class change than a uniform peak would",
            r["peak_offset_chance"], r["peak_offset"], paper_value="peak at class change", figure="density_profile"))
        out.append(claims_lib.paired_ordering(
            f"{arch}: density peaks nearer the class change than the path midpoint",
            r["peak_offset_midpoint"], r["peak_offset"], paper_value="peak at class change", figure="density_profile"))
    c = r["clustering"]
    for suffix, what in (("", "all ReLU layers"), ("_last_layer", "last hidden layer")):
        out.append(claims_lib.paired_ordering(
            f"{arch}: K-means on polytope codes gives purer clusters than on activations ({what})",
            c[f"purity_codes{suffix}"], c[f"purity_activations{suffix}"], paper_value="codes > activations",
            figure="clustering"))
    return out


def deep_claims(dataset: str, spaces: dict) -> list[claims_lib.Claim]:
    """Per layer space of the deeper CNN: density across > within; peak nearer the class change than chance."""
    out = []
    for space, r in spaces.items():
        where = "input space" if space == "input" else f"{space} activation space (later layers' boundaries)"
        out.append(claims_lib.ordering(
            f"deep CNN, {dataset}, {where}: boundary density is higher across classes than within",
            r["density_diff"], r["density_same"], paper_value="across > within", figure="deep_layers"))
        if r["paths_with_class_change"] >= 2:
            out.append(claims_lib.paired_ordering(
                f"deep CNN, {dataset}, {where}: density peaks nearer the class change than a uniform peak would",
                r["peak_offset_chance"], r["peak_offset"], paper_value="peak at class change", figure="deep_layers"))
    return out


def claims(result: Result) -> list[claims_lib.Claim]:
    """Per classifier: density across > within, peaks at class changes, codes > activations in
    cluster purity; Hanin-Rolnick: regions per unit length grow linearly (and proportionally) with
    neurons; per dataset and layer space of the deeper CNN: density across > within, peaks at class changes."""
    out = [c for arch, r in result.per_arch.items() for c in _arch_claims(arch, r)]
    out += [c for dataset, d in result.deep.items() for c in deep_claims(dataset, d["spaces"])]
    sweep = result.sweep
    if len(sweep["n_neurons"]) > 2:
        out.append(claims_lib.within("Hanin-Rolnick: regions per unit length linear in neurons (fit R²)", 1.0,
                                     sweep["linear_fit_r2"], tolerance=0.05, figure="regions_vs_width"))
    if len(sweep["n_neurons"]) > 1:
        out.append(claims_lib.within("Hanin-Rolnick: regions per unit length ∝ neurons (log-log exponent)", 1.0,
                                     sweep["loglog_exponent"], tolerance=0.2, figure="regions_vs_width"))
    return out


def _plot_densities(per_arch: dict):
    from jaxinterp.plotting import subplots

    fig, axes = subplots(1, len(per_arch), figsize=(6 * len(per_arch), 4.2), squeeze=False)
    for ax, (arch, r) in zip(axes[0], per_arch.items()):
        hi = max(np.percentile(r["density_same"], 99), np.percentile(r["density_diff"], 99))
        bins = np.linspace(0, hi, 30)
        ax.hist(r["density_same"], bins, alpha=0.6, label=f"same class (mean {r['density_same'].mean():.1f})")
        ax.hist(r["density_diff"], bins, alpha=0.6, label=f"different class (mean {r['density_diff'].mean():.1f})")
        ax.set_xlabel("boundaries per unit length (exact walk)")
        ax.set_ylabel("paths")
        ax.set_title(f"{arch}: density on paths between test inputs\n(paper: higher across classes)", fontsize=10)
        ax.legend(fontsize=8)
    return fig


def _plot_profiles(per_arch: dict):
    from jaxinterp.plotting import subplots

    fig, axes = subplots(1, 2, figsize=(12, 4.2))
    for arch, r in per_arch.items():
        t = (np.arange(len(r["profile_diff"])) + 0.5) / len(r["profile_diff"])
        line, = axes[0].plot(t, r["profile_diff"], marker=".", label=f"{arch}, different class")
        axes[0].plot(t, r["profile_same"], ls="--", color=line.get_color(), label=f"{arch}, same class")
        centers = (r["aligned_edges"][:-1] + r["aligned_edges"][1:]) / 2
        axes[1].plot(centers, r["aligned_hist"], marker=".", label=arch)
    axes[0].set_xlabel("position t along the path")
    axes[0].set_ylabel("boundaries per unit length")
    axes[0].set_title("mean density profile")
    axes[1].axvline(0, color="k", lw=0.8, label="class change (paper: peak here)")
    axes[1].set_xlabel("t - t(predicted class first changes)")
    axes[1].set_ylabel("boundaries per unit length")
    axes[1].set_title("aligned on the class change (mean over the paths reaching each offset)", fontsize=10)
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def _plot_clustering(per_arch: dict):
    from jaxinterp.plotting import subplots

    fig, axes = subplots(1, 2, figsize=(12, 4.2))
    archs = list(per_arch)
    for ax, (suffix, title) in zip(axes, (("", "all ReLU layers"), ("_last_layer", "last hidden layer"))):
        kinds = CLUSTER_KINDS if not suffix else CLUSTER_KINDS[:2]
        for k, kind in enumerate(kinds):
            label = kind.replace("codes", "codes (Hamming)").replace("_agglomerative", ", agglomerative")
            vals = [per_arch[a]["clustering"][f"purity_{kind}{suffix}"] for a in archs]
            ax.bar(np.arange(len(archs)) + 0.2 * (k - (len(kinds) - 1) / 2), [v.mean() for v in vals], 0.2,
                   yerr=[v.std() for v in vals], capsize=3, label=label)
        ax.set_xticks(range(len(archs)), archs)
        ax.set_ylabel("cluster purity (class labels)")
        ax.set_ylim(0, 1)
        ax.set_title(f"clustering test inputs, {title} (paper: codes > activations)", fontsize=10)
        ax.legend(fontsize=8)
    return fig


def _plot_sweep(sweep: dict):
    from jaxinterp.plotting import subplots

    fig, ax = subplots(figsize=(6.5, 4.4))
    n = np.array(sweep["n_neurons"], float)
    regions = np.array(sweep["regions_per_unit_length"])
    ax.plot(n, regions, "o", label="exact walk, at initialisation")
    if np.isfinite(sweep["linear_fit_slope"]):
        ax.plot(n, sweep["linear_fit_slope"] * n + sweep["linear_fit_intercept"], "-",
                label=f"linear fit (R² = {sweep['linear_fit_r2']:.3f})")
    c = np.sum(regions * n) / np.sum(n * n)  # least-squares c in regions = c * neurons
    ax.plot(n, c * n, "k:", label="Hanin-Rolnick: ∝ neurons")
    ax.set_xlabel("number of neurons (MLP, 2 hidden layers)")
    ax.set_ylabel("regions per unit length")
    ax.set_title("regions along lines vs width")
    ax.legend(fontsize=8)
    return fig


def _plot_deep(deep: dict):
    """Per dataset: mean density on same- vs different-class paths in each layer space (with the
    one-sided Mann-Whitney p), and the peak offset against its uniform-peak chance level."""
    from scipy.stats import mannwhitneyu

    from jaxinterp.plotting import subplots

    fig, axes = subplots(2, max(len(deep), 1), figsize=(6.5 * max(len(deep), 1), 8), squeeze=False)
    for col, (dataset, d) in enumerate(deep.items()):
        spaces = list(d["spaces"])
        x = np.arange(len(spaces))
        ax = axes[0, col]
        for k, (g, label) in enumerate((("same", "same class"), ("diff", "different class"))):
            vals = [d["spaces"][s][f"density_{g}"] for s in spaces]
            ax.bar(x + 0.38 * (k - 0.5), [v.mean() for v in vals], 0.38, yerr=[v.std() for v in vals], capsize=3,
                   label=label)
        for k, sp in enumerate(spaces):
            r = d["spaces"][sp]
            p = mannwhitneyu(r["density_diff"], r["density_same"], alternative="greater").pvalue
            ax.annotate(f"p={p:.2g}", (k, ax.get_ylim()[1] * 0.93), ha="center", fontsize=8)
        ax.set_yscale("symlog")
        ax.set_xticks(x, spaces)
        ax.set_xlabel("space of the path (boundaries of all later layers)")
        ax.set_ylabel("boundaries per unit length")
        ax.set_title(f"deep CNN, {dataset} (test acc {d['test_accuracy']:.2f}); paper: different > same", fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        for k, (key, label) in enumerate((("peak_offset", "density peak"), ("peak_offset_chance", "uniform peak"))):
            vals = [d["spaces"][s][key] for s in spaces]
            ax.bar(x + 0.38 * (k - 0.5), [np.mean(v) if v.size else np.nan for v in vals], 0.38, label=label)
        ax.set_xticks(x, spaces)
        ax.set_xlabel("space of the path")
        ax.set_ylabel("|peak - class change| (fraction of path)")
        ax.set_title(f"deep CNN, {dataset}: peak vs class change (paper: peak at the change)", fontsize=10)
        ax.legend(fontsize=8)
    return fig


def figures(result: Result) -> dict:
    """``density_same_vs_diff``, ``density_profile``, ``clustering``, ``regions_vs_width`` and, with a
    deeper CNN, ``deep_layers``."""
    out = {"density_same_vs_diff": _plot_densities(result.per_arch),
           "density_profile": _plot_profiles(result.per_arch),
           "clustering": _plot_clustering(result.per_arch),
           "regions_vs_width": _plot_sweep(result.sweep)}
    if result.deep:
        out["deep_layers"] = _plot_deep(result.deep)
    return out


STUDY = Study(
    name=NAME,
    description="Polytope lens: exact boundary density on paths, peaks vs class changes, code clustering, "
                "regions vs width",
    config=Config,
    compute=compute,
    metrics=metrics,
    figures=figures,
    claims=claims,
    summary=summary,
)
