"""Reads for money: the spend ledger (totals, breakdowns, budget usage, reconciliation), rate limits,
prices, plans and invoices. Nothing here writes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Min, Q, QuerySet, Sum
from django.http import Http404

from billing.invoice_rules import CLOSED, month_last_day, round_total
from billing.models import (
    BillingSettings,
    Budget,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LimitScope,
    LineKind,
    Plan,
    PriceOverride,
    RateLimit,
    SpendLedger,
    TagSpend,
)
from billing.periods import period_start
from gateway_project.common.crypto import user_pseudonym
from gateway_project.common.money import Price, find_price, format_usd, from_pico, shipped_prices
from observability.models import CallLog, CallRollupDay
from routing.models import ModelDeployment
from tenants import permissions
from tenants.models import Role, Tenant, VirtualKey
from tenants.permissions import TenantAccess


def _ledger(tenant_id: int, since: date | None = None, until: date | None = None):
    rows = SpendLedger.objects.filter(tenant_id=tenant_id)
    if since:
        rows = rows.filter(day__gte=since)
    if until:
        rows = rows.filter(day__lte=until)
    return rows


def spent_in_period_pico(budget: Budget, *, now: datetime, tz: tzinfo) -> int:
    start = period_start(budget.period, now, tz)
    kind, _, value = budget.scope.partition(":")
    if kind == "tag":
        rows = TagSpend.objects.filter(tenant_id=budget.tenant_id, tag=value)
        if start:
            rows = rows.filter(day__gte=start)
        return int(rows.aggregate(s=Sum("cost_picodollars"))["s"] or 0)
    rows = _ledger(budget.tenant_id, since=start)
    if kind == "key":
        rows = rows.filter(
            virtual_key_id__in=VirtualKey.objects.filter(tenant_id=budget.tenant_id, name=value).values("id")
        )
    elif kind == "user":
        # The ledger holds the pseudonym of an id the data policy replaced (proxy.steps.pii).
        rows = rows.filter(end_user__in=[value, user_pseudonym(budget.tenant_id, value)])
    return int(rows.aggregate(s=Sum("cost_picodollars"))["s"] or 0)


def spend_summary(tenant: Tenant, *, since: date | None = None, until: date | None = None) -> dict:
    """The `gateway spend --json` document: exact decimal strings."""
    rows = _ledger(tenant.id, since, until)
    total = int(rows.aggregate(s=Sum("cost_picodollars"))["s"] or 0)
    key_names = dict(VirtualKey.objects.filter(tenant=tenant).values_list("id", "name"))
    by_key: dict[str, int] = {}
    for key_id, cost in (
        rows.values_list("virtual_key_id").annotate(s=Sum("cost_picodollars")).values_list("virtual_key_id", "s")
    ):
        name = key_names.get(key_id, f"deleted-key-{key_id}")
        by_key[name] = by_key.get(name, 0) + int(cost or 0)
    by_model = {
        model: int(cost or 0)
        for model, cost in rows.values_list("model").annotate(s=Sum("cost_picodollars")).values_list("model", "s")
    }
    return {
        "total_usd": format_usd(from_pico(total)),
        "by_key": {k: format_usd(from_pico(v)) for k, v in sorted(by_key.items())},
        "by_model": {k: format_usd(from_pico(v)) for k, v in sorted(by_model.items())},
    }


def top_spenders(tenant_id: int, *, since: date | None, limit: int = 5) -> tuple[list, list]:
    rows = _ledger(tenant_id, since)
    key_names = dict(VirtualKey.objects.filter(tenant_id=tenant_id).values_list("id", "name"))
    keys = [
        (key_names.get(k, f"key {k}"), from_pico(int(c or 0)))
        for k, c in rows.values_list("virtual_key_id")
        .annotate(s=Sum("cost_picodollars"))
        .order_by("-s")
        .values_list("virtual_key_id", "s")[:limit]
    ]
    models = [
        (m, from_pico(int(c or 0)))
        for m, c in rows.values_list("model")
        .annotate(s=Sum("cost_picodollars"))
        .order_by("-s")
        .values_list("model", "s")[:limit]
    ]
    return keys, models


@dataclass
class Difference:
    tenant: str
    day: str
    what: str
    ledger: Decimal
    call_logs: Decimal


@dataclass
class ReconcileReport:
    days_checked: int = 0  # against the call-log rows
    days_against_rollups: int = 0  # their rows are past the tenant's retention: against the day rollups
    days_skipped: int = 0  # past retention, and the tenant's days are not UTC days as the rollups' are
    differences: int = 0


def reconcile(tenant: Tenant | None = None) -> list[Difference]:
    """Every difference between the ledger and the call logs (see reconcile_days), all days."""
    diffs: list[Difference] = []
    for t in [tenant] if tenant else Tenant.objects.all():
        reconcile_days(t, on_difference=diffs.append)
    return diffs


def reconcile_days(
    tenant: Tenant,
    *,
    since: date | None = None,
    until: date | None = None,
    on_difference: Any = None,
    today: date | None = None,
) -> ReconcileReport:
    """The ledger against the call logs, day by day in [since, until) (tenant time zone), row for row
    (day, key, end user, model) and per tag; `on_difference(Difference)` is called as each is found.

    One day at a time, each day's sums computed by the database over that day's partitions only, so
    memory stays bounded however many rows the period holds. Days whose call-log rows are past the
    tenant's retention are checked against the day rollups instead (per key and model), when the
    tenant counts its days in UTC as the rollups do; otherwise they are counted as skipped.
    """
    report = ReconcileReport()
    tz = tenant_timezone(tenant.id)
    today = today or datetime.now(tz).date()
    first = since
    if first is None:
        # The earliest day either side holds: a ledger with no call logs is as wrong as the reverse.
        ledger_first = SpendLedger.objects.filter(tenant=tenant).aggregate(d=Min("day"))["d"]
        oldest_call = CallLog.objects.filter(tenant=tenant).aggregate(t=Min("created_at"))["t"]
        candidates = [d for d in (ledger_first, oldest_call.date() - timedelta(days=1) if oldest_call else None) if d]
        if not candidates:
            return report
        first = min(candidates)
    last = until - timedelta(days=1) if until else today
    retained_from = today - timedelta(days=tenant.log_retention_days)
    utc_days = getattr(tz, "key", "") in ("UTC", "Etc/UTC")
    day = first
    while day <= last:
        if day >= retained_from:
            found = _reconcile_day(tenant, day)
            report.days_checked += 1
        elif utc_days:
            found = _reconcile_day_with_rollups(tenant, day)
            report.days_against_rollups += 1
        else:
            found = []
            report.days_skipped += 1
        report.differences += len(found)
        if on_difference is not None:
            for diff in found:
                on_difference(diff)
        day += timedelta(days=1)
    return report


def _reconcile_day(tenant: Tenant, day: date) -> list[Difference]:
    # The rows of a tenant-time-zone day lie within a day either side in UTC: partition pruning.
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    priced = CallLog.objects.filter(
        tenant=tenant,
        day=day,
        cost_picodollars__isnull=False,
        created_at__gte=start - timedelta(days=1),
        created_at__lt=start + timedelta(days=2),
    )
    logs = {
        row[:3]: int(row[3] or 0)
        for row in priced.values_list("virtual_key_id", "end_user", "requested_model")
        .annotate(s=Sum("cost_picodollars"))
        .values_list("virtual_key_id", "end_user", "requested_model", "s")
    }
    ledger: dict[tuple, int] = defaultdict(int)
    for key_id, end_user, model, cost in SpendLedger.objects.filter(tenant=tenant, day=day).values_list(
        "virtual_key_id", "end_user", "model", "cost_picodollars"
    ):
        ledger[(key_id, end_user, model)] += int(cost)
    diffs = [
        Difference(
            tenant.slug, str(day), f"key {k[0]} user {k[1] or '-'} model {k[2]}", from_pico(ledger.get(k, 0)),
            from_pico(logs.get(k, 0)),
        )
        for k in sorted(set(logs) | set(ledger), key=str)
        if logs.get(k, 0) != ledger.get(k, 0)
    ]  # fmt: skip
    tags: dict[str, int] = defaultdict(int)
    for cost, log_tags in priced.exclude(tags=[]).values_list("cost_picodollars", "tags").iterator(chunk_size=5000):
        for tag in log_tags or []:
            tags[tag] += cost
    tag_ledger = dict(TagSpend.objects.filter(tenant=tenant, day=day).values_list("tag", "cost_picodollars"))
    for tag in sorted(set(tags) | set(tag_ledger)):
        if tags.get(tag, 0) != int(tag_ledger.get(tag, 0)):
            diffs.append(
                Difference(
                    tenant.slug, str(day), f"tag:{tag}", from_pico(tag_ledger.get(tag, 0)), from_pico(tags.get(tag, 0))
                )
            )
    return diffs


def _reconcile_day_with_rollups(tenant: Tenant, day: date) -> list[Difference]:
    bucket = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    rolled: dict[tuple, int] = defaultdict(int)
    for key_id, model, cost in CallRollupDay.objects.filter(tenant_id=tenant.id, bucket=bucket).values_list(
        "virtual_key_id", "model", "cost_picodollars"
    ):
        rolled[(key_id or None, model)] += int(cost or 0)
    ledger: dict[tuple, int] = defaultdict(int)
    for key_id, model, cost in SpendLedger.objects.filter(tenant=tenant, day=day).values_list(
        "virtual_key_id", "model", "cost_picodollars"
    ):
        ledger[(key_id, model)] += int(cost)
    return [
        Difference(
            tenant.slug, str(day), f"key {k[0]} model {k[1]} (day rollup)", from_pico(ledger.get(k, 0)),
            from_pico(rolled.get(k, 0)),
        )
        for k in sorted(set(rolled) | set(ledger), key=str)
        if rolled.get(k, 0) != ledger.get(k, 0)
    ]  # fmt: skip


# --- Console reads ---------------------------------------------------------------------------------


@dataclass
class BudgetUsage:
    """One budget with what it has spent this period, for the console's usage bars."""

    budget: Budget
    spent: Decimal
    remaining: Decimal
    percent: int  # may pass 100: soft budgets keep spending after the limit

    @property
    def level(self) -> str:
        # The same 80/100 % steps as the default alert thresholds, so the bar turns when an email goes out.
        if self.percent >= 100:
            return "over"
        return "warn" if self.percent >= 80 else "ok"

    @property
    def bar_percent(self) -> int:
        return min(self.percent, 100)


