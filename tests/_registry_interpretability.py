"""Bad-input battery registrations: exemplars, similarities, the interpretability index and 2AFC.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason. Similarity constructors
are registered through ``embed_items`` of the similarity they build, so their ``embed`` sees
the bad items.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from _battery import Entry
from _battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {
    "jaxinterp.interpretability.max_score": "takes no arguments (a closed-form constant, sigmoid(4))",
    "jaxinterp.unit_card_figure": "draws a UnitCard that unit_card_data validated; anything else is a TypeError "
                                  "(tests/test_cards.py)",
}

_W = np.asarray(np.random.default_rng(1).normal(size=(6, 4)), np.float32)
READOUT = np.asarray(np.random.default_rng(2).normal(size=(4, 3)), np.float32)   # unit -> output weights
SIDX = np.arange(0, 1000, 97)                                          # items to embed [11]
IMAGES = RNG.normal(size=(16, 3, 3, 2)).astype(np.float32)            # channels-last images [n, h, w, c]
EMB = RNG.normal(size=(4, 5, 3)).astype(np.float32)                   # exemplar embeddings [units, k, e]
QEMB = RNG.normal(size=(4, 2, 3, 5)).astype(np.float32)               # 2AFC queries [units, 2, trials, e]
REMB = RNG.normal(size=(4, 2, 3, 2, 5)).astype(np.float32)            # 2AFC refs [units, 2, trials, refs, e]
ITEM_LABELS = np.arange(1000) % 3                                     # integer items [n]
ITEMS_MODEL = "the similarity's embedding (a user network) decides which item ranks it accepts"


def _f32(x):
    """``x`` cast to float32 explicitly (the test models are float32; half-precision items are cast)."""
    return jnp.asarray(x).astype(jnp.float32)


def response_fn(batch):
    """A fixed response function (module level: the streamed selection's jit cache is reused)."""
    return _f32(batch) @ _W


@functools.lru_cache(maxsize=1)
def _flax_similarity():
    import flax.linen as nn

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(5)(_f32(x))))

    model = Tiny()
    params = model.init(jax.random.key(0), ITEMS[:1])
    return model, params


def _features(x):
    return [jax.nn.relu(_f32(x) @ _W)]


