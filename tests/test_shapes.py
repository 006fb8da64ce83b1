"""Procedural shapes: determinism, exact bias fractions, group balance, rendering geometry."""

import numpy as np
import scipy.stats
import pytest
from scipy.stats import chi2_contingency

from jaxinterp import datasets
from jaxinterp.datasets import shapes


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_deterministic_in_seed():
    _assert_same(shapes.make_shapes(60, bias_fraction=0.4, seed=3), shapes.make_shapes(60, bias_fraction=0.4, seed=3))
    a, b = shapes.make_shapes(60, bias_fraction=0.4, seed=3), shapes.make_shapes(60, bias_fraction=0.4, seed=4)
    assert not np.array_equal(a.x, b.x)
    _assert_same(shapes.load_shapes_groups(1, n_train=90, n_val=18, n_test=18).train,
                 shapes.load_shapes_groups(1, n_train=90, n_val=18, n_test=18).train)


@pytest.mark.parametrize("n", [100, 101, 257])
@pytest.mark.parametrize("f", [0.0, 0.1, 0.37, 0.5, 1.0])
def test_bias_fraction_is_exact(n, f):
    d = shapes.make_shapes(n, bias_fraction=f, seed=0, size=12)
    assert int(d.biased.sum()) == round(f * n)
    assert np.all(d.band[d.biased] == d.y[d.biased])  # biased samples lie in their shape's band
    np.testing.assert_array_equal(shapes.band_of(d.x_pos), d.band)  # positions lie inside the bands
    np.testing.assert_array_equal(d.group, d.y * 3 + d.band)
    assert np.bincount(d.y, minlength=3).max() - np.bincount(d.y, minlength=3).min() <= 1
    assert d.x.shape == (n, 12, 12, 1) and d.x.dtype == np.float32
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0


def test_unbiased_part_has_band_independent_of_shape():
    d = shapes.make_shapes(3000, bias_fraction=0.0, seed=1, size=8)
    table = np.zeros((3, 3))
    np.add.at(table, (d.y, d.band), 1)
    assert chi2_contingency(table).pvalue > 1e-3
    biased = shapes.make_shapes(3000, bias_fraction=1.0, seed=1, size=8)
    assert np.all(biased.band == biased.y)


def test_bias_sweep_sets_are_exact_and_nested():
    sets = shapes.bias_sweep([0.0, 0.3, 1.0], n=200, seed=2, size=10)
    assert [int(s.biased.sum()) for s in sets] == [0, 60, 200]
    assert np.all(sets[1].band[sets[1].biased] == sets[1].y[sets[1].biased])
    # the f=0.3 set reuses images of the f=0 and f=1 sets
    pool = {a.tobytes() for a in np.concatenate([sets[0].x, sets[2].x])}
    assert all(a.tobytes() in pool for a in sets[1].x)
    _assert_same(sets[1], shapes.bias_sweep([0.3], n=200, seed=2, size=10)[0])


def test_group_sets_aligned_fraction_and_balance():
    g = shapes.make_shape_groups(400, aligned_fraction=0.95, seed=0, size=10)
    assert int(g.biased.sum()) == 380 and np.all(g.biased == (g.band == g.y))
    assert set(np.unique(g.group[~g.biased])) <= {1, 2, 3, 5, 6, 7}
    b = shapes.make_shape_groups(95, balanced=True, seed=0, size=10)
    counts = np.bincount(b.group, minlength=9)
    assert counts.max() - counts.min() <= 1
    bench = datasets.load_shapes_groups(0, n_train=200, n_val=90, n_test=180, size=10)
    np.testing.assert_array_equal(np.bincount(bench.test.group, minlength=9), 20)
    np.testing.assert_array_equal(np.bincount(bench.val.group, minlength=9), 10)
    assert bench.n_groups == 9 and bench.n_classes == 3