def budget_usage(budget: Budget, *, now: datetime, tz: ZoneInfo) -> BudgetUsage:
    spent = from_pico(spent_in_period_pico(budget, now=now, tz=tz))
    limit = budget.limit_usd
    if limit > 0:
        percent = int(spent * 100 / limit)
    else:
        percent = 100 if spent > 0 else 0
    return BudgetUsage(budget=budget, spent=spent, remaining=max(limit - spent, Decimal(0)), percent=percent)


def spend_by_key(
    tenant: Tenant, *, since: date | None, until: date | None = None, key_ids: list[int] | None = None
) -> dict[int | None, int]:
    """Picodollars per virtual key id since `since` (None: calls without a key, e.g. deleted ones)."""
    rows = _ledger(tenant.id, since, until)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    return {
        key_id: int(cost or 0)
        for key_id, cost in rows.values_list("virtual_key_id")
        .annotate(s=Sum("cost_picodollars"))
        .values_list("virtual_key_id", "s")
    }


def spend_by_model(
    tenant: Tenant, *, since: date | None, until: date | None = None, key_ids: list[int] | None = None
) -> list[tuple[str, int]]:
    """(model, picodollars) since `since`, most expensive first; limited to `key_ids` when given."""
    rows = _ledger(tenant.id, since, until)
    if key_ids is not None:
        rows = rows.filter(virtual_key_id__in=key_ids)
    return [
        (model, int(cost or 0))
        for model, cost in rows.values_list("model")
        .annotate(s=Sum("cost_picodollars"))
        .order_by("-s", "model")
        .values_list("model", "s")
    ]


