"""jaxinterp: pure-functional JAX tools for studying superposition and polysemanticity.

The flat public API. Each capability also lives in its own subpackage:

- ``jaxinterp.capture`` / ``jaxinterp.streaming``: activations of any JAX model, reduced over datasets;
- ``jaxinterp.polytope``: polytope codes, path boundaries, local complexity, boundary density;
- ``jaxinterp.directions``: cosine K-means, PCA, ICA, NMF, dictionary learning, sparse autoencoders;
- ``jaxinterp.interpretability``: the interpretability index and in-silico 2AFC psychophysics;
- ``jaxinterp.midrange``: the whole range of activations and mid-range data curation;
- ``jaxinterp.toy``: incidental polysemanticity and superposition toy models;
- ``jaxinterp.datasets``, ``jaxinterp.models``, ``jaxinterp.sharding``, ``jaxinterp.checkpoint``;
- ``jaxinterp.distributed``: multi-process runs (``python -m jaxinterp.launch -n N -- ...``).

``jaxinterp.capture`` is both the subpackage and, being callable, the function
``jaxinterp.capture.capture``: ``jaxinterp.capture(model.apply)`` works either way.

Importing the package is cheap: every name below is imported on first use (PEP 562), so
``import jaxinterp`` imports neither JAX nor scikit-learn, matplotlib or tqdm. To add a public
name, add one line to ``_EXPORTS``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("capture", "checkpoint", "datasets", "directions", "distributed", "interpretability", "midrange",
                "models", "polytope", "sharding", "streaming", "toy")

# public name -> module that defines it (attribute of the same name)
_EXPORTS: dict[str, str] = {
    # capture and streaming
    "POST_SUFFIX": "jaxinterp.capture",
    "JaxinterpWarning": "jaxinterp._warnings",
    "activation_names": "jaxinterp.capture",
    "intervene": "jaxinterp.capture",
    "UnitStats": "jaxinterp.streaming",
    "apply_in_batches": "jaxinterp.streaming",
    "reduce_spatial": "jaxinterp.streaming",
    "stream": "jaxinterp.streaming",
    # polytope lens
    "boundary_density": "jaxinterp.polytope.boundary",
    "boundary_distances": "jaxinterp.polytope.boundary",
    "count_polytopes": "jaxinterp.polytope",
    "dataset_codes": "jaxinterp.polytope",
    "exact_walk": "jaxinterp.polytope",
    "hamming": "jaxinterp.polytope",
    "local_complexity": "jaxinterp.polytope",
    "polytope_codes": "jaxinterp.polytope",
    "sampled_boundary_counts": "jaxinterp.polytope",
    # directions
    "Directions": "jaxinterp.directions",
    "evaluate": "jaxinterp.directions",
    # interpretability and mid-range
    "interpretability_index": "jaxinterp.interpretability",
    "UnitCard": "jaxinterp.interpretability.cards",
    "unit_card": "jaxinterp.interpretability.cards",
    "unit_card_data": "jaxinterp.interpretability.cards",
    "unit_card_figure": "jaxinterp.interpretability.cards",
    "psychophysics": "jaxinterp.interpretability",
    "compare_methods": "jaxinterp.midrange",
    "midrange_mask": "jaxinterp.midrange",
    "range_analysis": "jaxinterp.midrange",
}

__all__ = sorted({*_SUBPACKAGES, *_EXPORTS})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