def test_rendered_areas_match_closed_forms():
    n, size = 3, 64
    img = shapes.render_shapes(np.array([0, 1, 2]), np.full(n, 0.5), np.full(n, 0.5), np.ones(n), np.zeros(n),
                               size=size, supersample=4)
    r = 0.17 * size
    area = img.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(area[0], (1.6 * r) ** 2, rtol=0.03)  # square of half-side 0.8 r
    np.testing.assert_allclose(area[1], np.pi * r * 0.55 * r, rtol=0.03)  # ellipse, semi-axes r, 0.55 r
    assert 0.5 * area[1] < area[2] < 1.5 * area[0]
    # rotating a square by 90 degrees changes nothing; the ellipse becomes its transpose
    rot = shapes.render_shapes(np.array([0, 1]), np.full(2, 0.5), np.full(2, 0.5), np.ones(2),
                               np.full(2, np.pi / 2), size=size, supersample=4)
    np.testing.assert_allclose(rot[0], img[0], atol=1e-6)
    np.testing.assert_allclose(rot[1, ..., 0], img[1, ..., 0].T, atol=1e-6)


def test_x_position_moves_the_centroid_linearly():
    xs = np.linspace(0, 1, 5)
    size = 40
    img = shapes.render_shapes(np.zeros(5, int), xs, np.full(5, 0.5), np.ones(5), np.zeros(5), size=size)[..., 0]
    cols = np.arange(size) + 0.5
    centroid = (img.sum(1) * cols).sum(1) / img.sum((1, 2))
    margin = 1.25 * 0.17 * size
    np.testing.assert_allclose(centroid, margin + xs * (size - 2 * margin), atol=0.05)


def test_bad_input():
    with pytest.raises(ValueError, match="bias_fraction"):
        shapes.make_shapes(10, bias_fraction=1.5)
    with pytest.raises(ValueError, match="n"):
        shapes.make_shapes(0, bias_fraction=0.5)
    with pytest.raises(ValueError, match="shape"):
        shapes.render_shapes(np.array([3]), [0.5], [0.5], [1.0], [0.0])
    with pytest.raises(ValueError, match="same length"):
        shapes.render_shapes(np.array([0, 1]), [0.5], [0.5], [1.0], [0.0])
    with pytest.raises(ValueError, match="size"):
        shapes.make_shapes(10, bias_fraction=0.5, size=4)
    with pytest.raises(ValueError, match="aligned_fraction"):
        shapes.make_shape_groups(10, aligned_fraction=-0.1)


@pytest.mark.parametrize("f", [0.0, 0.1, 0.3, 0.5, 0.6, 0.9, 1.0])
def test_authors_size_schedule(f):
    n = 120
    k, u = shapes.sweep_sizes([f], n, "authors")[0]
    assert k + u == pytest.approx(n / max(f, 1 - f), abs=1)  # n = N / max(f, 1 - f)
    assert max(k, u) == n and (k == 0 or u == 0 or abs(k / (k + u) - f) < 1 / n)
    d = shapes.bias_sweep([f], n=n, seed=3, size=10, schedule="authors")[0]
    assert len(d.y) == k + u and int(d.biased.sum()) == k
    if f <= 0.5:  # the unbiased part is fixed: the f=0 set is inside every set up to f=0.5
        base = {a.tobytes() for a in shapes.bias_sweep([0.0], n=n, seed=3, size=10, schedule="authors")[0].x}
        assert base <= {a.tobytes() for a in d.x}
    with pytest.raises(ValueError, match="schedule"):
        shapes.sweep_sizes([f], n, "paper")


