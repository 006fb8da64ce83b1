"""Study ``models``: train the standard MLP and CNN on mnist1d and digits; ReLU statistics per layer.

Not a paper reproduction (no claims): it trains the classifiers the other studies analyse and
reports their test accuracy, and per ReLU layer the mean activation, the dead-unit fraction and
the sparsity on the test set.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import numpy as np

from jaxinterp.studies.base import Study, StudyConfig, progress_enabled

NAME = "models"


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the ``models`` study.

    Attributes:
      archs: architectures to train (``models.MLP``, ``models.CNN``).
      datasets: datasets to train on.
      steps: training steps per classifier; None for each model's default (``models.DEFAULT_STEPS``).
      batch_size: test inputs per batch when streaming the layer statistics.
    """

    archs: tuple[Literal["mlp", "cnn"], ...] = ("mlp", "cnn")
    datasets: tuple[Literal["mnist1d", "digits"], ...] = ("mnist1d", "digits")
    steps: int | None = None
    batch_size: int = 256

    @classmethod
    def quick(cls) -> Config:
        """300 training steps per classifier (shared with the other studies' quick runs)."""
        return cls(steps=300)

    def validate(self) -> None:
        """Non-empty model lists; positive steps and batch size."""
        super().validate()
        for name in ("archs", "datasets"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` must name at least one entry.")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"`steps` must be positive (or None for the default); got {self.steps}.")
        if self.batch_size <= 0:
            raise ValueError(f"`batch_size` must be positive; got {self.batch_size}.")


class Result(NamedTuple):
    """What ``compute`` returns, keyed by ``"arch/dataset"``.

    Attributes:
      accuracy: test accuracy.
      layers: ``{layer: {"units", "mean_activation", "dead_fraction", "sparsity"}}``.
      steps: training steps used.
    """

    accuracy: dict[str, float]
    layers: dict[str, dict[str, dict[str, float]]]
    steps: dict[str, int]


def layer_statistics(model, params, x, *, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Per-layer ReLU statistics over ``x``: mean post-activation, dead fraction, sparsity.

    A unit is dead if it is never active (pre-activation > 0) on ``x``; sparsity is the fraction
    of (input, unit) pairs with the unit inactive. Streams in batches of ``batch_size``.

    Args:
      model: a Flax module whose ``apply(params, x)`` is captured.
      params: its parameters.
      x: inputs ``[n, ...]``.
      batch_size: inputs per streamed batch.

    Returns:
      ``{layer name: {"units", "mean_activation", "dead_fraction", "sparsity"}}``.
    """
    from jaxinterp.capture import capture
    from jaxinterp.streaming import stream

    captured = capture(model.apply)

    def fn(xb):
        _, acts = captured(params, xb)
        out = {}
        for name, pre in acts.items():
            out[name + "/post"] = pre * (pre > 0).astype(pre.dtype)
            out[name + "/active"] = (pre > 0).astype(pre.dtype)
        return out

    stats = stream(fn, x, batch_size=batch_size)
    layers = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in stats))
    result = {}
    for layer in layers:
        active = stats[layer + "/active"]
        result[layer] = {
            "units": int(active.mean.size),
            "mean_activation": float(stats[layer + "/post"].mean.mean()),
            "dead_fraction": float(np.mean(active.max <= 0)),
            "sparsity": float(1.0 - active.mean.mean()),
        }
    return result


def compute(config: Config, key) -> Result:
    """Train every ``arch/dataset`` classifier and measure its ReLU layers on the test set.

    The classifiers come from ``models.trained_classifier(arch, dataset, seed=config.seed)``,
    which memoises them so the other studies analyse the very same networks; that function takes
    the integer seed, so ``key`` is not used.
    """
    from jaxinterp._progress import progress_bar

    from jaxinterp import models

    del key
    accuracy, layers, steps = {}, {}, {}
    combos = [(a, d) for d in config.datasets for a in config.archs]
    for arch, data in progress_bar(combos, desc="training classifiers", disable=not progress_enabled()):
        tc = models.trained_classifier(arch, data, seed=config.seed, steps=config.steps)
        name = f"{arch}/{data}"
        accuracy[name] = float(tc.test_accuracy)
        layers[name] = layer_statistics(tc.model, tc.params, tc.dataset.x_test, batch_size=config.batch_size)
        steps[name] = config.steps if config.steps is not None else models.DEFAULT_STEPS[(arch, data)]
    return Result(accuracy, layers, steps)


def metrics(result: Result) -> dict:
    """``accuracy`` and ``layers`` (keyed by ``"arch/dataset"``), and ``train_steps``."""
    return {"accuracy": result.accuracy, "layers": result.layers, "train_steps": result.steps}


def summary(result: Result) -> dict:
    """Test accuracy of each classifier."""
    return {f"accuracy {k}": v for k, v in result.accuracy.items()}


def figures(result: Result) -> dict:
    """``accuracy_and_sparsity``: test accuracy per classifier; sparsity and dead units per layer."""
    from jaxinterp.plotting import subplots

    fig, axes = subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 2.5]})
    names = list(result.accuracy)
    axes[0].bar(range(len(names)), [result.accuracy[n] for n in names], color="tab:blue")
    axes[0].set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes[0].set_ylabel("test accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("classifiers")
    labels, dead, sparse = [], [], []
    for model_name, layers in result.layers.items():
        for layer, s in layers.items():
            labels.append(f"{model_name} {layer}")
            dead.append(s["dead_fraction"])
            sparse.append(s["sparsity"])
    pos = np.arange(len(labels))
    axes[1].bar(pos - 0.2, sparse, 0.4, label="sparsity (inactive fraction)")
    axes[1].bar(pos + 0.2, dead, 0.4, label="dead units")
    axes[1].set_xticks(pos, labels, rotation=60, ha="right", fontsize=7)
    axes[1].set_ylabel("fraction")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    axes[1].set_title("ReLU layers on the test set")
    return {"accuracy_and_sparsity": fig}


STUDY = Study(
    name=NAME,
    description="train MLP/CNN on mnist1d and digits; accuracy and ReLU statistics",
    config=Config,
    compute=compute,
    metrics=metrics,
    figures=figures,
    summary=summary,
)
