"""report.html: the scorecard first, tidy tables, tolerance of unreadable results."""

import html.parser
import json

import pytest

import _fake_study
from jaxinterp import report
from jaxinterp.studies import base, registry


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(registry.STUDY_MODULES, "fake", "_fake_study")
    return _fake_study.STUDY


class _Tables(html.parser.HTMLParser):
    """Collects tables as lists of rows of cell texts, and every id and href."""

    def __init__(self):
        super().__init__()
        self.tables, self.ids, self.hrefs, self._cell = [], set(), [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a":
            self.hrefs.append(attrs.get("href"))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(path):
    p = _Tables()
    p.feed(path.read_text())
    return p


def test_first_table_is_the_scorecard_linked_to_figures(fake, tmp_path):
    payload = base.execute(fake, _fake_study.Config(), tmp_path)
    page = _parse(report.write_report(tmp_path))
    scorecard = page.tables[0]
    assert scorecard[0] == ["study", "claim", "paper", "ours", "spread", "verdict", "rule"]
    assert [row[1] for row in scorecard[1:]] == [c["claim"] for c in payload["claims"]]
    assert scorecard[1][5] == payload["claims"][0]["verdict"]
    assert scorecard[1][3] == f"{payload['claims'][0]['ours']:.4g}"  # rounded to 4 significant digits
    for claim in payload["claims"]:
        assert f"#fig-{claim['figure']}" in page.hrefs and f"fig-{claim['figure']}" in page.ids
    assert "max-width:520px" not in (tmp_path / "report.html").read_text()


def test_params_are_a_table_and_long_lists_are_collapsed(tmp_path, fake):
    base.execute(fake, _fake_study.Config(n=40, xs=tuple(float(i) for i in range(30))), tmp_path)
    page = _parse(report.write_report(tmp_path))
    settings = next(t for t in page.tables if t and t[0] == ["setting", "value"])
    rows = dict(r for r in settings[1:])
    assert rows["n"] == "40" and rows["mode"] == "a" and rows["limit"] == "–"
    assert rows["xs"].startswith("30 values, min 0, mean 14.5, max 29")


@pytest.mark.parametrize("text", ['{"study": "fake", "metr', "[1, 2]", "", '{"study": "fake", "metrics": 3}'])
def test_unreadable_json_gets_an_error_box_and_the_report_is_still_written(fake, tmp_path, monkeypatch, text):
    monkeypatch.setitem(registry.STUDY_MODULES, "other", "_fake_study")
    base.execute(fake, _fake_study.Config(), tmp_path)
    (tmp_path / "other.json").write_text(text)
    page_text = report.write_report(tmp_path).read_text()
    assert 'class="error"' in page_text and "Result unreadable" in page_text
    page = _parse(tmp_path / "report.html")
    assert {"fake", "other"} <= page.ids and len(page.tables[0]) == 3  # the readable study's claims


def test_json_without_seconds_or_claims_renders(fake, tmp_path):
    (tmp_path / "fake.json").write_text(json.dumps({"study": "fake", "params": {"a": 1.23456789},
                                                    "metrics": {"m": {"x": 0.000012345, "y": [1, 2]}}}))
    text = report.write_report(tmp_path).read_text()
    assert "no study reports claims" in text and "1.235" in text and "1.234e-05" in text


def test_format_value():
    assert report.format_value(0.123456) == "0.1235"
    assert report.format_value(None) == "–"
    assert report.format_value([1, 2.5]) == "[1, 2.5]"
    assert report.format_value([[1.0, 2.0]] * 10) == "10 × 2 values, min 1, mean 1.5, max 2"