def own_keys(access: TenantAccess) -> QuerySet[VirtualKey]:
    # One rule for "own keys" (a token acting for nobody owns none): tenants.permissions.own_keys.
    return permissions.own_keys(access)


def visible_budgets(access: TenantAccess) -> QuerySet[Budget]:
    budgets = Budget.objects.filter(tenant=access.tenant)
    # A member's concern is the tenant budget (it can stop their calls too) and their own keys' budgets;
    # other people's keys, end users and tags stay with admins and viewers.
    if access.role == Role.MEMBER:
        names = [f"key:{name}" for name in own_keys(access).values_list("name", flat=True)]
        budgets = budgets.filter(Q(scope="tenant") | Q(scope__in=names))
    return budgets


def access_budget(access: TenantAccess, budget_id: int) -> Budget:
    budget = visible_budgets(access).filter(id=budget_id).first()
    if budget is None:
        raise Http404("No such budget in this tenant.")
    return budget


def tenant_timezone(tenant_id: int) -> ZoneInfo:
    name = BillingSettings.objects.filter(tenant_id=tenant_id).values_list("timezone", flat=True).first()
    try:
        return ZoneInfo(name or "UTC")
    except Exception:
        return ZoneInfo("UTC")


def key_names(tenant: Tenant) -> dict[int, str]:
    """Every key of the tenant by id, revoked ones included (their spend stays in the history)."""
    return dict(VirtualKey.objects.filter(tenant=tenant).values_list("id", "name"))


