"""Studies: each reproduces one line of research end to end and writes JSON and figures.

A study is a ``Study`` value: a typed ``StudyConfig``, a pure ``compute(config, key)`` and pure
``metrics`` / ``figures`` / ``claims`` views of its result (see ``studies.base``). ``run`` computes
one without writing anything; ``execute`` also writes ``DIR/STUDY.json`` and its figures.
"""

from jaxinterp.studies.base import Study, StudyConfig, StudyOutput, execute, progress_enabled, run, write_output
from jaxinterp.studies.registry import get_study, study_names

__all__ = ["Study", "StudyConfig", "StudyOutput", "execute", "get_study", "progress_enabled", "run", "study_names",
           "write_output"]
