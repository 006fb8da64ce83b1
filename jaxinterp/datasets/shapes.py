"""Procedural dSprites-like images (square, ellipse, heart) with a spurious x-position cue.

The target is the shape. The spurious attribute is the x-position band of the shape:
band 0 = x in [0, 0.3), band 1 = [0.35, 0.65), band 2 = [0.7, 1.0] (x normalised to the range
the shape centre can take). A sample is *aligned* when its band equals its shape index.

Two samplers:
- ``make_shapes(n, bias_fraction=f)``: exactly ``round(f * n)`` samples are biased (drawn in
  the band of their own shape); the others are unbiased (band uniform, independent of shape).
  ``load_shapes_bias`` pairs such a training set with an unbiased test set.
- ``make_shape_groups(n, aligned_fraction=a)``: exactly ``round(a * n)`` samples are aligned,
  the rest lie in one of the two other bands; or, with ``balanced=True``, the 9 groups
  (shape x band) have equal sizes. ``load_shapes_groups`` builds the group benchmark
  (e.g. 95 % aligned training set, group-balanced held-out and test sets).

Nuisances, chosen by ``latents``:
- ``"continuous"`` (default): x uniform within the band, y position uniform, scale uniform in
  [0.6, 1], rotation uniform in ``[-max_rotation, max_rotation]`` (default 30 degrees: at 20 x
  20 pixels fully rotated hearts and squares are hard to tell apart for a small CNN).
- ``"dsprites"``: dSprites' latent grid (Matthey et al. 2017): 32 positions per axis in [0, 1], 6
  scales in [0.5, 1], 40 orientations over the full circle (``linspace(0, 2 pi, 40)``), each
  uniform. The x position is uniform over the grid values inside the band, with the bands as
  half-open intervals ``[lo, hi)`` (O'Mahony et al.'s ``shape_posX_spaced`` filter: 10, 10 and
  9 positions); unlike a uniform dSprites draw, the three grid positions between or beyond the
  bands (0.32, 0.68 and 1.0) never occur, so every image has a band. Images are binary, as
  dSprites' are (each pixel 1 where its centre lies inside the shape, else 0); the continuous
  latents' images are anti-aliased (2 x 2 sub-pixels a pixel).
Everything is numpy, deterministic in ``seed``, images float32 ``[n, size, size, 1]`` in [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxinterp._validation import (
    check_finite, check_integer_labels, check_positive_int, check_rank, check_real, check_same_leading, check_seed,
)

SHAPE_NAMES = ("square", "ellipse", "heart")
BANDS = ((0.0, 0.3), (0.35, 0.65), (0.7, 1.0))
N_SHAPES = len(SHAPE_NAMES)
N_BANDS = len(BANDS)
N_GROUPS = N_SHAPES * N_BANDS

# Radius of the largest shape, as a fraction of the image size, and the extent of the shapes in
# units of their radius (the heart reaches 1.25 r after rotation); together they set the margin
# that keeps every shape inside the image.
_MAX_RADIUS = 0.17
DEFAULT_SIZE = 20
DEFAULT_MAX_ROTATION = np.pi / 6
_EXTENT = 1.25
LATENTS = ("continuous", "dsprites")
#: dSprites' latent values: positions per axis, scales, orientations.
DSPRITES_POSITIONS = np.linspace(0.0, 1.0, 32)
DSPRITES_SCALES = np.linspace(0.5, 1.0, 6)
DSPRITES_ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)


class _Latents(NamedTuple):
    """The nuisance distribution: ``kind`` in ``LATENTS``; ``max_rotation`` for ``"continuous"``."""

    kind: str
    max_rotation: float


class ShapesData(NamedTuple):
    """Images of shapes and their generating attributes (all numpy, length ``n``).

    Attributes:
      x: float32 ``[n, size, size, 1]`` images in [0, 1], channels last.
      y: int32 ``[n]`` shape label (0 square, 1 ellipse, 2 heart): the target.
      band: int32 ``[n]`` x-position band (0 left, 1 centre, 2 right): the spurious attribute.
      group: int32 ``[n]`` group id ``y * 3 + band``.
      biased: bool ``[n]`` whether the sample was drawn by the bias rule (band forced to equal
        the shape); for group data, whether the sample is aligned (``band == y``).
      x_pos: float32 ``[n]`` normalised x position of the centre in [0, 1].
      y_pos: float32 ``[n]`` normalised y position in [0, 1].
      scale: float32 ``[n]`` shape scale (fraction of the largest size).
      rotation: float32 ``[n]`` rotation angle in radians.
    """

    x: np.ndarray
    y: np.ndarray
    band: np.ndarray
    group: np.ndarray
    biased: np.ndarray
    x_pos: np.ndarray
    y_pos: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray

    def subset(self, index) -> "ShapesData":
        """The samples at ``index`` (an index array or boolean mask)."""
        return ShapesData(*(np.asarray(a)[index] for a in self))


class GroupBenchmark(NamedTuple):
    """A spurious-correlation benchmark: training, held-out and test sets with group labels.

    ``n_groups = 9`` groups ``shape * 3 + band``; a group is aligned when ``band == shape``.
    """

    train: ShapesData
    val: ShapesData
    test: ShapesData
    n_classes: int = N_SHAPES
    n_groups: int = N_GROUPS


def band_of(x_pos: np.ndarray) -> np.ndarray:
    """Band index ``[n]`` (0, 1, 2) of normalised x positions, -1 inside the gaps between bands."""
    x_pos = np.asarray(x_pos)
    band = np.full(x_pos.shape, -1, np.int32)
    for b, (lo, hi) in enumerate(BANDS):
        inside = (x_pos >= lo) & ((x_pos < hi) if b < N_BANDS - 1 else (x_pos <= hi))
        band[inside] = b
    return band


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether local coordinates ``(u, v)`` (radius 1, v pointing up) fall inside each shape."""
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.8
    ellipse = u**2 + (v / 0.55) ** 2 <= 1.0
    hu, hv = 1.2 * u, 1.2 * v + 0.1
    heart = (hu**2 + hv**2 - 1.0) ** 3 - hu**2 * hv**3 <= 0.0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def render_shapes(
    shape: np.ndarray,
    x_pos: np.ndarray,
    y_pos: np.ndarray,
    scale: np.ndarray,
    rotation: np.ndarray,
    *,
    size: int = DEFAULT_SIZE,
    supersample: int = 2,
) -> np.ndarray:
    """Render white shapes on black, anti-aliased by supersampling.

    Args:
      shape: int ``[n]`` shape index (0 square, 1 ellipse, 2 heart).
      x_pos: ``[n]`` normalised x position of the centre in [0, 1] (0 = leftmost possible).
      y_pos: ``[n]`` normalised y position in [0, 1] (0 = top).
      scale: ``[n]`` scale in (0, 1]; 1 is the largest shape (radius 0.17 * size).
      rotation: ``[n]`` rotation in radians (any finite angle).
      size: image height and width in pixels.
      supersample: sub-pixels per pixel along each axis (area-averaged).

    Returns:
      float32 ``[n, size, size, 1]`` images in [0, 1].

    Raises:
      TypeError: non-integer ``shape``; a non-numeric position, scale or rotation.
      ValueError: empty or mismatched arrays, shape ids outside [0, 3), non-finite values,
        positions outside [0, 1], scales outside (0, 1], ``size`` below 8.
    """
    size = _check_size(size)
    supersample = check_positive_int(supersample, "supersample")
    shape = check_integer_labels(shape, "shape")
    bounds = {"x_pos": (0.0, 1.0), "y_pos": (0.0, 1.0), "scale": (0.0, 1.0), "rotation": (-np.inf, np.inf)}
    for name, a in zip(bounds, (x_pos, y_pos, scale, rotation)):
        if a is None or isinstance(a, str) or not np.issubdtype(np.asarray(a).dtype, np.number):
            raise TypeError(f"`{name}` must be a numeric array [n]; got {type(a).__name__}.")
        check_rank(a, name, 1)
        check_same_leading("shape", shape, name, a)
        check_finite(a, name)
        lo, hi = bounds[name]
        a = np.asarray(a)
        if a.min() < lo or a.max() > hi or (name == "scale" and a.min() <= 0):
            interval = "(0, 1]" if name == "scale" else f"[{lo}, {hi}]"
            raise ValueError(f"`{name}` must lie in {interval}; got values in [{a.min()}, {a.max()}].")
    if shape.max() >= N_SHAPES:
        raise ValueError(f"`shape` must lie in [0, {N_SHAPES}); got values in [{shape.min()}, {shape.max()}].")
    radius = _MAX_RADIUS * size * np.asarray(scale, np.float64)
    margin = _EXTENT * _MAX_RADIUS * size
    span = size - 2 * margin
    cx = margin + np.asarray(x_pos, np.float64) * span
    cy = margin + np.asarray(y_pos, np.float64) * span
    sub = (np.arange(size * supersample) + 0.5) / supersample  # sub-pixel centres in pixel units
    px, py = sub[None, None, :], sub[None, :, None]
    cos = np.cos(rotation)[:, None, None]
    sin = np.sin(rotation)[:, None, None]
    dx = (px - cx[:, None, None]) / radius[:, None, None]
    dy = (cy[:, None, None] - py) / radius[:, None, None]  # v points up
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    mask = _inside(shape[:, None, None], u, v).astype(np.float32)
    n = len(shape)
    img = mask.reshape(n, size, supersample, size, supersample).mean(axis=(2, 4))
    return img[..., None].astype(np.float32)


