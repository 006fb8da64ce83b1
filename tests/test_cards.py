"""Unit cards (``unit_card_data`` / ``unit_card_figure`` / ``unit_card``) and similarities by name."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import jaxinterp
from jaxinterp import interpretability as interp
from jaxinterp.interpretability import cards
from jaxinterp.interpretability.similarity import NAMED, as_similarity

RNG = np.random.default_rng(3)
IMAGES = RNG.normal(size=(300, 6, 6, 1)).astype(np.float32)
# ReLU units: half of their inputs at zero, like real post-activations
ACTS = np.maximum(IMAGES.reshape(300, -1)[:, :5] + 0.5 * IMAGES.mean((1, 2, 3))[:, None], 0.0).astype(np.float32)
W = RNG.normal(size=(5, 7)).astype(np.float32)
LEVELS = (1.0, 0.9, 0.6, 0.3, 0.0)


def _card(**kw):
    return cards.unit_card_data(ACTS, IMAGES, 2, levels=LEVELS, n_per_level=3, bins=12, **kw)


def test_exemplars_cover_the_whole_range_nearest_to_each_quantile():
    card = _card(similarity=None)
    col = ACTS[:, 2].astype(np.float64)
    np.testing.assert_allclose(card.level_values, np.quantile(col, LEVELS), rtol=1e-12)
    for r, target in enumerate(card.level_values):
        nearest = np.sort(np.abs(col - target))[:3]          # brute force: the 3 smallest distances
        np.testing.assert_allclose(np.abs(card.exemplar_values[r] - target), nearest, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(card.exemplar_values, ACTS[card.exemplar_indices, 2])
    np.testing.assert_array_equal(card.exemplar_items, IMAGES[card.exemplar_indices])
    assert card.exemplar_items.shape == (5, 3, 6, 6, 1)
    counts, edges = np.histogram(col, bins=12)
    np.testing.assert_array_equal(card.hist_counts, counts)
    np.testing.assert_allclose(card.hist_edges, edges)
    assert card.mean == pytest.approx(col.mean()) and card.std == pytest.approx(col.std())
    assert card.density == pytest.approx(np.mean(col > 0))
    assert card.ii is None and card.two_afc is None and card.outputs is None


def test_active_only_takes_the_range_of_the_active_inputs():
    card = _card(similarity=None, active_only=True)
    active = ACTS[:, 2][ACTS[:, 2] > 0].astype(np.float64)
    np.testing.assert_allclose(card.level_values, np.quantile(active, LEVELS), rtol=1e-12)
    assert card.hist_counts.sum() == active.size and card.hist_edges[0] == pytest.approx(active.min())
    assert np.all(card.exemplar_values > 0)
    with pytest.raises(ValueError, match="`acts`: the unit has no activation > 0"):
        cards.unit_card_data(-np.abs(ACTS) - 1.0, IMAGES, 0, similarity=None, active_only=True)


def test_ii_equals_the_mean_pairwise_distance_of_the_top_exemplars():
    card = _card(similarity="pixel")
    top = np.argsort(-ACTS[:, 2])[:5]
    flat = IMAGES[top].reshape(5, -1).astype(np.float64)
    assert card.ii == pytest.approx(-cdist(flat, flat).mean(), rel=1e-5)        # k x k pairs, self pairs included
    assert card.similarity == "pixel_l2" and card.two_afc is None                  # 300 inputs: too few for 2AFC


def test_two_afc_is_the_units_psychophysics_score():
    x = RNG.normal(size=(900, 3)).astype(np.float32)
    acts = x @ RNG.normal(size=(3, 2)).astype(np.float32)
    card = cards.unit_card_data(acts, x, 1, similarity="pixel", n_per_level=1, bins=5)
    expected = interp.psychophysics(acts[:, 1:], x, interp.pixel_l2()).scores[0]
    assert card.two_afc == pytest.approx(float(expected), rel=1e-6)
    assert cards.unit_card_data(acts, x, 1, similarity="pixel", two_afc=False, n_per_level=1).two_afc is None
    with pytest.raises(ValueError, match="`two_afc=True` needs a `similarity`"):
        cards.unit_card_data(acts, x, 1, similarity=None, two_afc=True)


def test_weight_readout_lists_the_units_row():
    names = [f"class {i}" for i in range(7)]
    out = _card(similarity=None, readout=W, output_names=names, n_outputs=3).outputs
    order = np.argsort(-W[2])
    assert out.kind == "weights"
    np.testing.assert_array_equal(out.top_indices, order[:3])
    np.testing.assert_array_equal(out.bottom_indices, order[::-1][:3])
    np.testing.assert_allclose(out.top_effects, W[2, order[:3]])
    assert out.top_labels == tuple(names[i] for i in order[:3])


def test_ablation_readout_equals_the_closed_form_for_a_linear_head():
    # f(a) = a @ W: zeroing unit u changes the outputs by a_u * W[u]; mean over the top-k inputs
    out = _card(similarity=None, readout=lambda a: a @ W, k=4, n_outputs=7).outputs
    top = np.argsort(-ACTS[:, 2])[:4]
    expected = ACTS[top, 2].mean() * W[2].astype(np.float64)
    assert out.kind == "ablation" and out.top_labels[0] == str(np.argmax(expected))
    np.testing.assert_allclose(out.top_effects, np.sort(expected)[::-1], rtol=1e-5)


def test_dead_units_elsewhere_do_not_matter_but_a_dead_unit_has_no_card():
    acts = ACTS.copy()
    acts[:, 0] = 0.0
    card = cards.unit_card_data(acts, IMAGES, 2, similarity="pixel", levels=LEVELS, n_per_level=3, bins=12)
    np.testing.assert_array_equal(card.exemplar_indices, _card(similarity=None).exemplar_indices)
    with pytest.raises(ValueError, match="`acts`: unit 0 has a constant response"):
        cards.unit_card_data(acts, IMAGES, 0, similarity=None)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="`unit` must lie in \\[0, 5\\)"):
        cards.unit_card_data(ACTS, IMAGES, 5, similarity=None)
    with pytest.raises(TypeError, match="`unit` must be an int"):
        cards.unit_card_data(ACTS, IMAGES, True, similarity=None)
    with pytest.raises(ValueError, match="`readout` must have shape \\(5, outputs\\)"):
        cards.unit_card_data(ACTS, IMAGES, 0, similarity=None, readout=W[:4])
    with pytest.raises(ValueError, match="`output_names` must name the 7 outputs"):
        cards.unit_card_data(ACTS, IMAGES, 0, similarity=None, readout=W, output_names=["a"])
    with pytest.raises(ValueError, match="`items` must have one row per row of `acts`"):
        cards.unit_card_data(ACTS, IMAGES[:-1], 0, similarity=None)
    with pytest.raises(ValueError, match="`levels`"):
        cards.unit_card_data(ACTS, IMAGES, 0, similarity=None, levels=(1.5,))
    with pytest.raises(KeyError, match="unknown similarity 'lpips'.*pixel"):
        cards.unit_card_data(ACTS, IMAGES, 0, similarity="lpips")
    with pytest.raises(TypeError, match="`card` must be a UnitCard"):
        cards.unit_card_figure(ACTS)


def test_figure_has_the_grid_the_histogram_and_the_effects():
    fig = cards.unit_card(ACTS, IMAGES, 2, similarity="pixel", levels=LEVELS, n_per_level=3, readout=W)
    assert len(fig.axes) == 5 * 3 + 2                       # exemplar grid + histogram + output effects
    assert "unit 2" in fig._suptitle.get_text() and "II" in fig._suptitle.get_text()
    assert fig.axes[0].get_title() == f"{ACTS[:, 2].max():.3g}"
    signals = cards.unit_card(ACTS, IMAGES.reshape(300, -1), 2, similarity=None, levels=(1.0, 0.0), n_per_level=2)
    assert len(signals.axes) == 2 * 2 + 1 and signals.axes[0].lines   # 1-D items drawn as lines


def test_card_repr_is_short_and_displays():
    card = _card(similarity="pixel", readout=W)
    text = repr(card)
    assert len(text) < 300 and "exemplars=i64[5,3]" in text and "items=f32[5,3,6,6,1]" in text
    assert f"ii={card.ii:.3g} (pixel_l2)" in text and "outputs=weights" in text
    page = card._repr_html_()
    assert "<img src='data:image/png;base64," in page and "UnitCard" in page


def test_exported_at_the_top_level():
    assert jaxinterp.unit_card is cards.unit_card and jaxinterp.UnitCard is cards.UnitCard
    assert jaxinterp.unit_card_data is interp.unit_card_data and "unit_card_figure" in jaxinterp.__all__


def test_similarities_by_name_and_alias():
    x = RNG.normal(size=(40, 2, 2, 3)).astype(np.float32)
    acts = RNG.normal(size=(40, 3)).astype(np.float32)
    for name in NAMED:
        ref = NAMED[name]()
        assert as_similarity(name).name == ref.name
        np.testing.assert_array_equal(interp.interpretability_index(acts, x, name).scores,
                                      interp.interpretability_index(acts, x, ref).scores)
    assert as_similarity("pixel").name == "pixel_l2" and as_similarity("mean_color").name == "mean_colour_l2"
    np.testing.assert_array_equal(interp.embed_items("pixel", x, np.arange(3)), x[:3].reshape(3, -1))
    assert interp.precomputed("mean_colour").name == "mean_colour_l2"
    with pytest.raises(KeyError, match="`similarity`: unknown similarity 'pixels'; known by name: .*mean_colour_l2.*pixel"
                       ):
        as_similarity("pixels")
    with pytest.raises(TypeError, match="`similarity` must be a Similarity or one of"):
        as_similarity(3)
