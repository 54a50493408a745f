"""The reporting period of a compliance report: ``--period`` (a year, a month, a quarter or the last N
days) or ``--since``/``--until`` (dates or ISO times); the end is exclusive, every time is UTC."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Optional

from ..errors import UsageError
from ..manifest import iso

DEFAULT_PERIOD = "30d"
_UTC = dt.timezone.utc


@dataclass(frozen=True)
class Period:
    since: dt.datetime
    until: dt.datetime          # exclusive
    label: str

    def to_dict(self) -> dict:
        return {"since": iso(self.since), "until": iso(self.until), "label": self.label}


def _month_start(year: int, month: int) -> dt.datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.datetime(year, month, 1, tzinfo=_UTC)


def parse_period(period: Optional[str], since: Optional[str], until: Optional[str], now: dt.datetime) -> Period:
    if period and (since or until):
        raise UsageError("give either --period or --since/--until, not both")
    if since or until:
        start = _moment("--since", since) if since else None
        end = _moment("--until", until, end_of_day=True) if until else now
        if start is None:
            raise UsageError("--until needs --since (or use --period)")
        if start >= end:
            raise UsageError(f"--since {since} is not before --until {until or 'now'}")
        return Period(start, end, f"{_day(start)} .. {_day(end - dt.timedelta(microseconds=1))}")
    text = (period or DEFAULT_PERIOD).strip()
    m = re.fullmatch(r"(\d+)d", text)
    if m and 0 < int(m.group(1)) <= 3660:
        return Period(now - dt.timedelta(days=int(m.group(1))), now, f"last {m.group(1)} days to {_day(now)}")
    m = re.fullmatch(r"(\d{4})(?:-(\d{2})|-[Qq]([1-4]))?", text)
    if m:
        year = int(m.group(1))
        if m.group(2):
            month = int(m.group(2))
            if not 1 <= month <= 12:
                raise UsageError(f"--period {text}: month {month} does not exist")
            return Period(_month_start(year, month), _month_start(year, month + 1), f"{year}-{month:02d}")
        if m.group(3):
            quarter = int(m.group(3))
            return Period(_month_start(year, 3 * quarter - 2), _month_start(year, 3 * quarter + 1), f"{year}-Q{quarter}")
        return Period(_month_start(year, 1), _month_start(year + 1, 1), str(year))
    raise UsageError(f"--period {text!r} is not a year (2026), month (2026-11), quarter (2026-Q4) or "
                     f"number of days (90d)")


def _moment(option: str, text: str, *, end_of_day: bool = False) -> dt.datetime:
    """A date (``2026-11-30``: with ``end_of_day`` the whole day is included) or an ISO time with a zone."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=_UTC)
            return day + dt.timedelta(days=1) if end_of_day else day
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a date (2026-11-30) or an ISO time with a zone") from None
    if when.tzinfo is None:
        raise UsageError(f"{option} {text!r} has no time zone: add Z or +01:00")
    return when.astimezone(_UTC)


def _day(when: dt.datetime) -> str:
    return when.astimezone(_UTC).strftime("%Y-%m-%d")