def _check_size(size) -> int:
    size = check_positive_int(size, "size")
    if size < 8:
        raise ValueError(f"`size` must be >= 8 pixels; got {size}.")
    return size


def _check_fractions(fractions, name: str = "fractions") -> list[float]:
    """A fraction or a non-empty 1-D sequence of fractions in [0, 1], as a list of floats."""
    arr = None if fractions is None or isinstance(fractions, str) else np.asarray(fractions)
    if arr is None or not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"`{name}` must be a number or a 1-D array of numbers in [0, 1]; got {fractions!r:.60}.")
    check_rank(arr, name, (0, 1))
    if arr.size == 0:
        raise ValueError(f"`{name}` must hold at least one fraction; got shape {arr.shape}.")
    return [check_real(f, name, low=0.0, high=1.0) for f in np.atleast_1d(arr)]


def _nuisances(rng: np.random.Generator, n: int, latents: _Latents):
    """y position, scale and rotation, independent of shape and band."""
    if latents.kind == "dsprites":
        return (rng.choice(DSPRITES_POSITIONS, n), rng.choice(DSPRITES_SCALES, n),
                rng.choice(DSPRITES_ORIENTATIONS, n))
    y_pos = rng.uniform(0.0, 1.0, n)
    scale = rng.uniform(0.6, 1.0, n)
    rotation = rng.uniform(-latents.max_rotation, latents.max_rotation, n)
    return y_pos, scale, rotation


