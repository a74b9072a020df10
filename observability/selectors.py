"""Reads of call logs: the routing console's A/B comparison and deployment health, the dashboard (from the\nrollups), the log explorer (keyset pages), its detail view and exports."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    Exists,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Variance,
)
from django.db.models.functions import Cast, Coalesce
from django.http import Http404

from gateway_project.common.money import from_pico
from observability.models import (
    HISTOGRAM_BUCKETS,
    LATENCY_COLUMNS,
    TTFB_COLUMNS,
    TTFB_LATENCY_COLUMNS,
    CallBody,
    CallLog,
    CallRollupDay,
    CallRollupHour,
    CallRollupMinute,
    CallScore,
    Evaluator,
    ScoreDefinition,
    TagRollupHour,
    UserRollupDay,
    UserRollupHour,
)
from observability.partitions import DEFAULT_RETENTION_DAYS
from observability.rollups import percentile_from_histogram
from observability.scores import BUILT_IN
from tenants.models import Tenant, VirtualKey

# Bounds on rows read into Python where the database cannot compute percentiles (SQLite) and for the
# health panel, which refreshes every few seconds: the newest rows are the ones that matter.
MAX_SAMPLE = 50_000
MAX_HEALTH_ROWS = 5_000


class _Percentile(Aggregate):
    function = "PERCENTILE_CONT"
    template = "%(function)s(%(p)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (what PostgreSQL's percentile_cont computes)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class VariantStats:
    group: str  # "control" or the variant model
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    # Mean and sample variance of the latency (ms) and of the cost (picodollars) per call: what the
    # A/B verdict's tests read (observability.ab).
    latency_mean: float | None = None
    latency_variance: float | None = None
    cost_mean: float | None = None
    cost_variance: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def split_comparison(
    tenant: Tenant, model: str, variant: str, *, since: datetime, key_ids: list[int] | None = None
) -> list[VariantStats]:
    """Calls clients sent for `model` since `since`, control group (CallLog.variant "") and the variant
    (CallLog.variant == `variant`; omitted when `variant` is empty). Errors are answers with status >= 400.
    `key_ids` limits it to those keys' calls (a member's own), as on the dashboard."""
    variants = [""] + ([variant] if variant else [])
    rows = CallLog.objects.filter(tenant=tenant, requested_model=model, created_at__gte=since, variant__in=variants)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    aggregates = {
        "n": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
        "tokens": Sum("total_tokens"),
        "cost": Sum("cost_picodollars"),
        "latency_mean": Avg("latency_ms"),
        "latency_variance": Variance("latency_ms", sample=True),
        "cost_mean": Avg(Coalesce("cost_picodollars", 0), output_field=FloatField()),
        "cost_variance": Variance(Coalesce("cost_picodollars", 0), sample=True, output_field=FloatField()),
    }
    postgres = connection.vendor == "postgresql"
    if postgres:
        aggregates["p50"] = _Percentile("latency_ms", p=0.5)
        aggregates["p95"] = _Percentile("latency_ms", p=0.95)
    found = {r["variant"]: r for r in rows.values("variant").annotate(**aggregates).order_by()}
    out = []
    for name in variants:
        stats = VariantStats(group=name or "control")
        r = found.get(name)
        if r is not None:
            stats.requests, stats.errors = r["n"], r["errors"]
            stats.tokens = r["tokens"] or 0
            stats.cost_usd = from_pico(r["cost"] or 0)
            for name_ in ("latency_mean", "latency_variance", "cost_mean", "cost_variance"):
                value = r[name_]
                setattr(stats, name_, None if value is None else float(value))
            if postgres:
                stats.p50_ms, stats.p95_ms = r["p50"], r["p95"]
            else:
                latencies = list(
                    rows.filter(variant=name).order_by("-created_at").values_list("latency_ms", flat=True)[:MAX_SAMPLE]
                )
                stats.p50_ms, stats.p95_ms = percentile(latencies, 0.5), percentile(latencies, 0.95)
        out.append(stats)
    return out


@dataclass
class DeploymentStats:
    attempts: int = 0
    errors: int = 0
    p50_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None


def deployment_stats(
    tenant: Tenant, *, since: datetime, key_ids: list[int] | None = None
) -> dict[int, DeploymentStats]:
    """Per deployment id: upstream attempts since `since` (from CallLog.attempts), how many failed
    (no answer, or status >= 400) and the median attempt latency; of `key_ids`' calls only, if given."""
    latencies: dict[int, list[float]] = {}
    stats: dict[int, DeploymentStats] = {}
    logs = CallLog.objects.filter(tenant=tenant, created_at__gte=since)
    if key_ids is not None:
        logs = logs.filter(virtual_key_id__in=key_ids)
    rows = logs.order_by("-created_at").values_list("attempts", flat=True)[:MAX_HEALTH_ROWS]
    for attempts in rows:
        for a in attempts or ():
            if not isinstance(a, dict) or not isinstance(a.get("deployment"), int):
                continue
            dep_id = a["deployment"]
            s = stats.setdefault(dep_id, DeploymentStats())
            s.attempts += 1
            status = a.get("status") or 0
            if not isinstance(status, int) or status == 0 or status >= 400 or a.get("error"):
                s.errors += 1
            latency = a.get("latency_ms")
            if isinstance(latency, (int, float)):
                latencies.setdefault(dep_id, []).append(float(latency))
    for dep_id, values in latencies.items():
        stats[dep_id].p50_ms = percentile(values, 0.5)
    return stats


