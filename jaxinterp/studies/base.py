"""What a study is, and how one is run and written to disk.

A study is data, not a script: a frozen, typed ``StudyConfig`` (with a ``quick()`` version), a
pure ``compute(config, key) -> Result`` and three pure views of that result: ``metrics`` (the
JSON contract), ``figures`` (matplotlib figures, never saved by the study) and ``claims`` (the
reproduction scorecard). The executor here is the only code that turns a study into files::

    output = run(STUDY, Config.quick())          # compute + metrics + figures + claims, no files
    payload = write_output(output, "out/")       # out/STUDY.json + out/STUDY_<suffix>.png, atomically

``DIR/STUDY.json`` holds ``{"study", "params", "seconds", "metrics", "figures", "claims",
"summary"}``; ``params`` are the config's fields. The root key of ``compute`` is
``named_key(jax.random.key(config.seed), study.name)``, so two studies run with the same seed
never share randomness.

Writing is atomic per study: everything is written into a hidden temporary folder inside the
output folder, then the JSON and its figures are moved into place together, with Ctrl-C held
back during the move. An interrupted run leaves the previous complete result as it was.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Study", "StudyConfig", "StudyOutput", "execute", "numpy_rng", "progress_enabled", "run",
    "to_jsonable", "write_json_atomic", "write_output",
]

_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxinterp_study_progress", default=False)
_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def progress_enabled() -> bool:
    """Whether the study being run should show progress bars (set by ``run(..., progress=)``).

    ``compute`` passes it on to long loops (``progress=progress_enabled()``); it never changes a
    number, so it is not part of the config.
    """
    return _PROGRESS.get()


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Base class of every study's settings: a frozen dataclass of typed fields with defaults.

    Subclasses add fields (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``,
    ``tuple[float, ...]``, ``tuple[str, ...]``, ``typing.Literal[...]`` and ``X | None`` of
    these), override ``quick()`` and extend ``validate()``. The command line gets one flag per
    field (``n_features`` -> ``--n-features``), documented from the class docstring's
    ``Attributes:`` section. Construction checks every field's type (lists become tuples, ints
    given for floats become floats) and then calls ``validate()``.

    Attributes:
      seed: root PRNG seed; every key of the study derives from it by name.
    """

    seed: int = 0

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), hints[f.name], f.name)
            object.__setattr__(self, f.name, value)
        self.validate()

    @classmethod
    def quick(cls) -> StudyConfig:
        """The small version of the study (about a minute on 2 CPU cores; the tests use it)."""
        return cls()

    def validate(self) -> None:
        """Raise ValueError naming the field when a setting is out of range.

        Subclasses call ``super().validate()`` and add their own rules.
        """
        if self.seed < 0:
            raise ValueError(f"`seed` must be >= 0; got {self.seed}.")


def unwrap_optional(tp: Any) -> tuple[bool, Any]:
    """``(True, X)`` for ``X | None`` / ``Optional[X]``, else ``(False, tp)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against the field type ``tp``; return it normalised (tuples, floats)."""
    optional, tp = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise TypeError(f"`{name}` must not be None.")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"`{name}` must be one of {list(typing.get_args(tp))}; got {value!r}.")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"`{name}`: only tuple[X, ...] fields are supported; got {tp}.")
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            raise TypeError(f"`{name}` must be a tuple of {args[0].__name__}; got {type(value).__name__}.")
        return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
    return _coerce_scalar(value, tp, name)