def _x_positions(rng: np.random.Generator, band: np.ndarray, latents: _Latents) -> np.ndarray:
    """x position of every sample, uniform within its band (on the grid for ``"dsprites"``)."""
    if latents.kind == "dsprites":
        x_pos = np.empty(len(band))
        for b, (lo, hi) in enumerate(BANDS):
            values = DSPRITES_POSITIONS[(DSPRITES_POSITIONS >= lo) & (DSPRITES_POSITIONS < hi)]
            x_pos[band == b] = rng.choice(values, int(np.sum(band == b)))
        return x_pos
    lo = np.array([b[0] for b in BANDS])[band]
    hi = np.array([b[1] for b in BANDS])[band]
    return lo + rng.uniform(0.0, 1.0, len(band)) * (hi - lo)


def _assemble(rng, y, band, biased, size, latents: _Latents) -> ShapesData:
    x_pos = _x_positions(rng, band, latents)
    y_pos, scale, rotation = _nuisances(rng, len(y), latents)
    # dSprites' images are binary: one sample at each pixel centre; the continuous latents anti-alias
    x = render_shapes(y, x_pos, y_pos, scale, rotation, size=size, supersample=1 if latents.kind == "dsprites" else 2)
    f32 = np.float32
    return ShapesData(
        x=x, y=y.astype(np.int32), band=band.astype(np.int32),
        group=(y * N_BANDS + band).astype(np.int32), biased=biased.astype(bool),
        x_pos=x_pos.astype(f32), y_pos=y_pos.astype(f32), scale=scale.astype(f32),
        rotation=rotation.astype(f32),
    )


