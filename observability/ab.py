"""The A/B verdict of a model's split: per group its calls, errors, latency, cost and quality scores, and
for each metric the variant's difference from control, its 95 % interval, whether it is significant, and
how many more calls the observed difference needs (observability.abstats does the statistics).

Calls and their figures come from the call log (observability.selectors.split_comparison, one grouped
query); scores from the scores themselves, which carry their call's model and variant (one grouped
query, no join). Which test each metric uses is stated with it: Welch's t-test for means (latency, cost
per call, numeric scores), the two-proportion z-test for rates (errors, a boolean score's share of
positive answers). Score weights are not applied to the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, Variance

from gateway_project.common.money import from_pico
from observability import ab_rollups
from observability.abstats import Comparison, Summary, mean_interval, still_needed, two_proportions, welch
from observability.models import CallScore, ScoreKind
from observability.scores import POSITIVE, definitions_of
from observability.selectors import VariantStats, split_comparison
from tenants.models import Tenant

TESTS = {
    "welch": "Welch's t-test (means)",
    "two-proportion": "two-proportion z-test (rates)",
}


@dataclass(slots=True)
class ScoreGroup:
    """One score's values in one group: count, mean, sample variance, how many were positive (>= 0.5,
    for boolean scores) and the mean's 95 % interval."""

    n: int
    mean: float
    variance: float
    positives: int
    low: float | None = None
    high: float | None = None


@dataclass(slots=True)
class Metric:
    key: str  # "error_rate", "latency_ms", "cost_usd", "score.<name>"
    label: str
    better: str  # "lower" | "higher"
    control: float | None
    variant: float | None
    comparison: Comparison | None
    needed: int | None  # more calls per group the observed difference needs (0: enough)

    @property
    def verdict(self) -> str:
        """ "variant", "control" (the better of the two, significantly) or "" (no significant difference)."""
        c = self.comparison
        if c is None or not c.significant or c.difference == 0:
            return ""
        variant_higher = c.difference > 0
        return "variant" if variant_higher == (self.better == "higher") else "control"

    def as_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "metric": self.key,
            "label": self.label,
            "better": self.better,
            "control": self.control,
            "variant": self.variant,
            "test": c.test if c else None,
            "difference": c.difference if c else None,
            "ci_low": c.low if c else None,
            "ci_high": c.high if c else None,
            "p_value": c.p_value if c else None,
            "significant": c.significant if c else False,
            "better_group": self.verdict or None,
            "calls_still_needed": self.needed,
        }


@dataclass(slots=True)
class Verdict:
    groups: list[VariantStats]
    scores: dict[str, dict[str, ScoreGroup]] = field(default_factory=dict)  # group -> score name -> values
    metrics: list[Metric] = field(default_factory=list)

    def metric(self, key: str) -> Metric | None:
        return next((m for m in self.metrics if m.key == key), None)


def _score_rows(
    tenant: Tenant, model: str, variants: list[str], since: datetime, key_ids: list[int] | None
) -> list[dict[str, Any]]:
    rows = CallScore.objects.filter(
        tenant_id=tenant.id, requested_model=model, variant__in=variants, call_created_at__gte=since
    )
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    return list(
        rows.values("variant", "name")
        .annotate(
            n=Count("id"),
            mean=Avg("value"),
            variance=Variance("value", sample=True),
            positives=Count("id", filter=POSITIVE),
        )
        .order_by()
    )


def _score_groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, ScoreGroup]]:
    out: dict[str, dict[str, ScoreGroup]] = {}
    for r in rows:
        group = ScoreGroup(r["n"], float(r["mean"]), float(r["variance"] or 0.0), r["positives"])
        interval = mean_interval(Summary(group.n, group.mean, group.variance))
        if interval is not None:
            group.low, group.high = interval
        out.setdefault(r["variant"] or "control", {})[r["name"]] = group
    return out


def _summary(n: int, mean: float | None, variance: float | None) -> Summary | None:
    return None if mean is None or n < 1 else Summary(n, mean, variance or 0.0)


def _welch(a: Summary | None, b: Summary | None) -> Comparison | None:
    return welch(a, b) if a is not None and b is not None else None