def price_overrides(tenant: Tenant) -> QuerySet[PriceOverride]:
    """The tenant's negotiated prices, by model."""
    return PriceOverride.objects.filter(tenant=tenant).order_by("model")


def tenant_rate_limit(tenant: Tenant) -> RateLimit | None:
    return RateLimit.objects.filter(tenant=tenant, scope=LimitScope.TENANT, ref="").first()


def key_rate_limits(tenant: Tenant, key_ids: list[int]) -> dict[int, RateLimit]:
    """The limits set on these keys of the tenant, by key id (keys without limits are left out)."""
    refs = [str(key_id) for key_id in key_ids]
    return {int(r.ref): r for r in RateLimit.objects.filter(tenant=tenant, scope=LimitScope.KEY, ref__in=refs)}


def deployment_rate_limits(tenant: Tenant) -> list[tuple[RateLimit, ModelDeployment | None]]:
    """Each deployment limit of the tenant with its deployment (None when the deployment is gone)."""
    limits = list(RateLimit.objects.filter(tenant=tenant, scope=LimitScope.DEPLOYMENT))
    ids = [int(r.ref) for r in limits if r.ref.isdigit()]
    deployments = ModelDeployment.objects.filter(tenant=tenant, id__in=ids).select_related("provider")
    by_id = {str(d.id): d for d in deployments}
    return [(r, by_id.get(r.ref)) for r in limits]


def price_table_for(tenant_id: int) -> dict[str, Price]:
    """The prices the proxy bills this tenant's calls at: the shipped table with its negotiated overrides."""
    table = dict(shipped_prices())
    for o in PriceOverride.objects.filter(tenant_id=tenant_id):
        shipped = table.get(o.model)
        table[o.model] = Price(
            input=o.input,
            output=o.output,
            cached_input=o.cached_input,
            cache_write=o.cache_write,
            max_output=shipped.max_output if shipped else Price(o.input, o.output).max_output,
        )
    return table