# --- Dashboard: read from the rollups, never from the raw logs -------------------------------------

# Ranges up to MINUTE_TABLE_MAX read the per-minute rollup, up to HOUR_TABLE_MAX the per-hour one, longer
# ones the per-day one: a chart never sums more than a few thousand buckets of rows.
MINUTE_TABLE_MAX = timedelta(hours=6)
HOUR_TABLE_MAX = timedelta(days=8)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
# At most this many points per chart: finer buckets are summed into wider ones.
MAX_POINTS = 120
BREAKDOWN_LIMIT = 20


@dataclass
class Totals:
    """Sums of rollup rows. Latency percentiles count every call; TTFT percentiles count the calls that got
    a first byte (`ttfb_calls`), and `ttfb_latency_p` is the latency of those same calls."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_picodollars: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)
    ttfb: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)
    ttfb_latency: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)

    def add(self, row: dict) -> None:
        self.requests += row["requests"] or 0
        self.errors += row["errors"] or 0
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.completion_tokens += row["completion_tokens"] or 0
        self.total_tokens += row["total_tokens"] or 0
        self.cost_picodollars += row["cost_picodollars"] or 0
        for counts, columns in (
            (self.latency, LATENCY_COLUMNS),
            (self.ttfb, TTFB_COLUMNS),
            (self.ttfb_latency, TTFB_LATENCY_COLUMNS),
        ):
            for i, name in enumerate(columns):
                counts[i] += row.get(name) or 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_usd(self) -> Decimal:
        return from_pico(self.cost_picodollars)

    @property
    def ttfb_calls(self) -> int:
        return sum(self.ttfb)

    def latency_p(self, p: float) -> float | None:
        return percentile_from_histogram(self.latency, p)

    def ttfb_latency_p(self, p: float) -> float | None:
        return percentile_from_histogram(self.ttfb_latency, p)

    def ttfb_p(self, p: float) -> float | None:
        # Each call's first byte comes before its end, so the exact TTFT percentile never exceeds the latency
        # one of the same calls; two estimates in one bucket could cross, the clamp keeps that true.
        ttfb = percentile_from_histogram(self.ttfb, p)
        latency = self.ttfb_latency_p(p)
        return ttfb if ttfb is None or latency is None else min(ttfb, latency)

    @property
    def p50(self) -> float | None:
        return self.latency_p(0.5)

    @property
    def p95(self) -> float | None:
        return self.latency_p(0.95)

    @property
    def p99(self) -> float | None:
        return self.latency_p(0.99)

    @property
    def ttfb_p50(self) -> float | None:
        return self.ttfb_p(0.5)

    @property
    def ttfb_p95(self) -> float | None:
        return self.ttfb_p(0.95)

    @property
    def ttfb_p99(self) -> float | None:
        return self.ttfb_p(0.99)

    @property
    def ttfb_latency_p50(self) -> float | None:
        return self.ttfb_latency_p(0.5)

    @property
    def ttfb_latency_p95(self) -> float | None:
        return self.ttfb_latency_p(0.95)

    @property
    def ttfb_latency_p99(self) -> float | None:
        return self.ttfb_latency_p(0.99)


@dataclass
class Point:
    at: datetime
    totals: Totals


@dataclass
class BreakdownRow:
    label: str
    value: Any  # the filter value (key id, model name, ...)
    requests: int
    errors: int
    total_tokens: int
    cost_picodollars: int

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_usd(self) -> Decimal:
        return from_pico(self.cost_picodollars)


@dataclass
class Dashboard:
    start: datetime
    end: datetime
    step: timedelta
    totals: Totals
    series: list[Point]
    by_model: list[BreakdownRow]
    by_key: list[BreakdownRow]
    by_user: list[BreakdownRow]
    by_tag: list[BreakdownRow]
    by_variant: list[BreakdownRow]


_SUM_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_picodollars")


def _rollup_rows(tenant_id: int, start: datetime, end: datetime, key_ids: list[int] | None, *, unit: timedelta):
    model = {MINUTE: CallRollupMinute, HOUR: CallRollupHour}.get(unit, CallRollupDay)
    rows = model.objects.filter(tenant_id=tenant_id, bucket__gte=start, bucket__lt=end)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    return rows


def bucket_unit(start: datetime, end: datetime) -> timedelta:
    """The bucket width of the rollup that serves [start, end)."""
    if end - start <= MINUTE_TABLE_MAX:
        return MINUTE
    return HOUR if end - start <= HOUR_TABLE_MAX else DAY


def align(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The range widened to whole buckets of the table that serves it (the day table counts whole UTC days)."""
    unit = bucket_unit(start, end)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    start = epoch + ((start - epoch) // unit) * unit
    end_floor = epoch + ((end - epoch) // unit) * unit
    return start, end_floor if end_floor == end else end_floor + unit


def _step_for(start: datetime, end: datetime, unit: timedelta) -> timedelta:
    units = max(1, -(-int((end - start) / unit) // MAX_POINTS))
    # Round to steps that read well on an axis.
    for nice in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440):
        if nice >= units:
            return unit * nice
    return unit * units


def _breakdown(rows, field_name: str, label=lambda v: str(v)) -> list[BreakdownRow]:
    found = (
        rows.values(field_name)
        .annotate(**{f"s_{f}": Sum(f) for f in ("requests", "errors", "total_tokens", "cost_picodollars")})
        .order_by("-s_requests", field_name)[:BREAKDOWN_LIMIT]
    )
    return [
        BreakdownRow(
            label=label(r[field_name]),
            value=r[field_name],
            requests=r["s_requests"] or 0,
            errors=r["s_errors"] or 0,
            total_tokens=r["s_total_tokens"] or 0,
            cost_picodollars=r["s_cost_picodollars"] or 0,
        )
        for r in found
    ]


def dashboard(tenant: Tenant, *, start: datetime, end: datetime, key_ids: list[int] | None = None) -> Dashboard:
    """Totals, percentiles, a time series and breakdowns for [start, end), all from the rollups.

    `key_ids` limits everything to those keys (a member's own keys); None is the whole tenant.
    """
    unit = bucket_unit(start, end)
    start, end = align(start, end)
    rows = _rollup_rows(tenant.id, start, end, key_ids, unit=unit)
    step = _step_for(start, end, unit)
    sums = {f: Sum(f) for f in _SUM_FIELDS + LATENCY_COLUMNS + TTFB_COLUMNS + TTFB_LATENCY_COLUMNS}
    totals = Totals()
    points: dict[datetime, Totals] = {}
    for r in rows.values("bucket").annotate(**{f"s_{k}": v for k, v in sums.items()}).order_by("bucket"):
        row = {k: r[f"s_{k}"] for k in sums}
        totals.add(row)
        slot = start + ((r["bucket"] - start) // step) * step
        points.setdefault(slot, Totals()).add(row)
    series = []
    at = start
    while at < end:
        series.append(Point(at=at, totals=points.get(at, Totals())))
        at += step
    key_names = dict(VirtualKey.objects.filter(tenant=tenant).values_list("id", "name"))
    # End users and tags have rollups of their own, per hour (and per day for end users): a range shorter
    # than an hour reads whole hours.
    tags = TagRollupHour.objects.filter(tenant_id=tenant.id, bucket__gte=_hour_floor(start), bucket__lt=end)
    if key_ids is not None:
        tags = tags.filter(virtual_key_id__in=key_ids)
    return Dashboard(
        start=start,
        end=end,
        step=step,
        totals=totals,
        series=series,
        by_model=_breakdown(rows, "model", lambda v: v or "(none)"),
        by_key=_breakdown(rows, "virtual_key_id", lambda v: key_names.get(v, f"deleted key {v}") if v else "(no key)"),
        by_user=_user_breakdown(tenant.id, start, end, key_ids, unit),
        by_tag=_breakdown(tags, "tag"),
        by_variant=_breakdown(rows, "variant", lambda v: v or "control"),
    )


def _user_breakdown(
    tenant_id: int, start: datetime, end: datetime, key_ids: list[int] | None, unit: timedelta
) -> list[BreakdownRow]:
    """The end users with the most calls in [start, end). Thousands of end users make the hour table
    big: a range over whole UTC days reads those days from the day table and only its ragged ends
    from the hour table (7 days: at most 48 hour buckets and 6 day buckets per user instead of 168)."""
    start = _hour_floor(start)
    first_day = start.replace(hour=0) + (DAY if start.hour else timedelta(0))
    last_day = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == DAY:
        parts = [(UserRollupDay, start, end)]
    elif last_day <= first_day:
        parts = [(UserRollupHour, start, end)]
    else:
        parts = [
            (UserRollupHour, start, first_day),
            (UserRollupDay, first_day, last_day),
            (UserRollupHour, last_day, end),
        ]
    selects, params = [], []
    for model, since, until in parts:
        if since >= until:
            continue
        rows = model.objects.filter(tenant_id=tenant_id, bucket__gte=since, bucket__lt=until)
        if key_ids is not None:
            rows = rows.filter(virtual_key_id__in=key_ids)
        sql, part_params = rows.values_list(
            "end_user", "requests", "errors", "total_tokens", "cost_picodollars"
        ).query.sql_with_params()
        selects.append(sql)
        params.extend(part_params)
    if not selects:
        return []
    # The parts select the same columns (end_user, requests, errors, total_tokens, cost_picodollars).
    union = " UNION ALL ".join(f"SELECT * FROM ({sql}) AS p{i}" for i, sql in enumerate(selects))
    query = (
        "SELECT end_user, SUM(requests), SUM(errors), SUM(total_tokens), SUM(cost_picodollars) "
        f"FROM ({union}) AS u GROUP BY end_user ORDER BY 2 DESC, 1 LIMIT {BREAKDOWN_LIMIT}"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        found = cursor.fetchall()
    return [
        BreakdownRow(
            label=str(user),
            value=user,
            requests=int(requests or 0),
            errors=int(errors or 0),
            total_tokens=int(tokens or 0),
            cost_picodollars=int(cost or 0),
        )
        for user, requests, errors, tokens, cost in found
    ]


def _hour_floor(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class KeyUsage:
    calls: int
    cost_picodollars: int
    last_at: datetime | None

    @property
    def cost_usd(self) -> Decimal:
        return from_pico(self.cost_picodollars)


def key_usage(
    tenant: Tenant, *, start: datetime, end: datetime, key_ids: list[int] | None = None
) -> dict[int, KeyUsage]:
    """Per key id: calls and spend in [start, end) (whole hours) from the hour rollup, and its last use ever."""
    start = _hour_floor(start)
    rows = CallRollupHour.objects.filter(tenant_id=tenant.id)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    in_range = (
        rows.filter(bucket__gte=start, bucket__lt=end)
        .values("virtual_key_id")
        .annotate(n=Sum("requests"), c=Sum("cost_picodollars"))
        .order_by()
    )
    usage = {r["virtual_key_id"]: KeyUsage(r["n"] or 0, r["c"] or 0, None) for r in in_range}
    for r in rows.values("virtual_key_id").annotate(m=Max("last_at")).order_by():
        usage.setdefault(r["virtual_key_id"], KeyUsage(0, 0, None)).last_at = r["m"]
    return usage


@dataclass
class PeriodUsage:
    since: datetime  # on a whole UTC hour: the rollup's buckets are counted whole
    calls: int
    cost_picodollars: int

    @property
    def cost_usd(self) -> Decimal:
        return from_pico(self.cost_picodollars)


@dataclass
class KeyActivity:
    last_24_hours: PeriodUsage
    last_30_days: PeriodUsage
    last_at: datetime | None
    kept_days: int
    # True only when the key is younger than the tenant's log retention: an older key may have been used
    # before what the rollups still hold.
    never_used: bool


def key_activity(tenant: Tenant, key: VirtualKey, *, now: datetime) -> KeyActivity:
    """One key's calls and spend in the last 24 hours (the dashboard's default range) and the last 30 days
    (the spend page's), in whole UTC hours from the hour rollup, and its last use.

    One query over the key's last 30 days of hour rows; a key idle that long costs a second one, on the day
    rollup (24 times fewer rows), for a last use further back.
    """
    day_start = _hour_floor(now - timedelta(hours=24))
    month_start = _hour_floor(now - timedelta(days=30))
    rows = CallRollupHour.objects.filter(tenant_id=tenant.id, virtual_key_id=key.id)
    in_day = Q(bucket__gte=day_start)
    found = rows.filter(bucket__gte=month_start).aggregate(
        calls=Sum("requests"),
        cost=Sum("cost_picodollars"),
        day_calls=Sum("requests", filter=in_day),
        day_cost=Sum("cost_picodollars", filter=in_day),
        last_at=Max("last_at"),
    )
    last_at = found["last_at"]
    if last_at is None:
        last_at = CallRollupDay.objects.filter(tenant_id=tenant.id, virtual_key_id=key.id).aggregate(m=Max("last_at"))[
            "m"
        ]
    # Rollups are purged with the call log (observability.partitions), at the tenant's retention.
    kept_days = tenant.log_retention_days or DEFAULT_RETENTION_DAYS
    return KeyActivity(
        last_24_hours=PeriodUsage(day_start, found["day_calls"] or 0, found["day_cost"] or 0),
        last_30_days=PeriodUsage(month_start, found["calls"] or 0, found["cost"] or 0),
        last_at=last_at,
        kept_days=kept_days,
        never_used=last_at is None and key.created_at >= now - timedelta(days=kept_days),
    )


@dataclass
class VariantUsage:
    model: str
    variant: str
    requests: int
    errors: int
    total_tokens: int
    cost_picodollars: int

    @property
    def cost_usd(self) -> Decimal:
        return from_pico(self.cost_picodollars)


def variant_usage(
    tenant: Tenant, *, start: datetime, end: datetime, key_ids: list[int] | None = None
) -> list[VariantUsage]:
    """Per (model asked for, A/B variant): calls, errors, tokens and spend in [start, end), whole hours."""
    rows = CallRollupHour.objects.filter(tenant_id=tenant.id, bucket__gte=_hour_floor(start), bucket__lt=end)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    found = (
        rows.values("model", "variant")
        .annotate(n=Sum("requests"), e=Sum("errors"), t=Sum("total_tokens"), c=Sum("cost_picodollars"))
        .order_by("model", "variant")
    )
    return [VariantUsage(r["model"], r["variant"], r["n"] or 0, r["e"] or 0, r["t"] or 0, r["c"] or 0) for r in found]


# --- Log explorer: keyset pagination on (tenant, created_at, id) -----------------------------------

PAGE_SIZE = 50
EXPORT_CHUNK = 2000
STATUS_CLASSES = {"2xx": (200, 300), "3xx": (300, 400), "4xx": (400, 500), "5xx": (500, 600)}


@dataclass
class LogFilters:
    since: datetime | None = None
    until: datetime | None = None
    key_id: int | None = None
    model: str = ""
    status: str = ""  # "2xx", "4xx", "5xx", "error", or an exact code
    end_user: str = ""
    tag: str = ""
    request_id: str = ""
    # (name, comparison "" | "=" | ">=" | "<=" | ">" | "<", number): calls with such a score, any source.
    score: tuple[str, str, float | None] | None = None


def filtered_logs(tenant: Tenant, filters: LogFilters, *, key_ids: list[int] | None = None) -> QuerySet[CallLog]:
    """The tenant's call logs matching `filters`, newest first; `key_ids` restricts to those keys."""
    rows = CallLog.objects.filter(tenant=tenant)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    if filters.since:
        rows = rows.filter(created_at__gte=filters.since)
    if filters.until:
        rows = rows.filter(created_at__lt=filters.until)
    if filters.key_id is not None:
        rows = rows.filter(virtual_key_id=filters.key_id)
    if filters.model:
        rows = rows.filter(requested_model=filters.model)
    if filters.status in STATUS_CLASSES:
        low, high = STATUS_CLASSES[filters.status]
        rows = rows.filter(status_code__gte=low, status_code__lt=high)
    elif filters.status == "error":
        rows = rows.filter(Q(status_code__gte=400) | ~Q(error_type=""))
    elif filters.status.isdigit():
        rows = rows.filter(status_code=int(filters.status))
    if filters.end_user:
        rows = rows.filter(end_user=filters.end_user)
    if filters.tag:
        if connection.features.supports_json_field_contains:
            rows = rows.filter(tags__contains=[filters.tag])
        else:  # SQLite (development): match the tag as a JSON string in the stored list
            tags_text = Cast("tags", TextField())
            rows = rows.annotate(tags_text=tags_text).filter(tags_text__contains=orjson.dumps(filters.tag).decode())
    if filters.request_id:
        rows = rows.filter(request_id=filters.request_id)
    if filters.score is not None:
        name, op, number = filters.score
        scores = CallScore.objects.filter(tenant_id=tenant.id, name=name)
        if op and number is not None:
            lookup = {"=": "value", ">=": "value__gte", "<=": "value__lte", ">": "value__gt", "<": "value__lt"}[op]
            scores = scores.filter(**{lookup: number})
        rows = rows.filter(call_id__in=scores.values("call_id"))
    return rows.order_by("-created_at", "-id")


def encode_cursor(row: CallLog) -> str:
    return f"{row.created_at.timestamp():.6f}_{row.id}"


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    at, _, row_id = cursor.partition("_")
    try:
        return datetime.fromtimestamp(float(at), tz=UTC), int(row_id)
    except (ValueError, OverflowError, OSError):
        return None


def after_cursor(rows: QuerySet[CallLog], position: tuple[datetime, int] | None) -> QuerySet[CallLog]:
    """Rows strictly older than `position` in (created_at, id) order: no gap, no duplicate."""
    if position is None:
        return rows
    at, row_id = position
    return rows.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=row_id))


def log_page(
    tenant: Tenant,
    filters: LogFilters,
    *,
    key_ids: list[int] | None = None,
    cursor: str = "",
    size: int = PAGE_SIZE,
    call_ids: list[str] | None = None,
) -> tuple[list[CallLog], str]:
    """One page of logs and the cursor of the next page ("" on the last page); `call_ids` restricts to
    those calls (a score filter)."""
    rows = filtered_logs(tenant, filters, key_ids=key_ids)
    if call_ids is not None:
        rows = rows.filter(call_id__in=call_ids)
    rows = after_cursor(rows, decode_cursor(cursor) if cursor else None)
    page = list(rows[: size + 1])
    more = len(page) > size
    page = page[:size]
    return page, encode_cursor(page[-1]) if more and page else ""


def _score_cursor(row: CallLog) -> str:
    return f"s{row.score_value!r}_{encode_cursor(row)}"  # type: ignore[attr-defined]


def _decode_score_cursor(cursor: str) -> tuple[float, datetime, int] | None:
    value, _, rest = cursor.partition("_")
    position = decode_cursor(rest)
    try:
        number = float(value)
    except ValueError:
        return None
    return (number, *position) if position is not None and math.isfinite(number) else None


def score_sorted_page(
    tenant: Tenant,
    filters: LogFilters,
    *,
    name: str,
    ascending: bool = False,
    key_ids: list[int] | None = None,
    cursor: str = "",
    size: int = PAGE_SIZE,
) -> tuple[list[CallLog], str]:
    """One page of logs sorted by the score `name` (each call's mean over its sources, on `score_value`),
    ties newest first, then the calls without that score, newest first; and the next page's cursor.

    Only the calls having the score are sorted (a semi-join on the score's unique index, within the
    filters' time range, which the explorer always bounds); the others are read in the explorer's own
    index order with an anti-join, a page at a time. Cursors: "s<value>_<time>_<id>" among the scored
    calls, "u<time>_<id>" (or "u" at their start) among the others."""
    rows = filtered_logs(tenant, filters, key_ids=key_ids)
    scores = CallScore.objects.filter(tenant_id=tenant.id, name=name)
    if filters.since:
        scores = scores.filter(call_created_at__gte=filters.since)
    if filters.until:
        scores = scores.filter(call_created_at__lt=filters.until)
    has_score = Exists(scores.filter(call_id=OuterRef("call_id")))
    page: list[CallLog] = []
    unscored_from = None
    if cursor.startswith("u"):
        unscored_from = decode_cursor(cursor[1:]) if len(cursor) > 1 else None
    else:
        mean = scores.filter(call_id=OuterRef("call_id")).order_by().values("call_id").annotate(v=Avg("value"))
        scored = rows.filter(has_score).annotate(score_value=Subquery(mean.values("v")[:1], output_field=FloatField()))
        value = F("score_value")
        scored = scored.order_by(value.asc() if ascending else value.desc(), "-created_at", "-id")
        position = _decode_score_cursor(cursor[1:]) if cursor.startswith("s") else None
        if position is not None:
            number, at, row_id = position
            beyond = Q(score_value__gt=number) if ascending else Q(score_value__lt=number)
            older = Q(created_at__lt=at) | Q(created_at=at, id__lt=row_id)
            # Each mention of score_value is its subquery again: two, not three.
            scored = scored.filter(beyond | (Q(score_value=number) & older))
        page = list(scored[: size + 1])
        if len(page) > size:
            return page[:size], _score_cursor(page[size - 1])
    need = size - len(page)
    rest = list(after_cursor(rows.filter(~has_score), unscored_from)[: need + 1])
    for row in rest:
        row.score_value = None  # type: ignore[attr-defined]
    page += rest[:need]
    if len(rest) <= need:
        return page, ""
    return page, "u" + (encode_cursor(rest[need - 1]) if need else "")


def score_names(tenant: Tenant) -> list[str]:
    """The scores the tenant's calls may have: the built-in ones, its defined ones and its evaluators' (a
    rule's score needs no definition)."""
    names = set(BUILT_IN)
    names.update(ScoreDefinition.objects.filter(tenant=tenant).values_list("name", flat=True))
    names.update(Evaluator.objects.filter(tenant=tenant).values_list("score", flat=True))
    return sorted(names)


def iter_log_chunks(rows: QuerySet[CallLog], chunk: int = EXPORT_CHUNK) -> Iterator[list[CallLog]]:
    """All of `rows` (ordered newest first) in chunks, each one indexed LIMIT query after the last: an
    export of millions of rows never holds more than one chunk, and no long transaction stays open."""
    position = None
    while True:
        page = list(after_cursor(rows, position)[:chunk])
        if not page:
            return
        yield page
        if len(page) < chunk:
            return
        position = (page[-1].created_at, page[-1].id)


def export_estimate(tenant: Tenant, filters: LogFilters, *, key_ids: list[int] | None = None) -> int | None:
    """How many rows an export will have, from the rollups (for the progress bar): exact for filters the
    rollups know (time in whole buckets, key, and model or end user), an upper bound otherwise; None without a
    time range."""
    if filters.since is None:
        return None
    end = filters.until or datetime.now(UTC)
    unit = bucket_unit(filters.since, end)
    start, end = align(filters.since, end)
    if filters.end_user:
        rows = (UserRollupDay if unit == DAY else UserRollupHour).objects.filter(
            tenant_id=tenant.id, end_user=filters.end_user, bucket__gte=_hour_floor(start), bucket__lt=end
        )
        if key_ids is not None:
            rows = rows.filter(virtual_key_id__in=key_ids)
    else:
        rows = _rollup_rows(tenant.id, start, end, key_ids, unit=unit)
        if filters.model:
            rows = rows.filter(model=filters.model)
    if filters.key_id is not None:
        rows = rows.filter(virtual_key_id=filters.key_id)
    return int(rows.aggregate(n=Sum("requests"))["n"] or 0)


def access_log(tenant: Tenant, log_id: int, *, key_ids: list[int] | None = None) -> CallLog:
    """One call log of the tenant (and of `key_ids` when given); 404 otherwise."""
    rows = CallLog.objects.filter(tenant=tenant, id=log_id)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    log = rows.first()
    if log is None:
        raise Http404("No such call log in this tenant.")
    return log


def log_by_request_id(tenant: Tenant, request_id: str, *, key_ids: list[int] | None = None) -> CallLog | None:
    rows = CallLog.objects.filter(tenant=tenant, request_id=request_id)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    return rows.order_by("-created_at").first()


def body_of(log: CallLog) -> CallBody | None:
    """The bodies of this call: its request id (which a client may choose, and reuse) and its start time,
    which the body row shares with the log row (written from the same record)."""
    return CallBody.objects.filter(
        tenant_id=log.tenant_id, request_id=log.request_id, created_at=log.created_at
    ).first()


# --- Evaluators page ------------------------------------------------------------------------------

RECENT_CALLS = 20


def tenant_evaluators(tenant: Tenant) -> QuerySet[Evaluator]:
    return Evaluator.objects.filter(tenant=tenant).order_by("name")


def score_definitions(tenant: Tenant) -> QuerySet[ScoreDefinition]:
    return ScoreDefinition.objects.filter(tenant=tenant).order_by("name")


@dataclass(frozen=True)
class RecentCall:
    body_id: int
    created_at: datetime
    request_id: str
    model: str  # "" when its log row is gone (retention purges both, a moment apart)
    status_code: int | None


def recent_calls_with_bodies(tenant: Tenant, *, limit: int = RECENT_CALLS) -> list[RecentCall]:
    """The tenant's last calls whose bodies are stored (newest first), to try an evaluator on."""
    bodies = list(
        CallBody.objects.filter(tenant_id=tenant.id)
        .order_by("-created_at")
        .values_list("id", "created_at", "request_id")[:limit]
    )
    if not bodies:
        return []
    # A body shares its call's request id and start time (body_of); one indexed read for all of them.
    logs = {
        (request_id, created_at): (model, status)
        for request_id, created_at, model, status in CallLog.objects.filter(
            tenant=tenant, request_id__in={b[2] for b in bodies}, created_at__gte=min(b[1] for b in bodies)
        ).values_list("request_id", "created_at", "requested_model", "status_code")
    }
    return [
        RecentCall(body_id, at, request_id, *logs.get((request_id, at), ("", None)))
        for body_id, at, request_id in bodies
    ]


def body_by_id(tenant: Tenant, body_id: int) -> CallBody | None:
    return CallBody.objects.filter(tenant_id=tenant.id, id=body_id).first()


def calls_stored(tenant_id: int, request_ids: list[str], *, since: datetime) -> list[str]:
    """Which of these calls (by request id) have their log row, and so their ledger entry, stored."""
    found: set[str] = set()
    for start in range(0, len(request_ids), 1000):
        chunk = request_ids[start : start + 1000]
        found.update(
            CallLog.objects.filter(tenant_id=tenant_id, request_id__in=chunk, created_at__gte=since).values_list(
                "request_id", flat=True
            )
        )
    return sorted(found)
