"""Budget periods in the tenant's time zone."""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo
from typing import Any

# (period, tz) -> (start, end, key): the key of the minute last asked about. Every admission with a budget
# asks, and period boundaries fall on whole minutes in every time zone, so one entry per budget shape
# answers nearly every call without converting time zones or formatting dates.
_recent: dict[tuple[str, Any], tuple[float, float, str]] = {}


def period_key(period: str, now: datetime, tz: tzinfo) -> str:
    ts = now.timestamp()
    recent = _recent.get((period, tz))
    if recent is not None and recent[0] <= ts < recent[1]:
        return recent[2]
    key = _period_key(period, now, tz)
    if len(_recent) > 1000:
        _recent.clear()
    minute = ts - ts % 60
    _recent[(period, tz)] = (minute, minute + 60, key)
    return key


def _period_key(period: str, now: datetime, tz: tzinfo) -> str:
    local = now.astimezone(tz)
    if period == "day":
        return local.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return local.strftime("%Y-%m")
    return "total"


def period_start(period: str, now: datetime, tz: tzinfo) -> date | None:
    """First local day of the period containing `now` (None for "total")."""
    local = now.astimezone(tz).date()
    if period == "day":
        return local
    if period == "week":
        return local - timedelta(days=local.weekday())
    if period == "month":
        return local.replace(day=1)
    return None


def seconds_to_next_period(period: str, now: datetime, tz: tzinfo) -> int | None:
    """Seconds until the period containing `now` ends (None for "total", which never resets)."""
    start = period_start(period, now, tz)
    if start is None:
        return None
    if period == "day":
        nxt = start + timedelta(days=1)
    elif period == "week":
        nxt = start + timedelta(days=7)
    else:
        nxt = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    boundary = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return max(int((boundary - now).total_seconds()), 1)