def _figure_axes(fig) -> int:
    """The number of axes of a figure (what the battery compares), the figure released."""
    from jaxinterp.plotting import close_figure

    n = len(fig.axes)
    close_figure(fig)
    return n


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import interpretability as interp

    model, params = _flax_similarity()
    stim = interp.two_afc_stimuli(ACTS)
    pix = interp.pixel_l2()
    return [
        Entry("jaxinterp.unit_card_data",
              lambda acts, items, unit, n_per_level, bins, readout: interp.unit_card_data(
                  acts, items, unit, similarity="pixel", n_per_level=n_per_level, bins=bins, readout=readout,
                  two_afc=False),
              dict(acts=ACTS, items=ITEMS, unit=1, n_per_level=2, bins=10, readout=READOUT),
              pairs=(("acts", "items"),),
              accept={"unit.zero": "unit 0 is the first column of `acts`",
                      "readout.none": "no readout: a card without output effects (documented)",
                      "acts.float16": "float16 responses are ranked after rounding: ties reorder the exemplars"}),
        Entry("jaxinterp.unit_card",
              lambda acts, unit: _figure_axes(interp.unit_card(acts, ITEMS, unit, similarity=None, n_per_level=1)),
              dict(acts=ACTS, unit=1), accept={"unit.zero": "unit 0 is the first column of `acts`"}),
        Entry("jaxinterp.interpretability_index",
              lambda acts, items, k: interp.interpretability_index(acts, items, pix, k=k).scores,
              dict(acts=ACTS, items=ITEMS, k=5), pairs=(("acts", "items"),)),
        Entry("jaxinterp.psychophysics",
              lambda acts, items, q: interp.psychophysics(acts, items, pix, q=q).scores,
              dict(acts=ACTS, items=ITEMS, q=0.0), pairs=(("acts", "items"),),
              accept={"q.zero": "q=0 is the easiest task (the extremes), not a count"}),
        Entry("jaxinterp.interpretability.two_afc_stimuli",
              lambda acts, q: interp.two_afc_stimuli(acts, q).queries.astype(np.float64),
              dict(acts=ACTS, q=0.0),
              accept={"acts.float16": "float16 responses are ranked after rounding: its ties reorder exemplars",
                      "q.zero": "q=0 is the easiest task (the extremes), not a count"}),
        Entry("jaxinterp.interpretability.two_afc_of_stimuli",
              lambda items, memory_budget_bytes: interp.two_afc_of_stimuli(
                  stim, items, pix, memory_budget_bytes=memory_budget_bytes).scores,
              dict(items=ITEMS, memory_budget_bytes=1 << 20)),
        Entry("jaxinterp.interpretability.two_afc_from_embeddings",
              lambda query_embeddings, reference_embeddings: interp.two_afc_from_embeddings(
                  query_embeddings, reference_embeddings, pix),
              dict(query_embeddings=QEMB, reference_embeddings=REMB),
              pairs=(("query_embeddings", "reference_embeddings"),)),
        Entry("jaxinterp.interpretability.index_from_embeddings",
              lambda embeddings, unit_batch: interp.index_from_embeddings(embeddings, pix, unit_batch=unit_batch),
              dict(embeddings=EMB, unit_batch=2)),
        Entry("jaxinterp.interpretability.index_of_exemplars",
              lambda top_indices, items: interp.index_of_exemplars(top_indices, items, pix).scores,
              dict(top_indices=np.arange(20).reshape(4, 5), items=ITEMS), kinds={"top_indices": "labels"},
              accept={"top_indices.rank_up": "checked as rank 2 [units, k]: the variant is refused",
                      "top_indices.fraction": "refused: indices must be integers"}),
        Entry("jaxinterp.interpretability.top_bottom_exemplars",
              lambda acts, k: interp.top_bottom_exemplars(acts, k).top_values, dict(acts=ACTS, k=3)),
        Entry("jaxinterp.interpretability.quantile_exemplars",
              lambda acts, n: interp.quantile_exemplars(acts, (0.1, 0.5, 0.9), n)[1], dict(acts=ACTS, n=2)),
        Entry("jaxinterp.interpretability.varying_units",
              lambda acts, tol: interp.varying_units(acts, tol=tol).astype(np.float64), dict(acts=ACTS, tol=0.0),
              accept={"acts.float16": "indices of varying units (the same under float16 rounding here)"}),
        Entry("jaxinterp.interpretability.query_orders",
              lambda n_trials, seed, draw: np.stack(interp.query_orders(n_trials, seed, draw)).astype(np.float64),
              dict(n_trials=20, seed=42, draw=1),
              accept={"seed.zero": "0 is a valid seed", "draw.zero": "draw 0 is the first pair (q = 0)"}),
        Entry("jaxinterp.interpretability.stream_exemplars",
              lambda data, k: interp.stream_exemplars(response_fn, data, k, batch_size=32).top_values,
              dict(data=ITEMS[:64], k=3), aliases={"data": ("response_fn(data)", "activations")}),
        Entry("jaxinterp.interpretability.stream_two_afc_stimuli",
              lambda data: interp.stream_two_afc_stimuli(response_fn, data, batch_size=500).queries.astype(float),
              dict(data=ITEMS), aliases={"data": ("response_fn(data)", "activations")}),
        Entry("jaxinterp.interpretability.stream_quantile_exemplars",
              lambda data, n: interp.stream_quantile_exemplars(response_fn, data, (0.1, 0.9), n, batch_size=32)[1],
              dict(data=ITEMS[:64], n=2), aliases={"data": ("response_fn(data)", "activations")}),
        Entry("jaxinterp.interpretability.embed_items",
              lambda items, indices, batch_size: interp.embed_items(pix, items, indices, batch_size=batch_size),
              dict(items=ITEMS, indices=SIDX, batch_size=4), kinds={"indices": "labels"},
              accept={"indices.rank_up": "indices of any shape [*s] give embeddings [*s, e] (documented)"}),
        Entry("jaxinterp.interpretability.pixel_l2",
              lambda items: interp.embed_items(interp.pixel_l2(), items, SIDX), dict(items=ITEMS),
              accept={"items.rank_up": "pixel L2 flattens every item, whatever its rank"}),
        Entry("jaxinterp.interpretability.mean_colour_l2",
              lambda items: interp.embed_items(interp.mean_colour_l2(), items, np.arange(4)), dict(items=IMAGES),
              accept={"items.rank_up": "the mean over every axis between the first and the channels"}),
        Entry("jaxinterp.interpretability.label_agreement",
              lambda items, n_classes: interp.embed_items(interp.label_agreement(n_classes), items, SIDX),
              dict(items=ITEM_LABELS, n_classes=3), kinds={"items": "labels"}),
        Entry("jaxinterp.interpretability.precomputed",
              lambda items: interp.embed_items(interp.precomputed(pix), items, SIDX), dict(items=ITEMS),
              accept={"items.rank_up": "embeddings are flattened per item (as pixel L2)"}),
        Entry("jaxinterp.interpretability.deep_feature",
              lambda items: interp.embed_items(interp.deep_feature(_features), items, SIDX), dict(items=ITEMS),
              accept={"items.rank_up": ITEMS_MODEL, "items.huge": "channel-normalised features are scale-free"}),
        Entry("jaxinterp.interpretability.network_features",
              lambda items: interp.embed_items(interp.deep_feature(interp.network_features(
                  lambda x: jnp.maximum(_f32(x) @ _W, 0.0) @ _W.T)), items, SIDX), dict(items=ITEMS),
              accept={"items.rank_up": ITEMS_MODEL, "items.huge": "channel-normalised features are scale-free"}),
        Entry("jaxinterp.interpretability.flax_deep_feature",
              lambda items: interp.embed_items(interp.flax_deep_feature(model, params), items, SIDX),
              dict(items=ITEMS),
              accept={"items.rank_up": ITEMS_MODEL, "items.huge": "channel-normalised features are scale-free"}),
    ]
