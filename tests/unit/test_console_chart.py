"""The agents page's activity chart: hourly buckets in, escaped SVG markup out."""

import xml.etree.ElementTree as ET

import pytest

from valetkey.web.console import chart
from valetkey.web.console.chart import Hour

SVG = "{http://www.w3.org/2000/svg}"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
LAST = int(NOW // 3600) * 3600


def _tree(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def _bars(markup: str) -> list[ET.Element]:
    return list(_tree(markup).iter(SVG + "rect"))


def test_hours_fill_the_window_oldest_first() -> None:
    rows = [
        (LAST, "allow", 3),
        (LAST, "deny", 1),
        (LAST - 3600, "approval_required", 2),
        (LAST, "allow", 1),  # two rows for one bucket add up
        (LAST - 72 * 3600, "allow", 9),  # before the window
        (LAST + 3600, "allow", 9),  # after it
        (LAST, "maybe", 9),  # not a decision
    ]
    found = chart.hours(rows, NOW, 72)
    assert len(found) == 72
    assert [h.start for h in found] == list(range(LAST - 71 * 3600, LAST + 1, 3600))
    assert found[-1] == Hour(LAST, allowed=4, denied=1)
    assert found[-2] == Hour(LAST - 3600, approvals=2)
    assert sum(h.total for h in found) == 7
    assert chart.totals(found) == {"allowed": 4, "denied": 1, "approvals": 2}
    with pytest.raises(ValueError, match="at least one hour"):
        chart.hours([], NOW, 0)


def test_bars_are_stacked_and_scaled_to_the_busiest_hour() -> None:
    data = chart.hours([(LAST, "allow", 3), (LAST, "deny", 2), (LAST - 7200, "allow", 1)], NOW)
    markup = chart.svg(data, title="Decisions")
    bars = _bars(markup)
    assert [b.get("class") for b in bars] == ["allowed", "allowed", "denied"]
    heights = [float(b.get("height", "0")) for b in bars]
    plot = chart.HEIGHT - chart.TOP - chart.BOTTOM
    assert heights[1] + heights[2] == pytest.approx(plot)  # 5 of a scale topped at 5
    assert heights[0] == pytest.approx(plot / 5)
    # the denied part sits on top of the allowed part of the same hour
    allowed, denied = bars[1], bars[2]
    assert allowed.get("x") == denied.get("x")
    assert float(denied.get("y", "0")) + heights[2] == pytest.approx(float(allowed.get("y", "0")))
    # each bar says what it counts
    assert bars[2].findtext(SVG + "title") == "14 Nov 22:00 UTC: 2 denied"


def test_the_svg_is_labelled_and_described() -> None:
    data = chart.hours([(LAST, "approval_required", 2), (LAST, "allow", 1)], NOW)
    root = _tree(chart.svg(data, title="Activity of bot", chart_id="act-1"))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "act-1-title act-1-desc"
    assert root.find(SVG + "title") is not None
    assert root.findtext(SVG + "title") == "Activity of bot"
    desc = root.findtext(SVG + "desc") or ""
    assert "1 allowed, 0 denied, 2 approval requests" in desc
    assert "14 Nov 22:00 UTC with 3" in desc
    assert root.find(SVG + "title").get("id") == "act-1-title"  # type: ignore[union-attr]
    assert "style" not in chart.svg(data, title="x")  # the CSP allows no inline style


def test_midnights_are_labelled() -> None:
    texts = [t.text for t in _tree(chart.svg(chart.hours([], NOW), title="x")).iter(SVG + "text")]
    assert {"12 Nov", "13 Nov", "14 Nov"} <= set(texts)


def test_no_decisions_draws_no_bars() -> None:
    markup = chart.svg(chart.hours([], NOW), title="Nothing")
    assert _bars(markup) == []
    assert "No decisions" in markup
    assert chart.summary(chart.hours([], NOW, 24)) == "No decisions in the last 24 hours."


def test_text_is_escaped() -> None:
    hostile = '</title><script>alert(1)</script>"&'
    markup = chart.svg(chart.hours([(LAST, "allow", 1)], NOW), title=hostile)
    assert "<script>" not in markup
    assert _tree(markup).findtext(SVG + "title") == hostile
    with pytest.raises(ValueError, match="chart_id"):
        chart.svg([], title="x", chart_id='a" onload="x')


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (40, 50), (101, 200)]
)
def test_the_scale_tops_at_a_round_number(value: int, top: int) -> None:
    assert chart._nice(value) == top
