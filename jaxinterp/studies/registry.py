"""The one place where studies are registered.

Each entry maps a study name to the module that defines ``STUDY`` (a ``base.Study``). Modules
are imported lazily so ``jaxinterp list`` stays fast and one study's imports never slow another.
Order is the order of ``jaxinterp reproduce`` and of the report.
"""

from __future__ import annotations

import importlib

from jaxinterp.studies.base import Study

STUDY_MODULES: dict[str, str] = {
    "models": "jaxinterp.studies.models_study",
    "directions": "jaxinterp.studies.directions_study",
    "incidental": "jaxinterp.studies.incidental_study",
    "interpretability": "jaxinterp.studies.interpretability_study",
    "midrange": "jaxinterp.studies.midrange_study",
    "polytope": "jaxinterp.studies.polytope_study",
    "transformer": "jaxinterp.studies.transformer_study",
}


def study_names() -> list[str]:
    """Names of all registered studies, in run order."""
    return list(STUDY_MODULES)


def get_study(name: str) -> Study:
    """Return the registered study called ``name`` (KeyError listing the names otherwise)."""
    if name not in STUDY_MODULES:
        raise KeyError(f"unknown study {name!r}; registered studies: {', '.join(STUDY_MODULES)}")
    study = importlib.import_module(STUDY_MODULES[name]).STUDY
    if study.name != name:
        raise RuntimeError(f"module {STUDY_MODULES[name]} defines study {study.name!r}, not {name!r}")
    return study
