"""The ``jaxinterp`` command: list, run one study, or reproduce them all and write a report.

``jaxinterp run STUDY`` has one flag per field of the study's config (``n_features`` ->
``--n-features``); ``--quick`` starts from ``Config.quick()`` and the flags override it. A bad
value, an unknown study, an unusable ``--out`` folder or a second run into the same ``--out``
is a one-line error (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import sys
import time
import traceback
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jaxinterp.studies.base import Study, StudyConfig, execute, unwrap_optional
from jaxinterp.studies.registry import get_study, study_names

LOCK_NAME = ".jaxinterp.lock"
_RESERVED = {"out", "quick", "no_progress", "only", "command", "study", "processes"}


class CLIError(Exception):
    """A user error, reported as one line on stderr with exit status 2."""


# --------------------------------------------------------------------------------------------
# Config fields -> flags
# --------------------------------------------------------------------------------------------


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` sections of ``cls``'s and its bases' docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        section = re.split(r"^Attributes:\s*$", text, maxsplit=1, flags=re.M)
        if len(section) < 2:
            continue
        current = None
        for line in section[1].splitlines():
            m = re.match(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if m and not line.startswith(" " * 6):
                current = m.group(1)
                docs[current] = m.group(2)
            elif line.strip() and current and line.startswith(" " * 4):
                docs[current] += " " + line.strip()
            elif not line.strip():
                continue
            else:
                break
    return docs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_parser(tp: Any, optional: bool):
    """``argparse`` ``type=`` for one value of the field type ``tp`` ("none" allowed if optional)."""
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)

        def parse_literal(text: str):
            for c in choices:
                if str(c) == text:
                    return c
            raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(map(str, choices))})")
        base = parse_literal
    elif tp in (int, float, str):
        base = tp
    else:
        raise TypeError(f"unsupported config field type {tp!r}")

    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"invalid {getattr(tp, '__name__', 'value')} value: {text!r}") from e
    parse.__name__ = getattr(tp, "__name__", "value")
    return parse


def _as_flag_value(value: Any) -> str:
    """``value`` as it would be typed on the command line."""
    if isinstance(value, tuple):
        return " ".join(_as_flag_value(v) for v in value)
    return "none" if value is None else str(value)


def add_config_arguments(parser: argparse.ArgumentParser, config: type[StudyConfig]) -> None:
    """Add one flag per field of ``config`` (defaults shown from ``config()`` and ``config.quick()``)."""
    hints = typing.get_type_hints(config)
    docs = _attribute_docs(config)
    default, quick = config(), config.quick()
    group = parser.add_argument_group("study settings")
    for f in dataclasses.fields(config):
        if f.name in _RESERVED:
            raise TypeError(f"{config.__name__}: field name {f.name!r} clashes with a command-line option.")
        optional, tp = unwrap_optional(hints[f.name])
        d, q = getattr(default, f.name), getattr(quick, f.name)
        shown = f"default {_as_flag_value(d)}" + (f"; quick {_as_flag_value(q)}" if q != d else "")
        help_text = f"{docs.get(f.name, '').rstrip('.')} ({shown})".strip().replace("%", "%%")
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        if tp is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(tp) is tuple:
            group.add_argument(_flag(f.name), nargs="+", type=_scalar_parser(typing.get_args(tp)[0], False),
                               metavar=typing.get_args(tp)[0].__name__.upper(), **kwargs)
        else:
            group.add_argument(_flag(f.name), type=_scalar_parser(tp, optional), **kwargs)


def config_from_args(config: type[StudyConfig], args: argparse.Namespace, *, quick: bool) -> StudyConfig:
    """``config.quick()`` (or ``config()``) with the flags given on the command line applied.

    Raises:
      CLIError: a value was rejected by the config; the message names the flag.
    """
    base = config.quick() if quick else config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}
    try:
        return dataclasses.replace(base, **given)
    except (TypeError, ValueError) as e:
        message = str(e)
        names = re.findall(r"`(\w+)", message)
        field = next((n for n in names if n in given), names[0] if names else None)
        flag = _flag(field) if field else "settings"
        raise CLIError(f"{flag}: {message}") from None


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output folder")
    parser.add_argument("--quick", action="store_true", help="start from each config's quick() version")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per registered study under ``run``."""
    parser = argparse.ArgumentParser(prog="jaxinterp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="name the registered studies")

    run = sub.add_parser("run", help="run one study")
    run_sub = run.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name in study_names():
        study = get_study(name)
        p = run_sub.add_parser(name, help=study.description, description=study.description)
        _common(p, "out")
        p.add_argument("--processes", type=int, default=1, metavar="N",
                       help="run as N local processes of one multi-process JAX run (process 0 writes)")
        add_config_arguments(p, study.config)

    rep = sub.add_parser("reproduce", help="run every study and write DIR/report.html")
    _common(rep, "report")
    rep.add_argument("--seed", type=int, default=None, help="root PRNG seed of every study (default: each config's)")
    rep.add_argument("--only", nargs="+", default=None, metavar="STUDY",
                     help=f"restrict to these studies ({', '.join(study_names())})")

    rpt = sub.add_parser("report", help="(re)write DIR/report.html from the JSON in DIR")
    rpt.add_argument("--out", type=Path, default=Path("report"))
    return parser


# --------------------------------------------------------------------------------------------
# Output folder: checks and lock
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked_out_dir(path: Path) -> Iterator[Path]:
    """Create ``path`` if needed and hold an exclusive lock on it for the block.

    Raises:
      CLIError: ``path`` is a file, cannot be created or written, or another run holds the lock.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK_NAME, "a+")  # noqa: SIM115 (held for the whole block)
    except OSError as e:
        raise CLIError(f"--out {path}: cannot create or write the folder ({e.strerror or e})") from None
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): run without a lock
            pass
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise CLIError(f"--out {path}: another jaxinterp run (pid {holder}) is writing there; "
                           "wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _execute(study: Study, args: argparse.Namespace, config: StudyConfig) -> dict:
    """Run one study into ``args.out``."""
    return execute(study, config, args.out, progress=not args.no_progress)


def _reproduce_config(study: Study, args: argparse.Namespace) -> StudyConfig:
    config = study.config.quick() if args.quick else study.config()
    if args.seed is not None:
        try:
            config = dataclasses.replace(config, seed=args.seed)
        except (TypeError, ValueError) as e:
            raise CLIError(f"--seed: {e}") from None
    return config


def _reproduce(args: argparse.Namespace) -> int:
    from jaxinterp.report import write_report

    names = args.only or study_names()
    unknown = [n for n in names if n not in study_names()]
    if unknown:
        raise CLIError(f"--only: unknown study {', '.join(map(repr, unknown))}; "
                       f"registered studies: {', '.join(study_names())}")
    studies = [get_study(n) for n in names]
    configs = [_reproduce_config(s, args) for s in studies]
    start, failed = time.perf_counter(), []
    with locked_out_dir(args.out):
        for study, config in zip(studies, configs):
            print(f"== {study.name}", flush=True)
            try:
                payload = _execute(study, args, config)
            except Exception:  # one broken study must not cost the others' results and the report
                traceback.print_exc()
                failed.append(study.name)
                print(f"   {study.name} failed; its previous result (if any) is left in place", flush=True)
                continue
            print(f"   done in {payload['seconds']:.1f}s", flush=True)
            write_report(args.out)  # an interrupted reproduce still leaves a report of what finished
        path = write_report(args.out)
    print(f"report: {path} ({time.perf_counter() - start:.0f}s in all)")
    if failed:
        print(f"jaxinterp: error: studies failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _main(args: argparse.Namespace) -> int:
    from jaxinterp.report import write_report

    if args.command == "list":
        for name in study_names():
            print(f"{name:18s} {get_study(name).description}")
        return 0
    if args.command == "report":
        if not Path(args.out).is_dir():
            raise CLIError(f"--out {args.out}: no such folder")
        try:
            print(write_report(args.out))
        except OSError as e:
            raise CLIError(f"--out {args.out}: cannot write report.html ({e.strerror or e})") from None
        return 0
    if args.command == "run":
        study = get_study(args.study)
        config = config_from_args(study.config, args, quick=args.quick)
        if not _is_main_process():   # computes its share of the run; process 0 writes
            from jaxinterp.studies.base import run

            run(study, config)
            return 0
        with locked_out_dir(args.out):
            payload = _execute(study, args, config)
        print(f"{args.study}: {payload['seconds']:.1f}s -> {args.out / (args.study + '.json')}")
        return 0
    return _reproduce(args)


def _is_main_process() -> bool:
    """Join the multi-process run when started by ``--processes``; True unless a process other than 0."""
    from jaxinterp.launch import PROCESS_ID_ENV

    if not os.environ.get(PROCESS_ID_ENV):
        return True
    from jaxinterp import distributed

    distributed.initialize()
    return distributed.is_main_process()


def _relaunch(args: argparse.Namespace, argv: list[str]) -> int:
    """``run ... --processes N``: this command without ``--processes``, as N processes (``jaxinterp.launch``)."""
    from jaxinterp import launch

    if args.processes < 1:
        raise CLIError(f"--processes: must be >= 1; got {args.processes}")
    config_from_args(get_study(args.study).config, args, quick=args.quick)   # bad flags: one error, here
    rest, skip = [], False
    for token in argv:
        if skip or token.startswith("--processes="):
            skip = False
            continue
        skip = token == "--processes"
        if not skip:
            rest.append(token)
    return launch.launch([sys.executable, "-m", "jaxinterp.cli", *rest], args.processes)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxinterp`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "processes", 1) != 1:
            return _relaunch(args, argv)
        return _main(args)
    except CLIError as e:
        print(f"jaxinterp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxinterp: interrupted; complete results in {getattr(args, 'out', '.')} are left as they were",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