def deployment_has_price(upstream_model: str, base_model: str, table: dict[str, Price]) -> bool:
    """Whether calls to this deployment get a cost: the same lookup as proxy.loader.MoneyConfig.price_for.
    Without one, calls are logged without a cost, soft budgets don't count them, and hard budgets refuse
    the calls that may reach it (model_unpriced)."""
    return find_price(base_model or upstream_model, table) is not None


def unpriced_deployments(tenant_id: int) -> list[ModelDeployment]:
    """The tenant's deployments with no known price, by model name."""
    table = price_table_for(tenant_id)
    deployments = ModelDeployment.objects.filter(tenant_id=tenant_id).select_related("provider")
    return sorted(
        (d for d in deployments if not deployment_has_price(d.upstream_model, d.base_model, table)),
        key=lambda d: (d.model_name, d.id),
    )


# --- Invoices ------------------------------------------------------------------------------------------


def visible_invoices(access: TenantAccess) -> QuerySet:
    """The tenant's invoices, newest month first. Only owners see invoices (billing.manage)."""
    access.require(permissions.BILLING_MANAGE)
    return Invoice.objects.filter(tenant=access.tenant).order_by("-month", "-period_start", "-id")


def access_invoice(access: TenantAccess, invoice_id: int):
    invoice = visible_invoices(access).filter(id=invoice_id).select_related("tenant").first()
    if invoice is None:
        raise Http404("No such invoice in this tenant.")
    return invoice


def plan_of(tenant: Tenant) -> Plan | None:
    """The tenant's plan row, None when it has none (no fee, no markup, nothing included)."""
    return Plan.objects.filter(tenant=tenant).first()


@dataclass
class InvoiceDifference:
    tenant: str
    month: str
    what: str
    ledger: Decimal
    invoiced: Decimal


def invoice_reconcile(tenant: Tenant | None = None) -> tuple[list[InvoiceDifference], list[InvoiceDifference]]:
    """Invoices against the spend ledger: (differences, not yet invoiced).

    For every month with an invoice, the provider cost on its invoices (usage and correction lines
    for that month, drafts included) must equal the ledger's spend for the tenant and month; with
    markup 0 and no fee that makes the invoice total the ledger's spend, to the cent. Each invoice's
    total must be its lines' exact sum rounded once. A late correction for a closed month that no
    draft carries yet is "not yet invoiced": it goes on the next invoice, so it is not a difference.
    """
    tenants = [tenant] if tenant else list(Tenant.objects.filter(invoices__isnull=False).distinct())
    diffs: list[InvoiceDifference] = []
    pending: list[InvoiceDifference] = []
    for t in tenants:
        invoices = list(Invoice.objects.filter(tenant=t).prefetch_related("lines"))
        for inv in invoices:
            exact = sum((ln.amount_usd for ln in inv.lines.all()), Decimal(0))
            if round_total(exact) != inv.total_usd:
                diffs.append(
                    InvoiceDifference(t.slug, f"{inv.month:%Y-%m}", f"{inv.label} total", exact, inv.total_usd)
                )
        billed: dict = defaultdict(lambda: [Decimal(0), Decimal(0)])  # month -> [closed, drafts]
        for month, status, cost in InvoiceLine.objects.filter(
            invoice__tenant=t, kind__in=[LineKind.USAGE, LineKind.CREDIT]
        ).values_list("usage_month", "invoice__status", "cost_usd"):
            billed[month][0 if status in CLOSED else 1] += cost
        drafts_after = {inv.month for inv in invoices if inv.status == InvoiceStatus.DRAFT}
        for month in sorted({inv.month for inv in invoices} | set(billed)):
            pico = _ledger(t.id, month, month_last_day(month)).aggregate(s=Sum("cost_picodollars"))["s"]
            ledger = from_pico(int(pico or 0))
            closed, drafted = billed[month]
            if ledger == closed + drafted:
                continue
            row = InvoiceDifference(t.slug, f"{month:%Y-%m}", "provider cost", ledger, closed + drafted)
            # A closed month's late correction, with no later draft to carry it yet, is pending.
            if not drafted and not any(m > month for m in drafts_after):
                pending.append(row)
            else:
                diffs.append(row)
    return diffs, pending