def _check_common(seed, size, max_rotation, latents) -> tuple[int, _Latents]:
    """Validate the arguments every sampler shares; return the seed and the nuisance distribution."""
    _check_size(size)
    if latents not in LATENTS:
        raise ValueError(f"`latents` must be one of {LATENTS}; got {latents!r:.60}.")
    if latents == "dsprites" and max_rotation is not None:
        raise ValueError("`max_rotation` must be None with latents='dsprites' (dSprites rotates over the full "
                         f"circle in 40 steps); got {max_rotation!r:.60}.")
    if max_rotation is None:
        max_rotation = DEFAULT_MAX_ROTATION if latents == "continuous" else np.pi
    return check_seed(seed), _Latents(latents, check_real(max_rotation, "max_rotation", low=0.0, high=np.pi))


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` labels in ``[0, k)`` with counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n) % k)


def make_shapes(
    n: int, *, bias_fraction: float, seed: int = 0, size: int = DEFAULT_SIZE,
    max_rotation: float | None = None,
    latents: str = "continuous",
) -> ShapesData:
    """Shapes with the position cue on exactly ``round(bias_fraction * n)`` samples.

    Biased samples lie in the x band of their own shape (square left, ellipse centre, heart
    right); the others have a band drawn uniformly at random, independent of the shape. Shape
    labels are balanced (counts differ by at most one).

    Args:
      n: number of images.
      bias_fraction: fraction f in [0, 1] of biased samples.
      seed: seed; the same seed gives the same data.
      size: image size in pixels.
      max_rotation: with ``latents="continuous"``, rotations are uniform in
        ``[-max_rotation, max_rotation]`` radians (``None``: 30 degrees); must be ``None`` with
        ``"dsprites"``.
      latents: the nuisance distribution, ``"continuous"`` or ``"dsprites"`` (the module docstring).

    Returns:
      A ``ShapesData``; ``biased`` marks the biased samples (exactly ``round(f * n)``).
    """
    n = check_positive_int(n, "n")
    f = check_real(bias_fraction, "bias_fraction", low=0.0, high=1.0)
    seed, spec = _check_common(seed, size, max_rotation, latents)
    rng = np.random.default_rng(seed)
    y = _balanced_labels(rng, n, N_SHAPES)
    biased = np.zeros(n, bool)
    biased[rng.permutation(n)[: int(round(f * n))]] = True
    band = np.where(biased, y, rng.integers(0, N_BANDS, n))
    return _assemble(rng, y, band, biased, size, spec)


SIZE_SCHEDULES = ("fixed", "authors")


def sweep_sizes(fractions, n: int, schedule: str = "fixed") -> list[tuple[int, int]]:
    """``(n_biased, n_unbiased)`` of the training set at every bias fraction.

    ``"fixed"``: every set has ``n`` samples, ``round(f * n)`` of them biased. ``"authors"``
    (O'Mahony et al.'s dSprites split): the larger of the two parts has ``n`` samples and the
    smaller is cut to the ratio ``f : 1 - f``, so the set has ``n / max(f, 1 - f)`` samples
    (``n`` at f = 0 and 1, ``2 n`` at f = 0.5).

    Args:
      fractions: a bias fraction or a 1-D sequence of them, in [0, 1].
      n: set size (``"fixed"``) or size of the larger part (``"authors"``).
      schedule: ``"fixed"`` or ``"authors"``.

    Raises:
      TypeError: non-numeric ``fractions``, non-integer ``n``.
      ValueError: fractions outside [0, 1], none at all, ``n < 1``, an unknown schedule.
    """
    fractions = _check_fractions(fractions)
    n = check_positive_int(n, "n")
    if schedule not in SIZE_SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SIZE_SCHEDULES}; got {schedule!r}.")
    out = []
    for f in fractions:
        if schedule == "fixed":
            k = int(round(f * n))
            out.append((k, n - k))
        elif f >= 0.5:
            out.append((n, int(round(n * (1 - f) / f))))
        else:
            out.append((int(round(n * f / (1 - f))), n))
    return out


def bias_sweep(
    fractions,
    *,
    n: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    max_rotation: float | None = None,
    latents: str = "continuous",
    schedule: str = "fixed",
) -> list[ShapesData]:
    """Training sets for several bias fractions that share their images (nested across f).

    Renders one pool of ``n`` biased and one of ``n`` unbiased samples; the set for fraction f
    takes the first ``n_biased`` biased and the last ``n_unbiased`` unbiased samples (sizes from
    ``sweep_sizes(fractions, n, schedule)``), in a random order seeded by ``seed`` and the sizes
    (so a set does not depend on the other fractions). Neighbouring fractions differ only in the
    samples that switch pools, which makes accuracy-vs-f curves smoother than independent draws.
    With ``schedule="authors"`` the unbiased samples are drawn, as in the authors' code, from
    the pool the biased ones were filtered from, so about a third of them repeat biased images
    (a set with both parts holds those images twice); with ``"fixed"`` the two are disjoint.

    Args:
      fractions: bias fractions in [0, 1] (a single fraction gives a sweep of one set).
      n: samples per set (``"fixed"``), or size of the larger part (``"authors"``).
      seed: seed of both pools and of the orders.
      size: image size in pixels.
      max_rotation: with ``latents="continuous"``, rotations are uniform in
        ``[-max_rotation, max_rotation]`` radians (``None``: 30 degrees); must be ``None`` with
        ``"dsprites"``.
      latents: the nuisance distribution, ``"continuous"`` or ``"dsprites"`` (the module docstring).
      schedule: ``"fixed"`` size, or the ``"authors"`` schedule ``n / max(f, 1 - f)``.

    Returns:
      One ``ShapesData`` per fraction with exactly ``n_biased`` biased samples (shape counts are
      balanced within each pool, not necessarily within the mixture).
    """
    n = check_positive_int(n, "n")
    fractions = _check_fractions(fractions)
    seed = _check_common(seed, size, max_rotation, latents)[0]
    sizes = sweep_sizes(fractions, n, schedule)
    s_biased, s_unbiased, s_order = _seeds(seed, 3)
    kw = dict(size=size, max_rotation=max_rotation, latents=latents)
    biased = make_shapes(n, bias_fraction=1.0, seed=s_biased, **kw)
    if schedule == "authors":
        unbiased = _control_sharing_images(biased, seed=s_unbiased, **kw)
    else:
        unbiased = make_shapes(n, bias_fraction=0.0, seed=s_unbiased, **kw)
    out = []
    for k, u in sizes:
        both = ShapesData(*(np.concatenate([a[:k], b[n - u:]]) for a, b in zip(biased, unbiased)))
        # the order depends on the sizes only, not on the list; "fixed" keeps its historical seed
        order_seed = [s_order, k] if k + u == n else [s_order, k, u]
        out.append(both.subset(np.random.default_rng(order_seed).permutation(k + u)))
    return out


def _control_sharing_images(biased: ShapesData, *, seed: int, **kw) -> ShapesData:
    """The authors' unbiased ("control") part: ``n`` images drawn from the same pool as the biased part.

    O'Mahony et al. filter one pool of training images for the biased part (the images in their
    shape's band) and draw the control part at random from that same pool, so the two share
    images. Here the pool is the ``n`` biased images plus ``2 n`` images outside their shape's
    band (with bands uniform and independent of the shape, a third of a uniform pool lies in
    its shape's band); the control is a random ``n`` of the ``3 n``. Its bands are uniform and
    independent of the shape, as ``make_shapes(n, bias_fraction=0)``'s, and about a third of it
    repeats biased images. ``biased`` is ``False`` throughout: it marks the bias rule's draws.
    """
    n = len(biased.y)
    s_others, s_pick = _seeds(seed, 2)
    others = make_shape_groups(2 * n, aligned_fraction=0.0, seed=s_others, **kw)
    pool = ShapesData(*(np.concatenate([a, b]) for a, b in zip(biased._replace(biased=np.zeros(n, bool)), others)))
    return pool.subset(np.random.default_rng(s_pick).permutation(3 * n)[:n])


def make_shape_groups(
    n: int,
    *,
    aligned_fraction: float = 0.95,
    balanced: bool = False,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    max_rotation: float | None = None,
    latents: str = "continuous",
) -> ShapesData:
    """Shapes for a group benchmark: exactly ``round(a * n)`` aligned samples, or balanced groups.

    Args:
      n: number of images.
      aligned_fraction: fraction a in [0, 1] of samples with ``band == shape``; each of the others
        lies in one of the two other bands at random. Ignored when ``balanced``.
      balanced: give every one of the 9 groups (shape x band) the same size (sizes differ by
        at most one when ``n`` is not a multiple of 9).
      seed: seed; the same seed gives the same data.
      size: image size in pixels.
      max_rotation: with ``latents="continuous"``, rotations are uniform in
        ``[-max_rotation, max_rotation]`` radians (``None``: 30 degrees); must be ``None`` with
        ``"dsprites"``.
      latents: the nuisance distribution, ``"continuous"`` or ``"dsprites"`` (the module docstring).

    Returns:
      A ``ShapesData`` whose ``biased`` field marks aligned samples.
    """
    n = check_positive_int(n, "n")
    a = check_real(aligned_fraction, "aligned_fraction", low=0.0, high=1.0)
    seed, spec = _check_common(seed, size, max_rotation, latents)
    rng = np.random.default_rng(seed)
    if balanced:
        group = _balanced_labels(rng, n, N_GROUPS)
        y, band = group // N_BANDS, group % N_BANDS
    else:
        y = _balanced_labels(rng, n, N_SHAPES)
        aligned = np.zeros(n, bool)
        aligned[rng.permutation(n)[: int(round(a * n))]] = True
        other = (y + rng.integers(1, N_BANDS, n)) % N_BANDS
        band = np.where(aligned, y, other)
    return _assemble(rng, y, band, band == y, size, spec)


def _seeds(seed: int, k: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(k)]


def load_shapes_bias(
    bias_fraction: float,
    *,
    seed: int = 0,
    n_train: int = 3000,
    n_test: int = 1500,
    size: int = DEFAULT_SIZE,
    max_rotation: float | None = None,
    latents: str = "continuous",
) -> tuple[ShapesData, ShapesData]:
    """A training set with bias fraction f and an unbiased test set (band independent of shape).

    Args:
      bias_fraction: fraction f of biased training samples (see ``make_shapes``).
      seed: seed of both splits.
      n_train, n_test: split sizes.
      size: image size in pixels.
      max_rotation: with ``latents="continuous"``, rotations are uniform in
        ``[-max_rotation, max_rotation]`` radians (``None``: 30 degrees); must be ``None`` with
        ``"dsprites"``.
      latents: the nuisance distribution, ``"continuous"`` or ``"dsprites"`` (the module docstring).

    Returns:
      ``(train, test)``; ``train`` has exactly ``round(f * n_train)`` biased samples.
    """
    check_real(bias_fraction, "bias_fraction", low=0.0, high=1.0)
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        check_positive_int(value, name)
    s_train, s_test = _seeds(_check_common(seed, size, max_rotation, latents)[0], 2)
    kw = dict(size=size, max_rotation=max_rotation, latents=latents)
    train = make_shapes(n_train, bias_fraction=bias_fraction, seed=s_train, **kw)
    test = make_shapes(n_test, bias_fraction=0.0, seed=s_test, **kw)
    return train, test


def load_shapes_groups(
    seed: int = 0,
    *,
    aligned_fraction: float = 0.95,
    n_train: int = 3000,
    n_val: int = 900,
    n_test: int = 1800,
    size: int = DEFAULT_SIZE,
    max_rotation: float | None = None,
    latents: str = "continuous",
) -> GroupBenchmark:
    """The shapes group benchmark: ``aligned_fraction`` aligned training set, balanced val/test.

    Args:
      seed: seed of all three splits.
      aligned_fraction: fraction of training samples whose band equals their shape.
      n_train, n_val, n_test: split sizes (val and test are group-balanced).
      size: image size in pixels.
      max_rotation: with ``latents="continuous"``, rotations are uniform in
        ``[-max_rotation, max_rotation]`` radians (``None``: 30 degrees); must be ``None`` with
        ``"dsprites"``.
      latents: the nuisance distribution, ``"continuous"`` or ``"dsprites"`` (the module docstring).

    Returns:
      A ``GroupBenchmark`` with 3 classes and 9 groups.
    """
    check_real(aligned_fraction, "aligned_fraction", low=0.0, high=1.0)
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        check_positive_int(value, name)
    s_train, s_val, s_test = _seeds(_check_common(seed, size, max_rotation, latents)[0], 3)
    kw = dict(size=size, max_rotation=max_rotation, latents=latents)
    return GroupBenchmark(
        train=make_shape_groups(n_train, aligned_fraction=aligned_fraction, seed=s_train, **kw),
        val=make_shape_groups(n_val, balanced=True, seed=s_val, **kw),
        test=make_shape_groups(n_test, balanced=True, seed=s_test, **kw),
    )
