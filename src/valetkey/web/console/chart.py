"""An agent's activity as an inline SVG bar chart, drawn on the server (no script, no style
attribute: the console's CSP allows neither; colours come from `console.css` classes).

Pure functions: hourly counts in, SVG markup out. Every text that reaches the markup is
escaped here, so the result may be inserted into a page as it is.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from valetkey.clock import to_datetime

HOUR = 3600
# The series in drawing order (bottom to top of a stacked bar): the class `console.css`
# colours, what the legend calls it, and the `decision` value of the audit event it counts.
SERIES = (
    ("allowed", "Allowed", "allow"),
    ("denied", "Denied", "deny"),
    ("approvals", "Approval requests", "approval_required"),
)
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 28
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Hour:
    """One UTC hour's decisions."""

    start: int  # seconds since the epoch, a multiple of 3600
    allowed: int = 0
    denied: int = 0
    approvals: int = 0

    @property
    def total(self) -> int:
        return self.allowed + self.denied + self.approvals

    def count(self, series: str) -> int:
        value: int = getattr(self, series)
        return value


def hours(counts: Iterable[tuple[int, str, int]], now: float, span: int = 72) -> list[Hour]:
    """Every hour of the last `span` hours up to the current one, oldest first, from
    `(hour start, decision, count)` rows; hours without a row count zero and rows outside
    the window or of another decision are ignored."""
    if span < 1:
        raise ValueError("span is at least one hour")
    last = int(now // HOUR) * HOUR
    first = last - (span - 1) * HOUR
    series_of = {decision: name for name, _, decision in SERIES}
    found: dict[int, dict[str, int]] = {}
    for start, decision, count in counts:
        name = series_of.get(decision)
        if name is None or not first <= start <= last or start % HOUR:
            continue
        bucket = found.setdefault(start, {})
        bucket[name] = bucket.get(name, 0) + max(0, int(count))
    return [Hour(start, **found.get(start, {})) for start in range(first, last + 1, HOUR)]


def totals(data: Sequence[Hour]) -> dict[str, int]:
    return {name: sum(h.count(name) for h in data) for name, _, _ in SERIES}


def summary(data: Sequence[Hour]) -> str:
    """The chart in one sentence (its SVG description, and what a screen reader hears)."""
    if not data:
        return "No hours to show."
    sums = totals(data)
    span = len(data)
    if not any(sums.values()):
        return f"No decisions in the last {span} hours."
    parts = ", ".join(f"{sums[name]} {label.lower()}" for name, label, _ in SERIES)
    busiest = max(data, key=lambda h: (h.total, h.start))
    return (
        f"Decisions in the last {span} hours: {parts}. "
        f"Busiest hour: {_hour_label(busiest.start)} with {busiest.total}."
    )


def svg(data: Sequence[Hour], *, title: str, chart_id: str = "activity") -> str:
    """A stacked bar per hour (allowed, denied, approval requests), a baseline, the scale's
    top value and a label at each midnight (UTC). `chart_id` prefixes the ids of the
    `<title>` and `<desc>` the SVG is labelled by."""
    if not _ID.match(chart_id):
        raise ValueError("chart_id: a letter, then letters, digits, '-' or '_'")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = TOP + plot_h
    top_value = _nice(max((h.total for h in data), default=0))
    slot = plot_w / max(1, len(data))
    bar = max(1.0, slot * 0.8)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(summary(data))}</desc>',
    ]
    for i, h in enumerate(data):
        x = LEFT + i * slot + (slot - bar) / 2
        y = float(base)
        for name, label, _ in SERIES:
            count = h.count(name)
            if not count:
                continue
            height = count / top_value * plot_h
            y -= height
            tip = f"{_hour_label(h.start)}: {count} {label.lower()}"
            out.append(
                f'<rect class="{name}" x="{_n(x)}" y="{_n(y)}" width="{_n(bar)}" '
                f'height="{_n(height)}"><title>{escape(tip)}</title></rect>'
            )
        if h.start % 86400 == 0:  # midnight UTC: a tick and the date
            tick = LEFT + i * slot
            out.append(
                f'<line class="axis" x1="{_n(tick)}" y1="{base}" x2="{_n(tick)}" y2="{base + 5}"/>'
            )
            day = to_datetime(h.start).strftime("%d %b")
            out.append(
                f'<text x="{_n(tick)}" y="{base + 18}" text-anchor="middle">{escape(day)}</text>'
            )
    out += [
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top_value}</text>',
        f'<text x="{LEFT - 6}" y="{base}" text-anchor="end">0</text>',
    ]
    if not any(h.total for h in data):
        out.append(
            f'<text x="{LEFT + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
            'text-anchor="middle">No decisions</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _nice(value: int) -> int:
    """The scale's top: at least 1, rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 1:
        return 1
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10


def _n(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _hour_label(start: int) -> str:
    return to_datetime(start).strftime("%d %b %H:00 UTC")
