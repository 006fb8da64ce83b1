"""Unit cards: everything about one unit or direction on one page, in the spirit of SAE dashboards.

A card shows a unit's whole activation range, not only its top: exemplars at quantile levels
from the maximum down to the minimum, the histogram of its activations, its automated
interpretability scores (the Interpretability Index and the in-silico 2AFC) and, where a readout
is given, what it does downstream (the outputs it pushes up and down).

``unit_card_data`` computes a typed ``UnitCard`` (pure: numpy arrays and numbers, no plotting);
``unit_card_figure`` draws one; ``unit_card`` does both in one call::

    card = unit_card_data(acts, images, unit=3, similarity="pixel", readout=w_out)
    fig = unit_card_figure(card)         # or unit_card(acts, images, 3) for the figure at once
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxinterp._display import (array_summary, html_table, number, summary_repr, summary_treescope)
from jaxinterp._validation import check_finite, check_in_range, check_positive_int, check_rank
from jaxinterp.interpretability.exemplars import N_REFS, N_TRIALS, as_float_array, quantile_exemplars
from jaxinterp.interpretability.index import check_items_match, interpretability_index
from jaxinterp.interpretability.psychophysics import psychophysics
from jaxinterp.interpretability.similarity import Similarity, as_similarity

__all__ = ["DEFAULT_LEVELS", "OutputEffects", "UnitCard", "unit_card", "unit_card_data", "unit_card_figure"]

#: quantile levels of the exemplar rows, from the maximum to the minimum
DEFAULT_LEVELS = (1.0, 0.75, 0.5, 0.25, 0.0)
#: inputs that the paper's 2AFC needs inside the kept range (``4 * n_trials * (1 + n_refs)``, then one more)
_AFC_INPUTS = 4 * N_TRIALS * (1 + N_REFS)


class OutputEffects(NamedTuple):
    """What a unit does downstream: the outputs it raises most and lowers most.

    Attributes:
      kind: ``"weights"`` (the readout's row for the unit: output change per unit of activation)
        or ``"ablation"`` (mean output change, over the unit's top exemplars, when the unit is
        set to zero: ``f(acts) - f(acts with the unit zeroed)``).
      top_indices, top_effects: ``[m]`` outputs with the largest effects, descending.
      bottom_indices, bottom_effects: ``[m]`` outputs with the smallest effects, ascending.
      top_labels, bottom_labels: names of those outputs (``output_names``, else their indices).
    """

    kind: str
    top_indices: np.ndarray
    top_effects: np.ndarray
    bottom_indices: np.ndarray
    bottom_effects: np.ndarray
    top_labels: tuple[str, ...]
    bottom_labels: tuple[str, ...]


class UnitCard(NamedTuple):
    """One unit's card (see the module docstring); numpy arrays and Python numbers only.

    Attributes:
      unit: the unit's column in ``acts``.
      n_inputs: inputs the card was computed on.
      levels: ``[L]`` quantile levels of the exemplar rows (of all inputs, or of the active ones).
      level_values: ``[L]`` the activation at each level.
      exemplar_indices: ``[L, n]`` dataset indices of the inputs nearest to each level's value.
      exemplar_values: ``[L, n]`` their activations.
      exemplar_items: ``[L, n, ...]`` the inputs themselves (so the card draws without the dataset).
      hist_counts: ``[bins]`` histogram of the unit's activations (of the active ones with ``active_only``).
      hist_edges: ``[bins + 1]`` its bin edges (over their range).
      mean, std: of the activations.
      density: fraction of inputs with activation > 0.
      active_only: the levels are quantiles of the active inputs (activation > 0) only.
      ii: Interpretability Index of the unit (None without a similarity).
      two_afc: 2AFC score (None without a similarity, or when not computed).
      similarity: name of the similarity of both scores (None without one).
      outputs: ``OutputEffects`` (None without a readout).
    """

    unit: int
    n_inputs: int
    levels: np.ndarray
    level_values: np.ndarray
    exemplar_indices: np.ndarray
    exemplar_values: np.ndarray
    exemplar_items: np.ndarray
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    mean: float
    std: float
    density: float
    active_only: bool
    ii: float | None
    two_afc: float | None
    similarity: str | None
    outputs: OutputEffects | None

    def _summary(self) -> list[tuple[str, str | None]]:
        out = self.outputs
        return [("unit", str(self.unit)), ("n_inputs", str(self.n_inputs)),
                ("exemplars", array_summary(self.exemplar_indices)), ("items", array_summary(self.exemplar_items)),
                ("range", f"[{number(self.hist_edges[0])}, {number(self.hist_edges[-1])}]"),
                ("mean", number(self.mean)), ("density", number(self.density)),
                ("ii", None if self.ii is None else f"{number(self.ii)} ({self.similarity})"),
                ("two_afc", number(self.two_afc)),
                ("outputs", None if out is None else f"{out.kind}, top {', '.join(out.top_labels[:3])}")]

    __repr__ = summary_repr
    __treescope_repr__ = summary_treescope

    def _repr_html_(self) -> str:
        """The summary table and the card's figure (an inline PNG)."""
        from jaxinterp.plotting import close_figure

        fig = unit_card_figure(self)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        close_figure(fig)
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        return (html_table("UnitCard", self._summary())
                + f"<img src='data:image/png;base64,{png}' alt='unit {self.unit} card'/>")


def _check_unit(unit, units: int) -> int:
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
        raise TypeError(f"`unit` must be an int (a column of `acts`); got {type(unit).__name__}.")
    if not 0 <= unit < units:
        raise ValueError(f"`unit` must lie in [0, {units}) (the columns of `acts`); got {unit}.")
    return int(unit)


def _range_rows(x: np.ndarray, unit: int, active_only: bool, n_per_level: int) -> np.ndarray:
    """Indices of the inputs the card's levels range over (all, or the active ones); the unit must vary on them."""
    rows = np.flatnonzero(x > 0) if active_only else np.arange(x.size)
    if rows.size == 0:
        raise ValueError("`acts`: the unit has no activation > 0, so `active_only=True` has no range to cover.")
    if rows.size < n_per_level:
        raise ValueError(f"`n_per_level` ({n_per_level}) exceeds the {rows.size} active inputs of the unit.")
    if x[rows].min() == x[rows].max():
        where = " over its active inputs" if active_only else ""
        raise ValueError(f"`acts`: unit {unit} has a constant response{where} "
                         f"({x[rows][0]:g}), so there is no range to show or exemplars to rank.")
    return rows


def _scores(col: np.ndarray, items, similarity: Similarity | None, *, k: int, two_afc: bool | None,
            q: float) -> tuple[float | None, float | None]:
    """II and 2AFC of one unit (``col [n, 1]``); the 2AFC only when asked, or (None) when there are enough inputs."""
    if similarity is None:
        if two_afc:
            raise ValueError("`two_afc=True` needs a `similarity`.")
        return None, None
    ii = float(interpretability_index(col, items, similarity, k=k, check_finite=False).scores[0])
    if two_afc is None:
        two_afc = col.shape[0] * (1.0 - 2.0 * q) > _AFC_INPUTS
    afc = float(psychophysics(col, items, similarity, q=q, check_finite=False).scores[0]) if two_afc else None
    return ii, afc


def _output_effects(readout, acts: np.ndarray, unit: int, top: np.ndarray, output_names, n_outputs: int
                    ) -> OutputEffects:
    """The readout's effects of ``unit`` (see ``OutputEffects``), its ``n_outputs`` largest and smallest."""
    if callable(readout):
        rows = acts[top]
        ablated = rows.copy()
        ablated[:, unit] = 0.0
        full, cut = (np.asarray(readout(r), np.float64) for r in (rows, ablated))
        check_rank(full, "readout(acts)", 2)
        effects, kind = (full - cut).mean(0), "ablation"
        check_finite(effects, "readout(acts)")
    else:
        if readout is None or isinstance(readout, (str, bytes)):
            raise TypeError(f"`readout` must be an array [units, outputs] or a function; got {type(readout).__name__}.")
        w = as_float_array(readout, "readout", np.float64)
        check_rank(w, "readout", 2)
        check_finite(w, "readout")
        if w.shape[0] != acts.shape[1] or w.shape[1] == 0:
            raise ValueError(f"`readout` must have shape ({acts.shape[1]}, outputs) (one row per unit of `acts`); "
                             f"got {w.shape}.")
        effects, kind = w[unit], "weights"
    m = min(n_outputs, effects.size)
    if output_names is not None and len(output_names) != effects.size:
        raise ValueError(f"`output_names` must name the {effects.size} outputs of the readout; "
                         f"got {len(output_names)}.")
    order = np.argsort(-effects, kind="stable")
    top_i, bottom_i = order[:m], order[::-1][:m]
    label = (lambda i: str(output_names[i])) if output_names is not None else str
    return OutputEffects(kind, top_i, effects[top_i], bottom_i, effects[bottom_i],
                         tuple(label(int(i)) for i in top_i), tuple(label(int(i)) for i in bottom_i))


def unit_card_data(acts, items, unit: int, *, similarity: Similarity | str | None = "pixel",
                   levels: Sequence[float] = DEFAULT_LEVELS, n_per_level: int = 4, bins: int = 40,
                   active_only: bool = False, k: int = 5, two_afc: bool | None = None, q: float = 0.0,
                   readout: np.ndarray | Callable | None = None, output_names: Sequence[str] | None = None,
                   n_outputs: int = 5) -> UnitCard:
    """Compute the card of one unit (or direction): exemplars across its range, histogram, scores, effects.

    Args:
      acts: ``[n, units]`` responses of the units (neurons, or the codes of learned directions)
        to ``n`` inputs; finite, and the unit's response not constant (other units may be).
      items: ``[n, ...]`` the inputs (images ``[n, h, w, c]``, signals ``[n, d]``, labels ``[n]``),
        as the similarity sees them.
      unit: the column of ``acts`` to describe.
      similarity: a ``Similarity`` or a built-in's name (``"pixel"``, ``"mean_colour"``) for the
        II and 2AFC; None skips both scores.
      levels: quantile levels of the exemplar rows, in ``[0, 1]`` (default max, 75 %, median, 25 %, min).
      n_per_level: exemplars per level (the inputs whose activation is nearest the level's value).
      bins: histogram bins over the unit's range.
      active_only: take the levels and the histogram over the active inputs only (activation
        > 0): the useful range of a sparse unit (an SAE latent), whose lower quantiles are all zero.
      k: top exemplars of the Interpretability Index.
      two_afc: compute the 2AFC score (the paper's protocol: more than 800 inputs in range);
        None computes it when ``n * (1 - 2 q)`` exceeds that, False never.
      q: difficulty quantile of the 2AFC.
      readout: what the unit does downstream: an array ``[units, outputs]`` (e.g. the next
        layer's or the unembedding's weights: the row of ``unit`` is its direct effect on each
        output), or a function ``f(acts [b, units]) -> [b, outputs]`` (the rest of the network:
        the effect is the mean change of ``f`` over the unit's ``k`` top exemplars when the unit is
        zeroed). None: no effects.
      output_names: names of the readout's outputs (class names, tokens); None uses indices.
      n_outputs: outputs listed on each side (largest and smallest effects).

    Returns:
      ``UnitCard`` (numpy arrays and Python floats).

    Raises:
      ValueError / TypeError: naming the argument: ``acts`` not ``[n, units]`` floating and finite,
        a constant unit, ``items`` of another length, ``unit`` outside ``[0, units)``, a level
        outside ``[0, 1]``, a readout of the wrong shape, an unknown similarity name (KeyError).
    """
    check_rank(acts, "acts", 2)
    a = as_float_array(acts, "acts")
    check_finite(a, "acts")
    n, units = a.shape
    if n == 0:
        raise ValueError(f"`acts` must have at least one row (input); got shape {a.shape}.")
    unit = _check_unit(unit, units)   # other units may be dead: only this one must vary
    check_items_match(items, n, True)
    levels = tuple(check_in_range(p, "levels", 0.0, 1.0) for p in levels)
    n_per_level = check_positive_int(n_per_level, "n_per_level", maximum=n, maximum_name="inputs in `acts`")
    bins = check_positive_int(bins, "bins")
    n_outputs = check_positive_int(n_outputs, "n_outputs")
    q = check_in_range(q, "q", 0.0, 0.5)
    sim = None if similarity is None else as_similarity(similarity)
    col = a[:, unit : unit + 1]
    x = col[:, 0].astype(np.float64)
    rows = _range_rows(x, unit, bool(active_only), n_per_level)
    values = np.quantile(x[rows], levels)
    sub, resp = quantile_exemplars(col[rows], levels, n_per_level, targets=values[None].astype(np.float32))
    idx = rows[sub[0]].astype(np.int64)
    counts, edges = np.histogram(x[rows], bins=bins)
    ii, afc = _scores(col, items, sim, k=k, two_afc=two_afc, q=q)
    outputs = None
    if readout is not None:
        top = np.argsort(-col[:, 0], kind="stable")[: check_positive_int(k, "k", maximum=n)]
        outputs = _output_effects(readout, a, unit, top, output_names, n_outputs)
    return UnitCard(unit, n, np.asarray(levels), values, idx, resp[0], np.asarray(np.asarray(items)[idx]),
                    counts, edges, float(x.mean()), float(x.std()), float(np.mean(x > 0)), bool(active_only),
                    ii, afc, None if sim is None else sim.name, outputs)


def _draw_item(ax, item: np.ndarray, cmap: str) -> None:
    """Draw one input: an image (``[h, w]``, ``[h, w, 1 | 3 | 4]``), a signal ``[d]`` or a label."""
    a = np.asarray(item)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        ax.imshow(a, cmap=cmap)
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        lo, hi = float(a.min()), float(a.max())
        ax.imshow((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))
    elif a.ndim == 1:
        ax.plot(a, lw=0.8)
    else:
        ax.text(0.5, 0.5, str(a.item()) if a.ndim == 0 else f"shape {a.shape}", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_histogram(ax, card: UnitCard) -> None:
    edges = card.hist_edges
    ax.stairs(card.hist_counts, edges, fill=True, alpha=0.6)
    groups: dict[float, list[str]] = {}
    for level, value in zip(card.levels, card.level_values):
        groups.setdefault(float(value), []).append(f"{level:g}")
    for value, names in groups.items():   # levels with the same value (a sparse unit's zeros) share a line
        ax.axvline(value, color="C3", lw=0.8, ls=":")
        ax.annotate("/".join(names), (value, 1.0), xycoords=("data", "axes fraction"), fontsize=6, ha="center",
                    va="bottom", color="C3")
    ax.set_xlabel("activation", fontsize=7)
    ax.set_ylabel("inputs", fontsize=7)
    ax.tick_params(labelsize=6)


def _draw_outputs(ax, outputs: OutputEffects) -> None:
    labels = list(outputs.top_labels) + list(outputs.bottom_labels[::-1])
    effects = np.concatenate([outputs.top_effects, outputs.bottom_effects[::-1]])
    y = np.arange(len(effects))[::-1]
    ax.barh(y, effects, color=["C2" if e >= 0 else "C3" for e in effects])
    ax.set_yticks(y, labels, fontsize=6)
    ax.axvline(0.0, color="k", lw=0.5)
    ax.set_xlabel("weight" if outputs.kind == "weights" else "output change when ablated", fontsize=7)
    ax.tick_params(labelsize=6)


def _title(card: UnitCard) -> str:
    parts = [f"unit {card.unit}", f"mean {card.mean:.3g}", f"density {card.density:.2f}"]
    if card.ii is not None:
        parts.append(f"II {card.ii:.3g} ({card.similarity})")
    if card.two_afc is not None:
        parts.append(f"2AFC {card.two_afc:.2f}")
    return "  |  ".join(parts)


def unit_card_figure(card: UnitCard, *, show_item: Callable[[Any, np.ndarray], None] | None = None,
                     cmap: str = "gray_r", figsize: tuple[float, float] | None = None):
    """Draw a ``UnitCard``: the exemplar grid (one row per level), the histogram and the output effects.

    Args:
      card: from ``unit_card_data``.
      show_item: ``show_item(ax, item)`` draws one input (default: images with ``imshow``,
        signals as lines, labels as text).
      cmap: colormap of single-channel images.
      figsize: ``(width, height)`` in inches (default from the grid size).

    Returns:
      A ``matplotlib.figure.Figure`` (outside pyplot's registry; display it or save it).
    """
    if not isinstance(card, UnitCard):
        raise TypeError(f"`card` must be a UnitCard from unit_card_data(...); got {type(card).__name__}.")
    from jaxinterp.plotting import subplots

    n_levels, n = card.exemplar_indices.shape
    panel = max(2.0, 0.6 * n)
    fig, axes = subplots(n_levels, n + 1, squeeze=False, figsize=figsize or (1.1 * n + 2.2 * panel / n + 1.5,
                                                                             max(2.6, 1.0 * n_levels + 0.6)),
                         gridspec_kw=dict(width_ratios=[1.0] * n + [panel]))
    fig.set_layout_engine("constrained")
    draw = show_item or (lambda ax, item: _draw_item(ax, item, cmap))
    for r in range(n_levels):
        for c in range(n):
            ax = axes[r, c]
            draw(ax, card.exemplar_items[r, c])
            ax.set_title(f"{card.exemplar_values[r, c]:.3g}", fontsize=6, pad=2)
        axes[r, 0].set_ylabel(f"q {card.levels[r]:g}", fontsize=7)
    grid = axes[0, -1].get_gridspec()
    for ax in axes[:, -1]:
        ax.remove()
    right = grid[:, -1].subgridspec(2 if card.outputs is not None else 1, 1, hspace=0.6)
    _draw_histogram(fig.add_subplot(right[0]), card)
    if card.outputs is not None:
        _draw_outputs(fig.add_subplot(right[1]), card.outputs)
    fig.suptitle(_title(card), fontsize=8)
    return fig


def unit_card(acts, items, unit: int, *, show_item: Callable | None = None, cmap: str = "gray_r",
              figsize: tuple[float, float] | None = None, **options: Any):
    """One call: ``unit_card_figure(unit_card_data(acts, items, unit, **options))``.

    Args:
      acts, items, unit, options: as in ``unit_card_data`` (``similarity``, ``levels``,
        ``n_per_level``, ``readout``, ...).
      show_item, cmap, figsize: as in ``unit_card_figure``.

    Returns:
      The card's ``matplotlib.figure.Figure``.
    """
    return unit_card_figure(unit_card_data(acts, items, unit, **options), show_item=show_item, cmap=cmap,
                            figsize=figsize)
