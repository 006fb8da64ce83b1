"""Study ``transformer``: SAEs on a modular-addition transformer, and what ablating their directions does.

A one-block transformer (``jaxinterp.transformer``) is trained on ``(a + b) mod p``. Its
activations are captured with the ``"activations"`` rules: the MLP's GELU output
(``Block_0/mlp_in/gelu:post``), the attention pattern (``Block_0/Attention_0/softmax:post``) and
the residual stream after the block (the input of the final layer norm, ``ln_final/layer_norm``),
at every position of every ``[a, b, =]`` sequence. A TopK SAE is trained on the MLP activations
and on the residual stream, with two dead-latent remedies: the auxiliary-k loss (Gao et al.
2024) and resampling of latents silent since the previous resampling toward high-loss inputs
at 20, 40, 60 and 80 % of training (Bricken et al. 2023); we report explained variance, L0, the
fraction of latents never active and the number of resampled latents.

Ablation (``capture.intervene``): for each of ``n_ablate`` directions ``u`` of each kind, the
activation's component along ``u`` is replaced by its dataset mean,
``v - ((v - mean) . u) u``, and the increase of the cross-entropy on all ``p * p`` pairs is
measured. Kinds: the SAE's decoder directions of the most used latents (largest mean activation
times decoder norm), random unit directions, and single neurons (the basis directions of the
highest-variance units). Claims: learned directions matter more than random ones, and the model
solves the task (test accuracy above ``accuracy_threshold``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.keys import named_key
from jaxinterp.studies.base import Study, StudyConfig, progress_enabled
from jaxinterp.studies.claims import FAILS, HOLDS, Claim, ordering

NAME = "transformer"
SITES = {"mlp": "Block_0/mlp_in/gelu:post", "resid": "ln_final/layer_norm"}
PATTERN = "Block_0/Attention_0/softmax:post"
KINDS = ("learned", "random", "neuron")
MAX_DEAD = 0.1


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the ``transformer`` study.

    Attributes:
      p: modulus of the addition task.
      train_fraction: fraction of the ``p * p`` pairs used for training.
      train_steps: transformer training steps.
      d_model: residual-stream width.
      d_mlp: MLP width.
      n_heads: attention heads.
      sae_expansion: SAE latents per activation dimension (1: as many latents as units; wider SAEs on
        these low-rank activations leave many latents dead).
      sae_k: active latents per sample (TopK).
      sae_steps: SAE training steps.
      sae_resample: resample dead latents during SAE training (off: the aux-k loss alone).
      n_ablate: directions of each kind ablated (one at a time).
      accuracy_threshold: test accuracy the trained model must exceed.
    """

    p: int = 23
    train_fraction: float = 0.6
    train_steps: int = 3000
    d_model: int = 64
    d_mlp: int = 128
    n_heads: int = 4
    sae_expansion: int = 1
    sae_k: int = 8
    sae_steps: int = 3000
    sae_resample: bool = True
    n_ablate: int = 16
    accuracy_threshold: float = 0.9

    @classmethod
    def quick(cls) -> Config:
        """A smaller run: 2500 training steps, 1500 SAE steps, 12 directions per kind."""
        return cls(train_steps=2500, sae_steps=1500, n_ablate=12)

    def validate(self) -> None:
        """Positive sizes; ``n_ablate`` at most the smallest site width; fractions in (0, 1)."""
        super().validate()
        for name in ("p", "train_steps", "d_model", "d_mlp", "n_heads", "sae_expansion", "sae_k", "sae_steps",
                     "n_ablate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)}.")
        if self.p < 2:
            raise ValueError(f"`p` must be at least 2; got {self.p}.")
        if self.d_model % self.n_heads:
            raise ValueError(f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads}).")
        if self.n_ablate > min(self.d_model, self.d_mlp):
            raise ValueError(f"`n_ablate` must be at most min(d_model, d_mlp) = {min(self.d_model, self.d_mlp)}; "
                             f"got {self.n_ablate}.")
        if self.sae_k > self.sae_expansion * min(self.d_model, self.d_mlp):
            raise ValueError(f"`sae_k` must be at most the number of SAE latents; got {self.sae_k}.")
        for name in ("train_fraction", "accuracy_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must lie in (0, 1); got {getattr(self, name)}.")


class Result(NamedTuple):
    """What ``compute`` returns.

    Attributes:
      train_accuracy, test_accuracy: accuracy of the trained transformer.
      fourier_sparsity: fraction of the token embedding's power in its 4 strongest frequencies.
      base_loss: cross-entropy on all pairs without intervention.
      sae: ``{site: {"explained_variance", "l0", "dead_fraction", "n_latents", "n_resampled"}}``.
      ablation: ``{site: {kind: [n_ablate] loss increases}}``.
      attention_to_operands: mean attention of the last position to the two operand tokens.
      losses: transformer training loss ``[train_steps]``.
      accuracy_threshold: the configured threshold of the accuracy claim.
    """

    train_accuracy: float
    test_accuracy: float
    fourier_sparsity: float
    base_loss: float
    sae: dict
    ablation: dict
    attention_to_operands: float
    losses: np.ndarray
    accuracy_threshold: float


