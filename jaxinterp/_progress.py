"""The one place progress bars are made: a tqdm bar that works in terminals and notebooks.

``tqdm.auto`` picks the notebook (ipywidgets) bar inside Jupyter, and when ipywidgets is not
installed it prints a red "IProgress not found" warning before falling back to text. So the
widget bar is used only when ipywidgets can be imported; otherwise the plain text bar
(``tqdm.std``), which a notebook shows as ordinary output. tqdm is imported on use (it is slow
to import), never at ``import jaxinterp``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar", "tqdm_class"]


def tqdm_class() -> type:
    """The tqdm class to use: ``tqdm.auto.tqdm`` with ipywidgets installed, else ``tqdm.std.tqdm``."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm progress bar (see the module docstring for which one).

    Args:
      iterable: what to iterate over, or None for a manual bar (``total=``, ``bar.update(n)``).
      kwargs: passed to tqdm (``total``, ``desc``, ``leave``, ``disable``, ``unit``, ...).

    Returns:
      The tqdm bar (iterable, a context manager).
    """
    return tqdm_class()(iterable, **kwargs)
