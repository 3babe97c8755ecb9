"""Injectable time, so lifetimes and expiry can be tested without sleeping."""

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def iso(ts: float) -> str:
    """RFC 3339 UTC with seconds precision, the form every JSON output uses."""
    return to_datetime(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `2h`, `30d` or a bare number of seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    unit = value[-1]
    number = value[:-1] if unit in units else value
    if not number.isdigit():
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 30d)")
    return int(number) * units.get(unit, 1)
