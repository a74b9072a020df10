"""Budget periods in the tenant's time zone."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


def period_key(period: str, now: datetime, tz: ZoneInfo) -> str:
    local = now.astimezone(tz)
    if period == "day":
        return local.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return local.strftime("%Y-%m")
    return "total"


def period_start(period: str, now: datetime, tz: ZoneInfo) -> date | None:
    """First local day of the period containing `now` (None for "total")."""
    local = now.astimezone(tz).date()
    if period == "day":
        return local
    if period == "week":
        return local - timedelta(days=local.weekday())
    if period == "month":
        return local.replace(day=1)
    return None


def seconds_to_next_period(period: str, now: datetime, tz: ZoneInfo) -> int | None:
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