def _coerce_scalar(value: Any, tp: Any, name: str) -> Any:
    if tp is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"`{name}` must be a bool; got {type(value).__name__} {value!r}.")
        return bool(value)
    if tp is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`{name}` must be an integer; got {type(value).__name__} {value!r}.")
        return int(value)
    if tp is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"`{name}` must be a number; got {type(value).__name__} {value!r}.")
        if not math.isfinite(float(value)):
            raise ValueError(f"`{name}` must be finite; got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"`{name}` must be a string; got {type(value).__name__} {value!r}.")
        return value
    raise TypeError(f"`{name}`: unsupported config field type {tp!r} (use int, float, bool, str, "
                    "tuple[X, ...], Literal or X | None).")


def config_params(config: StudyConfig) -> dict[str, Any]:
    """The config's fields as a JSON-ready dict (the ``params`` of ``STUDY.json``)."""
    return to_jsonable({f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def numpy_rng(key) -> np.random.Generator:
    """A numpy Generator seeded from a JAX key (host-side sampling that follows the key tree).

    Args:
      key: a typed PRNG key, usually ``named_key(root, "what")``.

    Returns:
      ``np.random.Generator`` seeded with the key's raw bits.
    """
    import jax

    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Study:
    """A registered study.

    Attributes:
      name: the name used on the command line and in ``DIR/{name}.json``.
      description: one line for ``jaxinterp list`` and the report.
      config: the ``StudyConfig`` subclass; the command line's flags are generated from it.
      compute: ``compute(config, key) -> Result``; pure (no plotting, no files).
      metrics: ``metrics(result) -> dict``, the JSON ``metrics`` (the public contract).
      figures: ``figures(result) -> {suffix: matplotlib Figure}``; saved as ``{name}_{suffix}.png``.
      claims: ``claims(result) -> list[claims.Claim]``, the study's scorecard rows; a claim's
        ``figure`` is a suffix of ``figures`` (or the saved file name).
      summary: ``summary(result) -> {label: value}``, a few headline numbers for the report.
    """

    name: str
    description: str
    config: type[StudyConfig]
    compute: Callable[[Any, Any], Any]
    metrics: Callable[[Any], dict]
    figures: Callable[[Any], dict]
    claims: Callable[[Any], list] | None = None
    summary: Callable[[Any], dict] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.config, type) and issubclass(self.config, StudyConfig)):
            raise TypeError(f"Study {self.name!r}: `config` must be a StudyConfig subclass; got {self.config!r}.")
        for field in ("compute", "metrics", "figures"):
            if not callable(getattr(self, field)):
                raise TypeError(f"Study {self.name!r}: `{field}` must be callable.")
        for field in ("claims", "summary"):
            if getattr(self, field) is not None and not callable(getattr(self, field)):
                raise TypeError(f"Study {self.name!r}: `{field}` must be callable or None.")


class StudyOutput(NamedTuple):
    """Everything a study run produced, before anything is written.

    Attributes:
      study: the study's name.
      params: the config's fields.
      seconds: wall time of compute, metrics, claims and figures.
      metrics: the JSON-ready metrics.
      figures: ``{suffix: Figure}``, not yet saved.
      claims: scorecard rows as dicts (``Claim.to_json()``; ``figure`` is the PNG file name).
      summary: headline ``label -> value`` pairs.
      result: the study's typed result, for notebooks.
    """

    study: str
    params: dict[str, Any]
    seconds: float
    metrics: dict[str, Any]
    figures: dict[str, Any]
    claims: list[dict[str, Any]]
    summary: dict[str, Any]
    result: Any = None

    def figure_name(self, suffix: str) -> str:
        """The file name of the figure ``suffix``: ``{study}_{suffix}.png``."""
        return f"{self.study}_{suffix}.png"


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    token = _PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _claims_json(study: Study, result: Any, figures: dict[str, Any]) -> list[dict[str, Any]]:
    if study.claims is None:
        return []
    rows = []
    names = {f"{study.name}_{s}.png" for s in figures}
    for claim in study.claims(result):
        row = to_jsonable(claim.to_json())
        fig = row.get("figure")
        if fig is not None:
            if fig in figures:
                row["figure"] = f"{study.name}_{fig}.png"
            elif fig not in names:
                raise ValueError(f"study {study.name!r}: claim {row['claim']!r} names figure {fig!r}, which "
                                 f"figures() does not produce ({sorted(figures)}).")
        rows.append(row)
    return rows


def run(study: Study, config: StudyConfig | None = None, *, progress: bool = False) -> StudyOutput:
    """Run ``study`` (new contract) with ``config`` (default: its defaults); write nothing.

    Args:
      study: a registered ``Study``.
      config: an instance of ``study.config``; None for the defaults.
      progress: show progress bars in long loops.

    Returns:
      A ``StudyOutput``; pass it to ``write_output`` to save it.
    """
    import jax

    from jaxinterp.keys import named_key

    config = study.config() if config is None else config
    if not isinstance(config, study.config):
        raise TypeError(f"`config` must be a {study.config.__name__} for study {study.name!r}; "
                        f"got {type(config).__name__}.")
    start = time.perf_counter()
    with _progress(progress):
        result = study.compute(config, named_key(jax.random.key(config.seed), study.name))
    metrics = to_jsonable(study.metrics(result))
    figures = dict(study.figures(result))
    for suffix in figures:
        if not isinstance(suffix, str) or not _SUFFIX.match(suffix):
            raise ValueError(f"study {study.name!r}: figure suffix {suffix!r} must be letters, digits, _ or -.")
    claims = _claims_json(study, result, figures)
    summary = to_jsonable(study.summary(result)) if study.summary is not None else {}
    return StudyOutput(study.name, config_params(config), time.perf_counter() - start, metrics, figures,
                       claims, summary, result)


def _payload(output: StudyOutput, figure_names: list[str]) -> dict[str, Any]:
    return to_jsonable({
        "study": output.study, "params": output.params, "seconds": output.seconds,
        "metrics": output.metrics, "figures": figure_names, "claims": output.claims,
        "summary": output.summary,
    })


def write_output(output: StudyOutput, out_dir: str | Path) -> dict[str, Any]:
    """Save ``output``'s figures and ``{study}.json`` into ``out_dir`` together (atomically).

    Returns:
      The JSON payload written.
    """
    from jaxinterp.plotting import close_figure, save_figure

    def produce(tmp: Path) -> dict[str, Any]:
        names = []
        for suffix, fig in output.figures.items():
            name = output.figure_name(suffix)
            save_figure(fig, tmp / name)
            names.append(name)
        return _payload(output, names)

    try:
        return _write_atomically(Path(out_dir), output.study, produce)
    finally:
        for fig in output.figures.values():
            close_figure(fig)


def execute(study: Study, config: StudyConfig | None, out_dir: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Run ``study`` and write ``{out_dir}/{name}.json`` and its figures; return what was written.

    Args:
      study: a registered ``Study``.
      config: an instance of ``study.config``; None for the defaults.
      out_dir: the output folder (created if needed).
      progress: show progress bars.
    """
    return write_output(run(study, config, progress=progress), out_dir)


# --------------------------------------------------------------------------------------------
# Atomic writing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) inside the block; re-raise it at the end if one came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _previous_figures(json_path: Path) -> list[str]:
    try:
        figs = json.loads(json_path.read_text()).get("figures", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in figs if isinstance(f, str) and "/" not in f and f.endswith(".png")]


def _write_atomically(out_dir: Path, name: str, produce: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Write one study's files into a temporary folder, then move them into ``out_dir`` together.

    ``produce(tmp)`` writes the figures into ``tmp`` and returns the payload; the JSON is
    written last. The move withdraws the previous JSON first, so no reader ever sees an old
    JSON beside new figures, and runs with Ctrl-C deferred.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.", suffix=".partial"))
    try:
        payload = produce(tmp)
        for fig in payload["figures"]:
            if not (tmp / fig).is_file():
                raise RuntimeError(f"study {name!r} listed figure {fig!r} but did not write it.")
        write_json_atomic(tmp / f"{name}.json", payload)
        target = out_dir / f"{name}.json"
        with _sigint_deferred():
            stale = [f for f in _previous_figures(target) if f not in payload["figures"]]
            if target.exists():
                os.replace(target, tmp / "previous.json")
            for fig in payload["figures"]:
                os.replace(tmp / fig, out_dir / fig)
            os.replace(tmp / f"{name}.json", target)
            _fsync_dir(out_dir)
            for fig in stale:
                with contextlib.suppress(OSError):
                    (out_dir / fig).unlink()
        return payload
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/jax scalars and arrays (nested in dicts/lists) to plain JSON types.

    Non-finite floats become None (JSON has no NaN).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return to_jsonable(arr.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return to_jsonable(float(obj))
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; readable like the figures beside it
        with os.fdopen(fd, "w") as f:
            json.dump(to_jsonable(payload), f, indent=2, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
