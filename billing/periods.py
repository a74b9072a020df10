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
