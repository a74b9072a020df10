"""The rollups say what the raw call logs say: counts, tokens and cost exact, percentiles within a bucket."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Q, Sum

from observability.logbuffer import after_write
from observability.models import (
    HISTOGRAM_BUCKETS,
    HISTOGRAM_RATIO,
    LATENCY_BOUNDS_MS,
    CallLog,
    CallRollupDay,
    CallRollupHour,
    CallRollupMinute,
    TagRollupHour,
    UserRollupHour,
)
from observability.rollups import histogram_bucket, percentile_from_histogram
from observability.selectors import dashboard, percentile
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def bucket_bounds(ms: float) -> tuple[float, float]:
    """(low, high) of the bucket holding `ms`; high is infinite for the open last bucket."""
    i = histogram_bucket(ms)
    low = LATENCY_BOUNDS_MS[i - 1] if i else 0.0
    high = LATENCY_BOUNDS_MS[i] if i < HISTOGRAM_BUCKETS - 1 else float("inf")
    return float(low), float(high)


def make_records(tenant_id: int, n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        status = rnd.choice([200, 200, 200, 200, 429, 500])
        prompt, completion = rnd.randint(1, 500), rnd.randint(0, 800)
        out.append(
            {
                "created_at": T0 + timedelta(seconds=rnd.randint(0, 3 * 3600)),
                "tenant_id": tenant_id,
                "virtual_key_id": rnd.choice([None, 11, 12]),
                "request_id": f"req-{seed}-{i}",
                "endpoint": "chat.completions",
                "requested_model": rnd.choice(["gpt-4o-mini", "local"]),
                "variant": rnd.choice(["", "", "local"]),
                "status_code": status,
                "latency_ms": rnd.lognormvariate(6, 1),
                "ttfb_ms": rnd.lognormvariate(5, 1) if rnd.random() < 0.7 else None,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                # A stream that failed after a 200 counts as an error too.
                "error_type": "upstream_error" if status >= 400 or rnd.random() < 0.05 else "",
                "end_user": rnd.choice(["", "u1", "u2"]),
                "cost_picodollars": rnd.choice([None, rnd.randint(0, 10**9)]),
                "tags": rnd.choice([[], ["team-a"], ["team-a", "batch"]]),
            }
        )
    return out


def write_batch(records: list[dict]) -> None:
    """What the buffer's database sink does, inside the test's transaction: insert, then run the hooks."""
    CallLog.objects.bulk_create([CallLog(**r) for r in records])
    after_write(records)


def test_rollups_equal_the_raw_logs():
    tenant = Tenant.objects.create(slug="rolls", name="Rolls")
    records = make_records(tenant.id, 600)
    # Two batches, so rows are upserted onto existing ones.
    write_batch(records[:350])
    write_batch(records[350:])

    logs = CallLog.objects.filter(tenant=tenant)
    raw_errors = logs.filter(Q(status_code__gte=400) | ~Q(error_type="")).count()
    raw_sums = logs.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"), t=Sum("total_tokens"))
    raw_cost = logs.aggregate(s=Sum("cost_picodollars"))["s"]
    for model in (CallRollupMinute, CallRollupHour):
        agg = model.objects.filter(tenant_id=tenant.id).aggregate(
            n=Sum("requests"),
            e=Sum("errors"),
            p=Sum("prompt_tokens"),
            c=Sum("completion_tokens"),
            t=Sum("total_tokens"),
            cost=Sum("cost_picodollars"),
        )
        assert agg["n"] == 600
        assert agg["e"] == raw_errors
        assert (agg["p"], agg["c"], agg["t"]) == (raw_sums["p"], raw_sums["c"], raw_sums["t"])
        assert agg["cost"] == raw_cost

    # Per model and key in one hour, exactly.
    hour = T0 + timedelta(hours=1)
    in_hour = logs.filter(created_at__gte=hour, created_at__lt=hour + timedelta(hours=1), virtual_key_id=11)
    rolled = CallRollupHour.objects.filter(tenant_id=tenant.id, bucket=hour, virtual_key_id=11)
    for model_name in ("gpt-4o-mini", "local"):
        assert in_hour.filter(requested_model=model_name).count() == (
            rolled.filter(model=model_name).aggregate(n=Sum("requests"))["n"] or 0
        )

    tag_n = TagRollupHour.objects.filter(tenant_id=tenant.id, tag="team-a").aggregate(
        n=Sum("requests"), c=Sum("cost_picodollars")
    )
    team_a = logs.filter(tags__contains=["team-a"])
    assert tag_n["n"] == team_a.count()
    assert tag_n["c"] == (team_a.aggregate(s=Sum("cost_picodollars"))["s"] or 0)

    for user in ("u1", "u2"):
        rolled = UserRollupHour.objects.filter(tenant_id=tenant.id, end_user=user).aggregate(
            n=Sum("requests"), e=Sum("errors"), t=Sum("total_tokens"), c=Sum("cost_picodollars")
        )
        raw = logs.filter(end_user=user)
        assert rolled["n"] == raw.count()
        assert rolled["e"] == raw.filter(Q(status_code__gte=400) | ~Q(error_type="")).count()
        assert rolled["t"] == raw.aggregate(s=Sum("total_tokens"))["s"]
        assert rolled["c"] == (raw.aggregate(s=Sum("cost_picodollars"))["s"] or 0)

    # The dashboard's percentiles come from the histograms: within the bucket of the exact one.
    board = dashboard(tenant, start=T0, end=T0 + timedelta(hours=4))
    assert board.totals.requests == 600
    assert board.totals.cost_picodollars == raw_cost
    latencies = list(logs.values_list("latency_ms", flat=True))
    ttfbs = [v for v in logs.values_list("ttfb_ms", flat=True) if v is not None]
    for p in (0.5, 0.95, 0.99):
        for values, estimate in ((latencies, board.totals.latency_p(p)), (ttfbs, board.totals.ttfb_p(p))):
            exact = percentile(values, p)
            low, high = bucket_bounds(exact)
            width = high - low if high != float("inf") else low
            assert abs(estimate - exact) <= width, (p, estimate, exact)
    assert sum(point.totals.requests for point in board.series) == 600
    # A month reads the day rollups (whole UTC days): the same totals.
    month = dashboard(tenant, start=T0 - timedelta(days=20), end=T0 + timedelta(days=10))
    assert (month.totals.requests, month.totals.errors, month.totals.cost_picodollars) == (600, raw_errors, raw_cost)
    assert month.step == timedelta(days=1)
    assert {r.label: r.requests for r in month.by_user} == {r.label: r.requests for r in board.by_user}
    assert {r.label for r in board.by_tag} == {"team-a", "batch"}
    assert {r.label for r in board.by_user} == {"u1", "u2"}
    assert sum(r.requests for r in board.by_model) == 600


def test_percentile_from_histogram_reads_each_rank_from_its_bucket():
    counts = [0] * HISTOGRAM_BUCKETS
    i = histogram_bucket(100.0)
    counts[i] = 10  # ten calls in the bucket of 100 ms, spread evenly over it
    low, high = bucket_bounds(100.0)
    assert high / low == pytest.approx(HISTOGRAM_RATIO)
    # percentile_cont's rank 4.5 of 0..9: halfway between the 5th and 6th tenths of the bucket.
    assert percentile_from_histogram(counts, 0.5) == pytest.approx(low + (high - low) * 0.5)
    assert percentile_from_histogram(counts, 0.0) == pytest.approx(low + (high - low) * 0.05)
    assert percentile_from_histogram([0] * HISTOGRAM_BUCKETS, 0.5) is None
    # One call of 0.3 ms and one of 3 s: the median lies between them, as the rows' percentile_cont says.
    counts = [0] * HISTOGRAM_BUCKETS
    counts[histogram_bucket(0.3)] = counts[histogram_bucket(3000.0)] = 1
    assert percentile_from_histogram(counts, 0.5) == pytest.approx(percentile([0.3, 3000.0], 0.5), rel=0.1)
    counts = [0] * (HISTOGRAM_BUCKETS - 1) + [4]  # all slower than the last bound: it answers that bound
    assert percentile_from_histogram(counts, 0.99) == LATENCY_BOUNDS_MS[-1]


def test_last_at_is_per_table_at_the_top_of_the_hour_and_the_day():
    # 00:00:05 and 00:40 fall in the same day and hour but not the same minute: the 00:00 minute row's
    # newest call is 00:00:05, even though its key equals the hour's and the day's.
    tenant = Tenant.objects.create(slug="acme", name="Acme Corp")
    midnight = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    base = make_records(tenant.id, 2, seed=3)
    for record, at in zip(base, (midnight + timedelta(seconds=5), midnight + timedelta(minutes=40)), strict=True):
        record.update(created_at=at, requested_model="local", variant="", virtual_key_id=None)
    write_batch(base)
    minute = CallRollupMinute.objects.get(tenant_id=tenant.id, bucket=midnight)
    assert minute.requests == 1 and minute.last_at == midnight + timedelta(seconds=5)
    hour = CallRollupHour.objects.get(tenant_id=tenant.id, bucket=midnight)
    day = CallRollupDay.objects.get(tenant_id=tenant.id, bucket=midnight)
    assert hour.last_at == day.last_at == midnight + timedelta(minutes=40)


def test_the_end_user_breakdown_over_days_with_ragged_ends_matches_the_raw_logs():
    """A 7-day range starting and ending mid-day reads whole days from the day table and the ends from
    the hour table: each call counted once, none left out."""
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    rnd = random.Random(3)
    start = T0 - timedelta(days=6, hours=7)  # 03:00, six days before T0
    records = []
    for i in range(400):
        record = make_records(tenant.id, 1, seed=1000 + i)[0]
        record["created_at"] = start + timedelta(
            seconds=rnd.randint(0, int((T0 + timedelta(hours=5) - start).total_seconds()))
        )
        record["end_user"] = rnd.choice(["alice", "bob", "carol"])
        records.append(record)
    write_batch(records)
    logs = CallLog.objects.filter(tenant=tenant)
    board = dashboard(tenant, start=start, end=T0 + timedelta(hours=5))
    assert board.step < timedelta(days=1)  # served by the hour table, users by both
    by_user = {r.label: (r.requests, r.cost_picodollars) for r in board.by_user}
    for user in ("alice", "bob", "carol"):
        raw = logs.filter(end_user=user)
        assert by_user[user] == (raw.count(), raw.aggregate(s=Sum("cost_picodollars"))["s"] or 0)
    # A member sees only their own keys' end users.
    mine = dashboard(tenant, start=start, end=T0 + timedelta(hours=5), key_ids=[11])
    assert {r.label: r.requests for r in mine.by_user} == {
        user: logs.filter(end_user=user, virtual_key_id=11).count()
        for user in ("alice", "bob", "carol")
        if logs.filter(end_user=user, virtual_key_id=11).exists()
    }


def test_an_upsert_names_only_the_buckets_it_fills_and_keeps_the_others():
    """Each batch's statement carries the histogram buckets its calls fill, not all 228 of them (the
    parse cost of the rest was most of a small batch's write); buckets another batch filled are kept."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tenant = Tenant.objects.create(slug="buckets", name="Buckets")
    fast, slow = make_records(tenant.id, 2, seed=3)
    for record, latency in ((fast, 1.0), (slow, 5000.0)):
        record.update(created_at=T0, virtual_key_id=11, requested_model="m", variant="", latency_ms=latency)
        record.update(ttfb_ms=None, status_code=200, error_type="")
    with CaptureQueriesContext(connection) as queries:
        write_batch([fast])
    upsert = next(q["sql"] for q in queries.captured_queries if "observability_callrollupminute" in q["sql"])
    filled = f"lat_b{histogram_bucket(1.0)}"
    assert set(re.findall(r'"((?:ttfb_)?(?:lat_)?b\d+)"', upsert)) == {filled}
    write_batch([slow])

    row = CallRollupMinute.objects.get(tenant_id=tenant.id, bucket=T0, model="m", virtual_key_id=11, variant="")
    buckets = {name: getattr(row, name) for name in (f"lat_b{i}" for i in range(HISTOGRAM_BUCKETS))}
    assert {name: n for name, n in buckets.items() if n is not None} == {
        filled: 1,
        f"lat_b{histogram_bucket(5000.0)}": 1,
    }
    assert row.requests == 2
    assert row.ttfb_count == 0
