"""Compact displays of result objects (repr, HTML, treescope) and the one progress-bar helper."""

import inspect
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _relu_nets import random_relu_net
from jaxinterp import _display, _progress
from jaxinterp import directions as jd
from jaxinterp import interpretability as interp
from jaxinterp import loop, streaming
from jaxinterp.polytope import exact_walk

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 16)).astype(np.float32)
ACTS = RNG.normal(size=(1000, 4)).astype(np.float32)
ITEMS = RNG.normal(size=(1000, 6)).astype(np.float32)
SHORT = 300


def _check_short(text: str, *fragments: str) -> None:
    assert len(text) < SHORT, text
    assert "\n" not in text and "[[" not in text and "Array(" not in text, text  # no array dumps
    for f in fragments:
        assert f in text, (f, text)


def _traced_repr(obj) -> str:
    """The repr of ``obj`` as seen inside ``jit`` (every array leaf a tracer)."""
    seen = []

    def f(o):
        seen.append(repr(o))
        return jax.tree_util.tree_leaves(o)[0]

    jax.jit(f)(obj)
    return seen[0]


def _pca():
    """PCA directions of ``X`` (numpy SVD), wrapped as the learner wraps them."""
    centred = X - X.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    comp = jnp.asarray(vt[:8])
    return jd.Directions.create(comp, jd.encoders.Linear(comp.T, jnp.zeros(8)), method="pca", center=X.mean(0),
                                info={"explained_variance": jnp.asarray(sv[:8] ** 2 / len(X)),
                                      "total_variance": jnp.asarray(centred.var(0).sum())})


def test_directions_repr_shapes_and_numbers():
    d = _pca()
    text = repr(d)
    _check_short(text, "Directions(", "method='pca'", "k=8", "d=16", "components=f32[8,16]", "Linear()")
    total = float(d.info["total_variance"])
    assert f"total_variance={total:.3g}" in text
    traced = _traced_repr(d)
    _check_short(traced, "components=f32[8,16]", "total_variance=f32[]")
    w = jnp.ones((16, 12))
    topk = jd.Directions.create(w.T, jd.encoders.TopK(w, jnp.zeros(12), 3), method="sae_topk")
    _check_short(repr(topk), "TopK(k=3)", "components=f32[12,16]")


def test_directions_repr_stays_short_for_big_and_stacked():
    big = jd.Directions.create(jnp.zeros((4096, 512)), jd.encoders.Linear(jnp.zeros((512, 4096)), jnp.zeros(4096)),
                               method="big", info={f"stat_{i}": jnp.ones(()) * i for i in range(20)})
    _check_short(repr(big), "components=f32[4096,512]", "info=+17 more")
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a, a]), _pca())
    _check_short(repr(stacked), "stacked=(3,)", "components=f32[3,8,16]")
    _check_short(_traced_repr(stacked), "components=f32[3,8,16]")


def test_unit_stats_repr():
    stats = streaming.stream(lambda b: {"h": jnp.maximum(b, 0.0).reshape(-1, 4, 4)}, X, batch_size=64, top_k=5,
                             quantiles=(0.1, 0.5))["h"]
    text = repr(stats)
    _check_short(text, "UnitStats(", "count=300", "unit_shape=(4, 4)", "top_k=5", "quantile_levels=(0.1, 0.5)")
    means = np.maximum(X, 0).mean(0)
    assert f"median {np.median(means):.3g}" in text
    assert f"max={X.max():.3g}" in text and "min=0" in text
    _check_short(_traced_repr(stats), "count=i32[]", "means=f32[4,4]", "quantile_levels=(f32[], f32[])")


def test_line_walk_repr_counts_match_the_walk():
    net, _, _ = random_relu_net(0, (8, 16, 16, 3), 0.1)
    x = RNG.normal(size=(8, 8)).astype(np.float32)
    walk = exact_walk(net, x[:4], x[4:], max_crossings=256)
    text = repr(walk)
    n = np.asarray(walk.n_crossings)
    _check_short(text, "LineWalk(", "paths=4", "layers=2", "units=32", "max_crossings=256",
                 f"crossings=median {np.median(n):.3g} in [{n.min():.3g}, {n.max():.3g}]",
                 f"truncated={int(np.sum(walk.truncated))}", f"flagged={int(np.sum(walk.flagged))}",
                 f"max_affine_error={np.max(walk.affine_error):.3g}")
    _check_short(_traced_repr(walk), "paths=4", "positions=f32[4,256]")
    treescope = pytest.importorskip("treescope")
    rendered = treescope.render_to_text(walk)
    assert rendered.startswith("LineWalk(") and "n_crossings=" in rendered and "layout=" in rendered


