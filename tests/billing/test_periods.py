"""Budget period keys: the per-minute memo must give what the full computation gives, at every instant."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from billing.periods import _period_key, period_key


def test_memoized_period_key_matches_the_computation_across_boundaries_and_zones() -> None:
    # Zones with half- and quarter-hour offsets and DST changes; instants around a year's end, where
    # day, ISO week and month all roll over.
    zones = [ZoneInfo(z) for z in ("UTC", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham", "Europe/Berlin")]
    rng = random.Random(11)
    base = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    for _ in range(20_000):
        now = base + timedelta(seconds=rng.uniform(-2 * 86400, 2 * 86400))
        zone, period = rng.choice(zones), rng.choice(["day", "week", "month", "total"])
        assert period_key(period, now, zone) == _period_key(period, now, zone)
    # The memo is per (period, zone): the same instant keys differently in two zones.
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_key("month", now, ZoneInfo("UTC")) == "2026-12"
    assert period_key("month", now, ZoneInfo("Europe/Berlin")) == "2027-01"
