"""The A/B comparison read from rollups, for splits with many calls (observability.ab.split_verdict).

Reading a million calls and two million scores took over a second; the hourly rollups hold the same
sums per model and variant: counts, errors, cost, latency sums and sums of squares (for the variances
of the Welch tests) and the latency histogram (for p50 and p95, within HISTOGRAM_RELATIVE_ERROR), and
ScoreRollupHour the scores' counts, sums, sums of squares and positives (kept by triggers, PostgreSQL).

Used when the split has at least GATEWAY_AB_ROLLUP_MIN_CALLS calls in the window (below that, reading
the calls is fast and exact to the second), on PostgreSQL, for the whole tenant (a member's own keys'
view reads the calls). The window starts at the hour `since` falls in. Rollup rows written before the
sums of squares existed hold none: then the calls are read, as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, Sum

from gateway_project.common.money import from_pico
from observability.models import LATENCY_COLUMNS, CallRollupHour, ScoreRollupHour
from observability.rollups import percentile_from_histogram
from observability.selectors import VariantStats


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _variance(n: int, total: float, sumsq: float) -> float:
    # The sample variance from the sums; rounding can leave a tiny negative for constant values.
    return max((sumsq - total * total / n) / (n - 1), 0.0) if n > 1 else 0.0


def applies(tenant_id: int, model: str, variants: list[str], since: datetime, key_ids: list[int] | None) -> bool:
    if key_ids is not None or connection.vendor != "postgresql":
        return False
    calls = CallRollupHour.objects.filter(
        tenant_id=tenant_id, model=model, variant__in=variants, bucket__gte=_hour(since)
    ).aggregate(n=Sum("requests"))["n"]
    return (calls or 0) >= settings.GATEWAY_AB_ROLLUP_MIN_CALLS


def call_groups(tenant_id: int, model: str, variants: list[str], since: datetime) -> list[VariantStats] | None:
    """Each group's calls as split_comparison gives them; None when a rollup row lacks its sums of squares."""
    rows = (
        CallRollupHour.objects.filter(tenant_id=tenant_id, model=model, variant__in=variants, bucket__gte=_hour(since))
        .values("variant")
        .annotate(
            n=Sum("requests"),
            errors=Sum("errors"),
            tokens=Sum("total_tokens"),
            cost=Sum("cost_picodollars"),
            latency=Sum("latency_sum_ms"),
            latency_sq=Sum("latency_sumsq"),
            cost_sq=Sum("cost_sumsq"),
            unsquared=Count("id", filter=Q(requests__gt=0, latency_sumsq=0)),
            **{column: Sum(column) for column in LATENCY_COLUMNS},
        )
        .order_by()
    )
    found: dict[str, dict[str, Any]] = {r["variant"]: r for r in rows}
    if any(r["unsquared"] for r in found.values()):
        return None
    out = []
    for name in variants:
        stats = VariantStats(group=name or "control")
        r = found.get(name)
        if r is not None and r["n"]:
            n = int(r["n"])
            stats.requests, stats.errors, stats.tokens = n, int(r["errors"] or 0), int(r["tokens"] or 0)
            cost = float(r["cost"] or 0)
            stats.cost_usd = from_pico(int(r["cost"] or 0))
            stats.latency_mean = float(r["latency"] or 0) / n
            stats.latency_variance = _variance(n, float(r["latency"] or 0), float(r["latency_sq"] or 0))
            stats.cost_mean = cost / n
            stats.cost_variance = _variance(n, cost, float(r["cost_sq"] or 0))
            histogram = [int(r[column] or 0) for column in LATENCY_COLUMNS]
            stats.p50_ms = percentile_from_histogram(histogram, 0.5)
            stats.p95_ms = percentile_from_histogram(histogram, 0.95)
        out.append(stats)
    return out


def score_rows(tenant_id: int, model: str, variants: list[str], since: datetime) -> list[dict[str, Any]]:
    """(variant, name, n, mean, variance, positives) of the scores, as _score_groups reads them from CallScore."""
    rows = (
        ScoreRollupHour.objects.filter(
            tenant_id=tenant_id, requested_model=model, variant__in=variants, bucket__gte=_hour(since)
        )
        .values("variant", "name")
        .annotate(n=Sum("n"), total=Sum("total"), sumsq=Sum("sumsq"), positives=Sum("positives"))
        .order_by()
    )
    out = []
    for r in rows:
        n = int(r["n"] or 0)
        if n < 1:
            continue
        total = float(r["total"] or 0)
        out.append(
            {
                "variant": r["variant"],
                "name": r["name"],
                "n": n,
                "mean": total / n,
                "variance": _variance(n, total, float(r["sumsq"] or 0)),
                "positives": int(r["positives"] or 0),
            }
        )
    return out