def test_index_and_two_afc_reprs():
    ii = interp.interpretability_index(ACTS, ITEMS, "pixel")
    _check_short(repr(ii), "IndexResult(", "units=4", "k=5", f"median {np.median(ii.scores):.3g}")
    afc = interp.psychophysics(ACTS, ITEMS, "pixel")
    _check_short(repr(afc), "TwoAFCResult(", "units=4", "trials=20", "refs=9", f"median {np.median(afc.scores):.3g}")
    _check_short(repr(afc.stimuli), "TwoAFCStimuli(", "queries=i64[4,2,20]", "references=i64[4,2,20,9]")
    _check_short(repr(interp.top_bottom_exemplars(ACTS, 3)), "Exemplars(", "units=4", "k=3")
    _check_short(_traced_repr(ii), "scores=f32[4]")


def test_html_displays_name_the_kind_and_escape():
    for obj in (_pca(), interp.interpretability_index(ACTS, ITEMS, "pixel")):
        page = obj._repr_html_()
        assert page.startswith("<div") and type(obj).__name__ in page and "f32[" in page or "scores" in page
    assert "&lt;b&gt;" in _display.html_table("K", [("x", "<b>")])


def test_compact_repr_is_cut_and_numbers_skip_tracers():
    text = _display.compact_repr("K", [("a", "x" * 1000), ("b", None)])
    assert len(text) == _display.MAX_REPR_CHARS and text.endswith("...)") and "b=" not in text
    assert _display.numbers_summary(np.array([1.0, np.nan, 3.0])) == "median 2 in [1, 3]; 1 NaN/inf"
    assert _display.array_summary(np.zeros((2, 3), np.uint8)) == "u8[2,3]"
    assert _display.array_summary(jnp.zeros((), jnp.bfloat16)) == "bf16[]"
    jax.jit(lambda v: _display.number(v) is None or 1 / 0)(jnp.ones(()))   # a tracer has no number


def test_treescope_renderers():
    treescope = pytest.importorskip("treescope")
    d = _pca()
    calls = []
    original = _display.treescope_constructor

    def spy(obj, attributes, path, subtree_renderer):
        calls.append(sorted(attributes))
        return original(obj, attributes, path, subtree_renderer)

    _display.treescope_constructor = spy
    try:
        text = treescope.render_to_text(d)
        stats_text = treescope.render_to_text(streaming.stream(lambda b: {"h": b}, X, batch_size=100)["h"])
    finally:
        _display.treescope_constructor = original
    assert text.startswith("Directions(") and "components=" in text and "float32(8, 16)" in text
    assert stats_text.startswith("UnitStats(") and "count=300" in stats_text
    assert calls[0] == sorted(["components", "center", "scale", "encoder", "info", "method"])
    assert treescope.render_to_html(d)


def test_importing_jaxinterp_imports_neither_treescope_nor_tqdm():
    code = ("import sys, jaxinterp, jaxinterp.directions, jaxinterp.streaming, jaxinterp.polytope; "
            "print(sorted(m for m in ('treescope', 'tqdm', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("has_widgets", [False, True])
def test_progress_bar_uses_plain_tqdm_without_ipywidgets(monkeypatch, has_widgets):
    import importlib.util

    import tqdm.auto
    import tqdm.std

    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "ipywidgets":
            return object() if has_widgets else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = _progress.progress_bar(range(3), disable=True)
        assert list(bar) == [0, 1, 2]
    assert type(bar) is (tqdm.auto.tqdm if has_widgets else tqdm.std.tqdm)


def test_progress_bars_all_come_from_the_helper(monkeypatch):
    made = []
    real = _progress.progress_bar
    monkeypatch.setattr(_progress, "progress_bar", lambda *a, **k: made.append(k.get("desc")) or real(*a, **k))
    loop.run_chunks(lambda s, start, n: s + n, 0, steps=4, chunk_size=2, progress=True, desc="chunks")
    streaming.stream(lambda b: {"h": b}, X, batch_size=100, progress=True)
    interp.stream_exemplars(lambda b: b[:, :2], X, 3, batch_size=100, progress=True)
    assert "chunks" in made and len(made) >= 3
    for module in (loop, streaming, interp.exemplars, interp.index, interp.psychophysics):
        assert "tqdm.auto" not in inspect.getsource(module)