def test_authors_control_part_shares_images_with_the_biased_part():
    """As in the authors' split, the unbiased part is drawn from the pool the biased part was
    filtered from: at f=0.5 (both parts whole) about a third of the unbiased images repeat biased
    ones (hypergeometric: n * n / 3n, sd about 5 at n=300); the unbiased part's bands stay
    uniform and independent of the shape; the fixed schedule's parts are disjoint."""
    n = 300
    d = shapes.bias_sweep([0.5], n=n, seed=4, size=10, schedule="authors")[0]
    biased = {a.tobytes() for a in d.x[d.biased]}
    control = d.subset(~d.biased)
    repeats = sum(a.tobytes() in biased for a in control.x)
    assert len(biased) == n and len(control.y) == n
    assert 70 <= repeats <= 130
    table = np.zeros((3, 3))
    np.add.at(table, (control.y, control.band), 1)
    assert scipy.stats.chi2_contingency(table).pvalue > 1e-3  # band independent of shape
    assert scipy.stats.chisquare(table.sum(0)).pvalue > 1e-3  # bands uniform
    fixed = shapes.bias_sweep([0.5], n=n, seed=4, size=10)[0]
    assert not {a.tobytes() for a in fixed.x[fixed.biased]} & {a.tobytes() for a in fixed.x[~fixed.biased]}


def test_dsprites_latents_lie_on_the_dsprites_grid():
    data = shapes.make_shapes(600, bias_fraction=0.5, seed=2, size=16, latents="dsprites")

    def on_grid(values, grid):
        return np.all(np.min(np.abs(values[:, None] - grid[None, :].astype(np.float32)), axis=1) < 1e-6)

    assert on_grid(data.x_pos, shapes.DSPRITES_POSITIONS) and on_grid(data.y_pos, shapes.DSPRITES_POSITIONS)
    assert on_grid(data.scale, shapes.DSPRITES_SCALES) and on_grid(data.rotation, shapes.DSPRITES_ORIENTATIONS)
    assert set(np.unique(data.x)) == {0.0, 1.0}  # binary, as dSprites' images are
    # every orientation, scale and y position occurs (40, 6 and 32 values among 600 draws)
    assert len(np.unique(data.rotation)) == 40 and len(np.unique(data.scale)) == 6
    assert len(np.unique(data.y_pos)) == 32


def test_dsprites_bands_are_the_authors_half_open_intervals():
    data = shapes.make_shapes(900, bias_fraction=1.0, seed=5, size=16, latents="dsprites")
    np.testing.assert_array_equal(data.band, data.y)  # every sample biased: band = shape
    for b, (lo, hi) in enumerate(shapes.BANDS):
        x = data.x_pos[data.band == b]
        assert x.min() >= lo and x.max() < hi
    grid = shapes.DSPRITES_POSITIONS
    expected = [np.sum((grid >= lo) & (grid < hi)) for lo, hi in shapes.BANDS]
    assert expected == [10, 10, 9]
    assert [len(np.unique(data.x_pos[data.band == b])) for b in range(3)] == expected
    np.testing.assert_array_equal(shapes.band_of(data.x_pos), data.band)


def test_dsprites_latents_are_deterministic_and_differ_from_continuous():
    a = shapes.bias_sweep([0.0, 0.5], n=30, seed=1, size=16, latents="dsprites")
    b = shapes.bias_sweep([0.0, 0.5], n=30, seed=1, size=16, latents="dsprites")
    for x, y in zip(a, b):
        _assert_same(x, y)
    c = shapes.bias_sweep([0.0, 0.5], n=30, seed=1, size=16)
    assert not np.array_equal(a[0].rotation, c[0].rotation)
    assert np.abs(c[0].rotation).max() <= shapes.DEFAULT_MAX_ROTATION


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(latents="dsprites", max_rotation=1.0), ValueError, "`max_rotation` must be None"),
    (dict(latents="grid"), ValueError, "`latents` must be one of"),
])
def test_latents_refuse_bad_combinations(kwargs, error, match):
    with pytest.raises(error, match=match):
        shapes.make_shapes(9, bias_fraction=0.5, **kwargs)
    with pytest.raises(error, match=match):
        shapes.load_shapes_groups(0, n_train=9, n_val=9, n_test=9, **kwargs)