def _loss(logits, y):
    """Mean softmax cross-entropy of ``[n, p]`` logits against int labels ``[n]``."""
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def fit_sae(acts: jax.Array, config: Config, key) -> tuple[object, dict]:
    """Train a TopK SAE on ``acts [n, d]``; return it and its explained variance, L0, dead fraction and
    number of resampled latents.

    A latent is dead for the remedies after ``2 n`` samples without activating (about two passes
    over the data); the aux-k loss uses half the latents; resampling (when ``config.sae_resample``)
    follows the library's default schedule for TopK, laid out on ``config.sae_steps``.
    """
    from jaxinterp import directions as jd

    d = acts.shape[-1]
    n_latents = config.sae_expansion * d
    learner = jd.sae(n_latents, kind="topk", k=config.sae_k, aux_k=n_latents // 2, aux_coef=1.0,
                     dead_window=2 * len(acts), steps=config.sae_steps,
                     resample_every=None if config.sae_resample else 0)
    dirs = jd.fit(learner, acts, key=key, progress=progress_enabled())
    codes = dirs.encode(acts)
    stats = {"explained_variance": float(jd.explained_variance(acts, dirs.decode(codes))),
             "l0": float(jd.l0(codes)), "dead_fraction": float(jd.dead_fraction(codes)), "n_latents": n_latents,
             "n_resampled": int(dirs.info["n_resampled"])}
    return dirs, stats


def ablation_directions(dirs, acts: jax.Array, n: int, key) -> dict[str, jax.Array]:
    """``{kind: [n, d]}`` unit directions: top SAE latents' decoder rows, random, highest-variance neurons."""
    codes = dirs.encode(acts)
    decoder = dirs.components * dirs.scale[None, :]
    usage = jnp.mean(codes, axis=0) * jnp.linalg.norm(decoder, axis=1)
    learned = decoder[jnp.argsort(-usage)[:n]]
    rand = jax.random.normal(key, (n, acts.shape[-1]))
    neurons = jnp.eye(acts.shape[-1])[jnp.argsort(-jnp.var(acts, axis=0))[:n]]
    unit = lambda u: u / jnp.linalg.norm(u, axis=1, keepdims=True)  # noqa: E731
    return {"learned": unit(learned), "random": unit(rand), "neuron": neurons}


def ablation_effects(model, params, x, y, name: str, directions: jax.Array, mean: jax.Array) -> np.ndarray:
    """Loss increase when the component of activation ``name`` along each direction is mean-ablated.

    Args:
      model: the transformer; params: its parameters.
      x: ``[n, 3]`` sequences; y: ``[n]`` labels.
      name: the activation (a ``capture(..., rules="activations")`` name).
      directions: ``[k, d]`` unit directions, ablated one at a time.
      mean: ``[d]`` the activation's mean over the dataset.

    Returns:
      ``[k]`` cross-entropy with the ablation minus without.
    """
    from jaxinterp.capture import intervene

    base = _loss(model.apply(params, x), y)

    def one(u):
        row = lambda a, v: a.reshape((1,) * (v.ndim - 1) + (-1,))  # noqa: E731 - [d] over v's leading axes
        edit = lambda v: v - ((v - row(mean, v)) @ u)[..., None] * row(u, v)  # noqa: E731
        return _loss(intervene(model.apply, {name: edit}, rules="activations")(params, x), y) - base

    return np.asarray(jax.lax.map(one, directions))


def compute(config: Config, key) -> Result:
    """Train the transformer, capture its activations, fit SAEs and measure ablations."""
    from jaxinterp import transformer
    from jaxinterp.capture import capture

    tt = transformer.train_modular_addition(
        config.p, key=named_key(key, "train"), steps=config.train_steps, train_fraction=config.train_fraction,
        d_model=config.d_model, n_heads=config.n_heads, d_mlp=config.d_mlp, progress=progress_enabled())
    data = tt.data
    x = jnp.asarray(np.concatenate([data.x_train, data.x_test]))
    y = jnp.asarray(np.concatenate([data.y_train, data.y_test]))
    captured = capture(tt.model.apply, rules="activations", post_activations=True,
                       names=[*SITES.values(), PATTERN])
    logits, acts = jax.jit(captured)(tt.params, x)
    sae, ablation = {}, {}
    for site, name in SITES.items():
        flat = acts[name].reshape(-1, acts[name].shape[-1])
        dirs, sae[site] = fit_sae(flat, config, named_key(key, "sae", site))
        kinds = ablation_directions(dirs, flat, config.n_ablate, named_key(key, "random", site))
        mean = flat.mean(0)
        ablation[site] = {kind: ablation_effects(tt.model, tt.params, x, y, name, u, mean)
                          for kind, u in kinds.items()}
    embedding = np.asarray(tt.params["params"]["embed"]["embedding"])[: config.p]
    return Result(tt.train_accuracy, tt.test_accuracy, transformer.fourier_sparsity(embedding, top=4),
                  float(_loss(logits, y)), sae, ablation,
                  float(acts[PATTERN][:, :, -1, :2].sum(-1).mean()), tt.losses, config.accuracy_threshold)