def split_verdict(
    tenant: Tenant, model: str, variant: str, *, since: datetime, key_ids: list[int] | None = None
) -> Verdict:
    """The comparison of `model`'s control group and `variant` since `since` (of `key_ids`' calls only,
    if given: a member's own, as on the dashboard)."""
    variants = ["", variant] if variant else [""]
    # A split with many calls is read from the rollups (observability.ab_rollups); the rest from the calls.
    groups = None
    if ab_rollups.applies(tenant.id, model, variants, since, key_ids):
        groups = ab_rollups.call_groups(tenant.id, model, variants, since)
    from_rollups = groups is not None
    if groups is None:
        groups = split_comparison(tenant, model, variant, since=since, key_ids=key_ids)
    verdict = Verdict(groups)
    if not variant or len(groups) < 2:
        return verdict
    control, other = groups
    rows = (
        ab_rollups.score_rows(tenant.id, model, variants, since)
        if from_rollups
        else _score_rows(tenant, model, variants, since, key_ids)
    )
    verdict.scores = _score_groups(rows)
    metrics = verdict.metrics
    errors = two_proportions(control.errors, control.requests, other.errors, other.requests)
    metrics.append(
        Metric(
            "error_rate",
            "Error rate",
            "lower",
            control.error_rate,
            other.error_rate,
            errors,
            still_needed(errors, control.requests, other.requests),
        )
    )
    latency = _welch(
        _summary(control.requests, control.latency_mean, control.latency_variance),
        _summary(other.requests, other.latency_mean, other.latency_variance),
    )
    metrics.append(
        Metric(
            "latency_ms",
            "Mean latency (ms)",
            "lower",
            control.latency_mean,
            other.latency_mean,
            latency,
            still_needed(latency, control.requests, other.requests),
        )
    )
    cost = _welch(
        _summary(control.requests, control.cost_mean, control.cost_variance),
        _summary(other.requests, other.cost_mean, other.cost_variance),
    )
    if cost is not None:
        # Compared in picodollars (exact integers in the database), shown in dollars.
        scale = float(from_pico(1))
        cost = Comparison(
            cost.test,
            cost.difference * scale,
            cost.low * scale,
            cost.high * scale,
            cost.p_value,
            cost.needed_per_group,
        )
    metrics.append(
        Metric(
            "cost_usd",
            "Cost per call (USD)",
            "lower",
            None if control.cost_mean is None else control.cost_mean * float(from_pico(1)),
            None if other.cost_mean is None else other.cost_mean * float(from_pico(1)),
            cost,
            still_needed(cost, control.requests, other.requests),
        )
    )
    definitions = definitions_of(tenant.id)
    names = sorted({name for by_name in verdict.scores.values() for name in by_name})
    for name in names:
        a = verdict.scores.get("control", {}).get(name)
        b = verdict.scores.get(variant, {}).get(name)
        kind = (definitions.get(name) or {}).get("kind")
        n_a, n_b = (a.n if a else 0), (b.n if b else 0)
        if kind == ScoreKind.BOOLEAN:
            comparison = two_proportions(a.positives if a else 0, n_a, b.positives if b else 0, n_b)
            label = f"{name}: share positive"
            values = (a.positives / a.n if a else None, b.positives / b.n if b else None)
        else:
            comparison = _welch(
                _summary(n_a, a.mean if a else None, a.variance if a else None),
                _summary(n_b, b.mean if b else None, b.variance if b else None),
            )
            label = f"{name}: mean"
            values = (a.mean if a else None, b.mean if b else None)
        metrics.append(
            Metric(f"score.{name}", label, "higher", *values, comparison, still_needed(comparison, n_a, n_b))
        )
    return verdict


def decide(verdict: Verdict, score: str, *, min_calls: int, significant: bool) -> str:
    """What a split's `stop_when` concludes once each group has `min_calls` scored calls: "variant" when
    its score is higher (significantly so, when `significant`), else "control" (the split ends and the
    control group keeps every call); "" until both groups have enough scored calls."""
    metric = verdict.metric(f"score.{score}")
    groups = [verdict.scores.get(g.group, {}).get(score) for g in verdict.groups]
    if metric is None or len(groups) < 2 or any(g is None or g.n < min_calls for g in groups):
        return ""
    c = metric.comparison
    if c is None:
        return "control"
    if significant:
        return "variant" if metric.verdict == "variant" else "control"
    return "variant" if c.difference > 0 else "control"
