"""One HTML page: the reproduction scorecard of every study, then each study's numbers and figures.

The page opens with one table of every claim every study checks (verdicts as the studies
computed them), each row linked to the figure that shows it. Each study's section then gives its
headline numbers, its settings as a tidy table, all metrics (rounded; long lists collapsed) and
its figures at full width. A study whose JSON cannot be read gets an error box; the rest of the
page is still written.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from jaxinterp.studies.registry import get_study, study_names

__all__ = ["format_value", "load_outputs", "scorecard_markdown", "write_report"]

_LIST_INLINE = 8  # lists up to this long are shown in full; longer ones are summarised
_STYLE = """
body{font-family:sans-serif;max-width:1400px;margin:auto;padding:0 16px;color:#222}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f4f4f4;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.holds{background:#dff5df}.fails{background:#f9dcdc}.inconclusive{background:#f6efd2}
.error{border:2px solid #c33;background:#fbeaea;padding:8px 12px;margin:8px 0}
figure{display:block;margin:12px 0}figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555}details{margin:6px 0}summary{cursor:pointer}
"""


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shape(value: list) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def format_value(value: Any) -> str:
    """Short text for a JSON value: numbers to 4 significant digits, long lists summarised."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        flat = _flatten_list(value)
        if len(value) <= _LIST_INLINE and all(not isinstance(v, (list, dict)) for v in value):
            return "[" + ", ".join(format_value(v) for v in value) + "]"
        shape = " × ".join(map(str, _shape(value)))
        nums = [v for v in flat if _is_number(v)]
        if nums and len(nums) == len(flat):
            mean = sum(nums) / len(nums)
            return f"{shape} values, min {format_value(float(min(nums)))}, mean {format_value(mean)}, " \
                   f"max {format_value(float(max(nums)))}"
        return f"{shape} values"
    if isinstance(value, dict):
        return json.dumps(value)[:200]
    return str(value)


def _flatten_list(value: Any) -> list:
    if isinstance(value, list):
        return [x for v in value for x in _flatten_list(v)]
    return [value]


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, keys joined by ``.``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _cell(value: Any) -> str:
    text = _escape(format_value(value))
    if isinstance(value, list) and (len(value) > _LIST_INLINE or any(isinstance(v, (list, dict)) for v in value)):
        full = _escape(json.dumps(_round(value)))
        return f"<td><details><summary>{text}</summary><code>{full}</code></details></td>"
    cls = ' class="num"' if _is_number(value) else ""
    return f"<td{cls}>{text}</td>"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(_number(value)) if math.isfinite(value) else None
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _table(rows: dict[str, Any], header: tuple[str, str] | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = f"<tr><th>{_escape(header[0])}</th><th>{_escape(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><th>{_escape(k)}</th>{_cell(v)}</tr>" for k, v in _flatten(rows).items())
    return f"<table>{head}{body}</table>"


def _verdict_class(verdict: Any) -> str:
    text = str(verdict).lower()
    if text == "holds":
        return "holds"
    if text.startswith("does not") or text.startswith("fail"):
        return "fails"
    return "inconclusive"


def _scorecard(outputs: list[tuple[str, dict | None, str | None]]) -> str:
    """The table of every claim of every readable study; unreadable studies are named below it."""
    head = ("<tr><th>study</th><th>claim</th><th>paper</th><th>ours</th><th>spread</th>"
            "<th>verdict</th><th>rule</th></tr>")
    rows = []
    for name, payload, _ in outputs:
        if payload is None:
            continue
        for claim in payload.get("claims") or []:
            if not isinstance(claim, dict):
                continue
            text = _escape(claim.get("claim", ""))
            fig = claim.get("figure")
            link = f'<a href="#fig-{_escape(fig)}">{text}</a>' if fig else text
            verdict = claim.get("verdict", "")
            rows.append(
                f'<tr><td><a href="#{_escape(name)}">{_escape(name)}</a></td><td>{link}</td>'
                f"{_cell(claim.get('paper_value'))}{_cell(claim.get('ours'))}{_cell(claim.get('spread'))}"
                f'<td class="{_verdict_class(verdict)}">{_escape(verdict)}</td>'
                f"<td>{_escape(claim.get('rule', ''))}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="7"><em>no study reports claims</em></td></tr>')
    broken = [name for name, payload, _ in outputs if payload is None]
    note = (f'<p class="error">Unreadable results (not in the table): {_escape(", ".join(broken))}.</p>'
            if broken else "")
    return f'<h2 id="scorecard">Reproduction scorecard</h2><table>{head}{"".join(rows)}</table>{note}'


def scorecard_markdown(claims) -> str:
    """A Markdown table of scorecard rows (``Claim`` objects or their dicts), e.g. for a notebook.

    Args:
      claims: iterable of ``studies.claims.Claim`` or ``Claim.to_json()`` dicts.

    Returns:
      Markdown text: claim, paper, ours (± spread), verdict and the rule behind it.
    """
    lines = ["| claim | paper | ours | verdict | rule |", "|---|---|---|---|---|"]
    for c in claims:
        c = c.to_json() if hasattr(c, "to_json") else dict(c)
        ours = format_value(c.get("ours"))
        if _is_number(c.get("spread")):
            ours += f" ± {format_value(float(c['spread']))}"
        cells = [c.get("claim", ""), format_value(c.get("paper_value")), ours, c.get("verdict", ""), c.get("rule", "")]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines)


def _description(name: str) -> str:
    try:
        return get_study(name).description
    except Exception:  # the report must render even when a study module does not import
        return ""


def _section(name: str, payload: dict | None, error: str | None) -> str:
    desc = _escape(_description(name))
    if payload is None:
        return (f'<section id="{_escape(name)}"><h2>{_escape(name)}</h2><p>{desc}</p>'
                f'<div class="error"><strong>Result unreadable.</strong> {_escape(error)}</div></section>')
    seconds = payload.get("seconds")
    timing = f" ({_number(float(seconds))} s)" if _is_number(seconds) else ""
    figs = "".join(
        f'<figure id="fig-{_escape(f)}"><img src="{_escape(f)}" alt="{_escape(f)}">'
        f"<figcaption>{_escape(f)}</figcaption></figure>"
        for f in payload.get("figures") or [] if isinstance(f, str))
    return (
        f'<section id="{_escape(name)}"><h2>{_escape(name)}</h2><p>{desc}{timing}</p>'
        f"{_table(payload.get('summary') or {}, ('headline', 'value'))}"
        f"<details open><summary>settings</summary>{_table(payload.get('params') or {}, ('setting', 'value'))}</details>"
        f"<details><summary>all metrics</summary>{_table(payload.get('metrics') or {})}</details>"
        f"{figs}</section>")


def _read(path: Path, name: str) -> tuple[dict | None, str | None]:
    """A study's payload, or None and the reason it cannot be used."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path.name}: cannot read ({e})"
    except json.JSONDecodeError as e:
        return None, f"{path.name}: not valid JSON ({e})"
    if not isinstance(payload, dict):
        return None, f"{path.name}: expected a JSON object, got {type(payload).__name__}"
    if payload.get("study") != name:
        return None, f"{path.name}: names study {payload.get('study')!r}, expected {name!r}"
    for key, kind in (("metrics", dict), ("params", dict), ("summary", dict), ("figures", list), ("claims", list)):
        if key in payload and payload[key] is not None and not isinstance(payload[key], kind):
            return None, f"{path.name}: {key!r} must be a {kind.__name__}"
    return payload, None


def load_outputs(out_dir: str | Path) -> list[tuple[str, dict | None, str | None]]:
    """``(name, payload or None, error or None)`` for every registered study with a JSON in ``out_dir``."""
    out_dir = Path(out_dir)
    found = []
    for name in study_names():
        path = out_dir / f"{name}.json"
        if path.exists():
            found.append((name, *_read(path, name)))
    return found


def write_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` from every ``{study}.json`` found there; return its path.

    Unreadable JSON files (truncated, corrupt, of the wrong shape) get an error box; the page is
    written in any case (atomically: a reader never sees half a page).
    """
    out_dir = Path(out_dir)
    outputs = load_outputs(out_dir)
    nav = " · ".join(f'<a href="#{_escape(n)}">{_escape(n)}</a>' for n, _, _ in outputs)
    sections = "".join(_section(*o) for o in outputs) or "<p><em>no study results in this folder</em></p>"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>jaxinterp report</title>"
        f"<style>{_STYLE}</style></head><body><h1>jaxinterp report</h1><p>{nav}</p>"
        f"{_scorecard(outputs)}{sections}</body></html>")
    target = out_dir / "report.html"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".report.", suffix=".html.tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
