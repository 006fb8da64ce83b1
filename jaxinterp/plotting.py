"""Figure helpers shared by the studies.

matplotlib is imported lazily (``import jaxinterp`` never imports it) and this module is the one
place that chooses a backend: the non-interactive Agg backend, unless the environment already
chose one (``MPLBACKEND``, which notebooks set, or an already imported ``pyplot``).

Study figures are built with ``subplots`` below, which makes ``matplotlib.figure.Figure``
objects outside pyplot's global figure registry: building them is pure, they display in
notebooks, and they are saved (and closed) only by the study executor.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["close_figure", "colormap", "pyplot", "save_figure", "subplots"]

_BACKEND_CHOSEN = False


def _matplotlib():
    """Import matplotlib, choosing the Agg backend once unless a backend is already chosen."""
    global _BACKEND_CHOSEN
    import matplotlib

    if not _BACKEND_CHOSEN:
        if "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        _BACKEND_CHOSEN = True
    return matplotlib


def pyplot():
    """``matplotlib.pyplot``, imported after the backend is chosen (for code that needs pyplot)."""
    _matplotlib()
    import matplotlib.pyplot as plt

    return plt


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             squeeze: bool = True, **kwargs: Any):
    """A new figure and its axes, like ``plt.subplots`` but outside pyplot's figure registry.

    Args:
      nrows, ncols: grid of axes.
      figsize: ``(width, height)`` in inches.
      squeeze: as in ``plt.subplots`` (a single Axes for a 1 x 1 grid, a 1-D array for one row).
      kwargs: passed to ``Figure.subplots`` (``sharex``, ``gridspec_kw``, ...).

    Returns:
      ``(figure, axes)``.
    """
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)


def colormap(name: str):
    """The registered matplotlib colormap ``name`` (e.g. ``"viridis"``)."""
    return _matplotlib().colormaps[name]


def close_figure(fig) -> None:
    """Release ``fig`` (and drop it from pyplot's registry if pyplot manages it)."""
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` as PNG, close it, and return ``path``."""
    _matplotlib()
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    close_figure(fig)
    return path