# --- The Spend page: totals and breakdowns over a date range ---------------------------------------


@dataclass
class SpendRow:
    label: str
    cost_picodollars: int
    requests: int
    tokens: int | None = None  # tag rows have no token counts in the ledger

    @property
    def spent(self) -> Decimal:
        return from_pico(self.cost_picodollars)


def _scoped_ledger(tenant: Tenant, since: date | None, until: date | None, key_ids: list[int] | None):
    rows = _ledger(tenant.id, since, until)
    return rows if key_ids is None else rows.filter(virtual_key_id__in=key_ids)


def spend_totals(tenant: Tenant, *, since: date | None, until: date | None, key_ids: list[int] | None = None) -> dict:
    """Exact spend, priced requests and tokens over [since, until] (days in the tenant's time zone)."""
    agg = _scoped_ledger(tenant, since, until, key_ids).aggregate(
        cost=Sum("cost_picodollars"),
        requests=Sum("requests"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
    )
    prompt, completion = int(agg["prompt"] or 0), int(agg["completion"] or 0)
    return {
        "cost": from_pico(int(agg["cost"] or 0)),
        "requests": int(agg["requests"] or 0),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens": prompt + completion,
    }


def spend_by_end_user(
    tenant: Tenant, *, since: date | None, until: date | None, key_ids: list[int] | None = None, limit: int = 50
) -> list[SpendRow]:
    rows = (
        _scoped_ledger(tenant, since, until, key_ids)
        .values("end_user")
        .annotate(c=Sum("cost_picodollars"), n=Sum("requests"), p=Sum("prompt_tokens"), o=Sum("completion_tokens"))
        .order_by("-c", "end_user")[:limit]
    )
    return [
        SpendRow(r["end_user"], int(r["c"] or 0), int(r["n"] or 0), int(r["p"] or 0) + int(r["o"] or 0)) for r in rows
    ]


def spend_by_model_rows(
    tenant: Tenant, *, since: date | None, until: date | None, key_ids: list[int] | None = None
) -> list[SpendRow]:
    rows = (
        _scoped_ledger(tenant, since, until, key_ids)
        .values("model")
        .annotate(c=Sum("cost_picodollars"), n=Sum("requests"), p=Sum("prompt_tokens"), o=Sum("completion_tokens"))
        .order_by("-c", "model")
    )
    return [SpendRow(r["model"], int(r["c"] or 0), int(r["n"] or 0), int(r["p"] or 0) + int(r["o"] or 0)) for r in rows]


def spend_by_tag(tenant: Tenant, *, since: date | None, until: date | None, limit: int = 50) -> list[SpendRow]:
    rows = TagSpend.objects.filter(tenant_id=tenant.id)
    if since:
        rows = rows.filter(day__gte=since)
    if until:
        rows = rows.filter(day__lte=until)
    found = rows.values("tag").annotate(c=Sum("cost_picodollars"), n=Sum("requests")).order_by("-c", "tag")[:limit]
    return [SpendRow(r["tag"], int(r["c"] or 0), int(r["n"] or 0)) for r in found]


def ledger_month_total(tenant: Tenant, month: date) -> Decimal:
    """The tenant's exact spend in a calendar month (local days), as the billing page shows it to date."""
    total = _ledger(tenant.id, month, month_last_day(month)).aggregate(s=Sum("cost_picodollars"))["s"]
    return from_pico(int(total or 0))


def budget_outage_mode(tenant_id: int) -> str:
    """What the tenant's hard budgets do while Redis is down: "closed" (refuse) or "open" (let through)."""
    mode = (
        BillingSettings.objects.filter(tenant_id=tenant_id)
        .values_list("hard_budgets_on_redis_outage", flat=True)
        .first()
    )
    return mode or "closed"
