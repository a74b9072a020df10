"""Reads of call logs for the routing console: A/B split comparison and recent per-deployment health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Aggregate, Count, FloatField, Q, Sum

from billing.prices import from_pico
from observability.models import CallLog
from tenants.models import Tenant

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

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def split_comparison(tenant: Tenant, model: str, variant: str, *, since: datetime) -> list[VariantStats]:
    """Calls clients sent for `model` since `since`, control group (CallLog.variant "") and the variant
    (CallLog.variant == `variant`; omitted when `variant` is empty). Errors are answers with status >= 400."""
    variants = [""] + ([variant] if variant else [])
    rows = CallLog.objects.filter(tenant=tenant, requested_model=model, created_at__gte=since, variant__in=variants)
    aggregates = {
        "n": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
        "tokens": Sum("total_tokens"),
        "cost": Sum("cost_picodollars"),
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


def deployment_stats(tenant: Tenant, *, since: datetime) -> dict[int, DeploymentStats]:
    """Per deployment id: upstream attempts since `since` (from CallLog.attempts), how many failed
    (no answer, or status >= 400) and the median attempt latency."""
    latencies: dict[int, list[float]] = {}
    stats: dict[int, DeploymentStats] = {}
    rows = (
        CallLog.objects.filter(tenant=tenant, created_at__gte=since)
        .order_by("-created_at")
        .values_list("attempts", flat=True)[:MAX_HEALTH_ROWS]
    )
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
