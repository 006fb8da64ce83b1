"""The shape of the code itself: small functions, one backend switch, no private copies of the loop."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxinterp"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_BODY_LINES = 60  # code lines of a function body, its docstring not counted


def _functions(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _body_lines(node) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return 0 if not body else node.end_lineno - body[0].lineno + 1


def test_sources_found():
    assert len(SOURCES) > 40, SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short(path):
    long = [(node.name, node.lineno, n) for node in _functions(path) if (n := _body_lines(node)) > MAX_BODY_LINES]
    assert not long, f"{path}: functions whose body exceeds {MAX_BODY_LINES} lines (name, line, length): {long}"


def test_body_length_counts_code_not_docstring():
    source = 'def f():\n    """Doc\n\n    more doc\n    """\n    a = 1\n    return a\n'
    (node,) = _functions_of_source(source)
    assert _body_lines(node) == 2


def _functions_of_source(source):
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]


def test_matplotlib_backend_is_chosen_in_one_place():
    users = [p.relative_to(PACKAGE).as_posix() for p in SOURCES if "matplotlib.use(" in p.read_text()]
    assert users == ["plotting.py"], users


def test_one_chunk_loop():
    """Trainers share ``loop.run_chunks`` (the minibatch trainers through ``loop.run_keyed_chunks``):
    no module keeps a private scanned-fit loop."""
    offenders = [p.relative_to(PACKAGE).as_posix() for p in SOURCES
                 if "def scan_fit" in p.read_text() or "def _scan_fit" in p.read_text()]
    assert not offenders, offenders
    users = {p.relative_to(PACKAGE).as_posix() for p in SOURCES if "run_chunks(" in p.read_text()}
    assert {"directions/learner.py", "toy/training.py", "loop.py"} <= users, users
    keyed = {p.relative_to(PACKAGE).as_posix() for p in SOURCES if "run_keyed_chunks(" in p.read_text()}
    assert {"models.py", "midrange/training.py"} <= keyed, keyed
