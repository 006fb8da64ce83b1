"""The README's code blocks run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under '## {heading}'"
    return match.group(1)


def test_api_at_a_glance_runs(capsys):
    exec(compile(_block("API at a glance"), "README: API at a glance", "exec"), {})
    out = capsys.readouterr().out
    assert "TopK (4096, 96)" in out
    assert "holds" in out or "does not hold" in out