def metrics(result: Result) -> dict:
    """Accuracy, Fourier sparsity, SAE statistics per site and ablation effects per site and kind.

    ``sae_explained_variance``, ``sae_l0``, ``sae_dead_fraction``: ``{site: value}``;
    ``ablation``: ``{site: {kind: {"mean", "median", "max", "effects"}}}`` (loss increases).
    """
    ablation = {site: {kind: {"mean": float(np.mean(e)), "median": float(np.median(e)), "max": float(np.max(e)),
                              "effects": [float(v) for v in e]} for kind, e in kinds.items()}
                for site, kinds in result.ablation.items()}
    return {
        "train_accuracy": result.train_accuracy,
        "test_accuracy": result.test_accuracy,
        "fourier_sparsity_top4": result.fourier_sparsity,
        "attention_to_operands": result.attention_to_operands,
        "base_loss": result.base_loss,
        "sae_explained_variance": {s: v["explained_variance"] for s, v in result.sae.items()},
        "sae_l0": {s: v["l0"] for s, v in result.sae.items()},
        "sae_dead_fraction": {s: v["dead_fraction"] for s, v in result.sae.items()},
        "sae_latents": {s: v["n_latents"] for s, v in result.sae.items()},
        "sae_resampled": {s: v["n_resampled"] for s, v in result.sae.items()},
        "ablation": ablation,
    }


def claims(result: Result) -> list[Claim]:
    """Per site: learned directions' ablation effects exceed random directions'; dead latents under
    ``MAX_DEAD``; test accuracy above the configured threshold."""
    rows = [ordering(f"ablating learned SAE directions ({site}) raises the loss more than random directions",
                     result.ablation[site]["learned"], result.ablation[site]["random"],
                     paper_value="learned > random", figure="ablation")
            for site in result.ablation]
    for site, stats in result.sae.items():
        ok = stats["dead_fraction"] < MAX_DEAD
        rows.append(Claim(f"the TopK SAE's dead-latent remedies keep dead latents ({site}) under {MAX_DEAD:.0%}",
                          f"< {MAX_DEAD:g}", stats["dead_fraction"], None, HOLDS if ok else FAILS,
                          f"fraction of latents never active on all sequences < {MAX_DEAD:g}", "ablation"))
    accuracy_threshold = result.accuracy_threshold
    ok = result.test_accuracy > accuracy_threshold
    rows.append(Claim("the transformer solves modular addition on held-out pairs", f"> {accuracy_threshold:g}",
                      result.test_accuracy, None, HOLDS if ok else FAILS,
                      f"test accuracy > {accuracy_threshold:g}", "ablation"))
    return rows


def summary(result: Result) -> dict:
    """Test accuracy, SAE explained variance / dead fraction, median ablation effects."""
    out = {"test accuracy": result.test_accuracy}
    for site, s in result.sae.items():
        out[f"SAE {site} EV / L0 / dead"] = f"{s['explained_variance']:.3f} / {s['l0']:.1f} / {s['dead_fraction']:.3f}"
        out[f"ablation {site} (median dloss)"] = ", ".join(
            f"{k} {np.median(e):.3g}" for k, e in result.ablation[site].items())
    return out


def figures(result: Result) -> dict:
    """``ablation``: training loss, and the loss increase per ablated direction by site and kind."""
    from jaxinterp.plotting import subplots

    sites = list(result.ablation)
    fig, axes = subplots(1, 1 + len(sites), figsize=(4.2 * (1 + len(sites)), 3.8))
    axes[0].semilogy(result.losses)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].set_title(f"test accuracy {result.test_accuracy:.3f}")
    for ax, site in zip(axes[1:], sites):
        kinds = result.ablation[site]
        ax.boxplot([np.asarray(kinds[k]) for k in KINDS])
        ax.set_xticks(range(1, len(KINDS) + 1), list(KINDS))
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylabel("loss increase")
        s = result.sae[site]
        ax.set_title(f"{site}: SAE EV {s['explained_variance']:.2f}, dead {s['dead_fraction']:.2f}")
    return {"ablation": fig}


STUDY = Study(
    name=NAME,
    description="modular-addition transformer: TopK SAEs on MLP and residual stream; ablation of learned vs "
                "random directions vs neurons",
    config=Config,
    compute=compute,
    metrics=metrics,
    figures=figures,
    claims=claims,
    summary=summary,
)
