"""Monthly invoices built from the spend ledger: build and refresh drafts, finalize, pay, void.

An invoice bills one tenant for one calendar month in the tenant's time zone (the ledger's days are
local days, see billing.ledger). While the month is open its invoice is a draft, rebuilt from the
ledger whenever it is looked at; after the month ends `gateway finalize-invoices` (and the beat task
on the 1st) finalizes it, which gives it the next gap-free number. A finalized invoice never changes.

What an invoice for month M bills is always "ledger minus what finalized invoices already billed":

- usage lines: the ledger for M (per model, or per model and key) minus the usage lines of M's
  earlier finalized invoices. Normally there are none; after an early close (`--early`) the second
  invoice of M bills the rest of the month this way;
- correction lines (kind "credit", negative or positive): for earlier months that are closed, the
  ledger minus everything billed for them, so a late ledger correction lands on the next invoice;
- the base fee, once per month (on its first invoice), and the markup, a percentage of the usage and
  correction costs;
- the included amount, a negative line up to the plan's included USD (less what earlier invoices of
  the same month already used), never more than the usage charge.

Rounding rule: every line is kept exact (ledger costs are exact picodollars, markup is cost x
percent / 100, still exact), and the invoice total is the exact sum of all lines rounded once to
whole cents, half up (ROUND_HALF_UP). Where lines are shown or sent in cents (CSV, Stripe),
`line_cents` splits that one rounded total across the lines by largest remainder, so the printed
lines always add up to the printed total. With markup 0 and no fee, the total is the ledger's spend
for the tenant and month, rounded to the cent (`gateway reconcile` checks it).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from billing.invoice_rules import BILLED_KINDS, CLOSED, HUNDRED, ZERO, month_last_day, round_total
from billing.models import (
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    InvoiceStatus,
    LineGrouping,
    LineKind,
    Plan,
    SpendLedger,
)
from billing.selectors import tenant_timezone
from gateway_project.common.money import from_pico
from tenants.audit import Actor, audit
from tenants.models import Tenant, VirtualKey

log = logging.getLogger("gateway.billing")

# What follows a finalization and a void, registered by billing.stripe (BillingConfig.ready): invoicing
# knows nothing of Stripe, the Stripe sync knows invoices.
AFTER_FINALIZE: list[Callable[[Invoice], None]] = []
AFTER_VOID: list[Callable[[Invoice], None]] = []


# --- Months ------------------------------------------------------------------------------------------


def local_today(tenant: Tenant, now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(tenant_timezone(tenant.id)).date()


# --- Computing an invoice ----------------------------------------------------------------------------

GroupKey = tuple[str, int | None]  # (model, virtual key id or None)


@dataclass
class _Usage:
    cost: Decimal = ZERO
    requests: int = 0
    prompt: int = 0
    completion: int = 0

    def minus(self, other: _Usage) -> _Usage:
        return _Usage(
            self.cost - other.cost,
            self.requests - other.requests,
            self.prompt - other.prompt,
            self.completion - other.completion,
        )

    @property
    def empty(self) -> bool:
        return self.cost == 0 and self.requests == 0 and self.prompt == 0 and self.completion == 0


@dataclass
class _Line:
    kind: str
    label: str
    amount: Decimal
    cost: Decimal = ZERO
    model: str = ""
    key_id: int | None = None
    key_name: str = ""
    usage_month: date | None = None
    usage: _Usage = field(default_factory=_Usage)


def _plan(tenant: Tenant) -> Plan:
    # No plan row means no fee, no markup, nothing included: invoices equal the ledger.
    return Plan.objects.filter(tenant=tenant).first() or Plan(tenant=tenant)


def _ledger_usage(tenant: Tenant, first: date, last: date, by_key: bool) -> dict[date, dict[GroupKey, _Usage]]:
    """Ledger sums per calendar month and group, for the local days first..last (summed in the database:
    a refresh reads one row per month, model and key, however many days and end users there are)."""
    group = ["month", "model", "virtual_key_id"] if by_key else ["month", "model"]
    rows = (
        SpendLedger.objects.filter(tenant=tenant, day__gte=first, day__lte=last)
        .annotate(month=TruncMonth("day"))
        .values(*group)
        .annotate(c=Sum("cost_picodollars"), r=Sum("requests"), p=Sum("prompt_tokens"), o=Sum("completion_tokens"))
        .order_by()
    )
    out: dict[date, dict[GroupKey, _Usage]] = defaultdict(lambda: defaultdict(_Usage))
    for row in rows:
        month = row["month"]
        month = month.date() if isinstance(month, datetime) else month
        u = out[month][(row["model"], row.get("virtual_key_id"))]
        u.cost += from_pico(int(row["c"] or 0))
        u.requests += int(row["r"] or 0)
        u.prompt += int(row["p"] or 0)
        u.completion += int(row["o"] or 0)
    return out


def _billed_usage(tenant: Tenant, months: list[date], by_key: bool) -> dict[date, dict[GroupKey, _Usage]]:
    """What closed invoices already billed for these usage months, per group."""
    fields = ["usage_month", "model", "virtual_key_id"]
    rows = (
        InvoiceLine.objects.filter(
            invoice__tenant=tenant, invoice__status__in=CLOSED, kind__in=BILLED_KINDS, usage_month__in=months
        )
        .values_list(*fields)
        .annotate(c=Sum("cost_usd"), r=Sum("requests"), p=Sum("prompt_tokens"), o=Sum("completion_tokens"))
        .values_list(*fields, "c", "r", "p", "o")
    )
    out: dict[date, dict[GroupKey, _Usage]] = defaultdict(lambda: defaultdict(_Usage))
    for month, model, key_id, cost, requests, prompt, completion in rows:
        u = out[month][(model, key_id if by_key else None)]
        u.cost += cost or ZERO
        u.requests += int(requests or 0)
        u.prompt += int(prompt or 0)
        u.completion += int(completion or 0)
    return out


def _month_closed_fully(tenant: Tenant, month: date) -> bool:
    """A month is fully closed once an invoice covering its last day is finalized."""
    return Invoice.objects.filter(
        tenant=tenant, month=month, status__in=CLOSED, period_end__gte=month_last_day(month)
    ).exists()


def _closed_for_month(tenant: Tenant, month: date) -> list[Invoice]:
    return list(Invoice.objects.filter(tenant=tenant, month=month, status__in=CLOSED).order_by("period_end", "id"))


def _differences(ledger: dict[GroupKey, _Usage], billed: dict[GroupKey, _Usage]) -> list[tuple[GroupKey, _Usage]]:
    out = []
    for group in sorted(set(ledger) | set(billed), key=lambda g: (g[0], g[1] or 0)):
        diff = ledger.get(group, _Usage()).minus(billed.get(group, _Usage()))
        if not diff.empty:
            out.append((group, diff))
    return out


def compute_lines(tenant: Tenant, month: date) -> tuple[list[_Line], date]:
    """The lines the next invoice for `month` would have, and its first day."""
    plan = _plan(tenant)
    by_key = plan.line_grouping == LineGrouping.KEY
    key_names = dict(VirtualKey.objects.filter(tenant=tenant).values_list("id", "name"))
    closed = _closed_for_month(tenant, month)
    period_start = closed[-1].period_end if closed else month

    # Earlier months that are closed and have no draft of their own: corrections come here.
    drafts = set(
        Invoice.objects.filter(tenant=tenant, status=InvoiceStatus.DRAFT, month__lt=month).values_list(
            "month", flat=True
        )
    )
    earlier = sorted(
        set(Invoice.objects.filter(tenant=tenant, status__in=CLOSED, month__lt=month).values_list("month", flat=True))
        - drafts
    )
    first = earlier[0] if earlier else month
    ledger = _ledger_usage(tenant, first, month_last_day(month), by_key)
    billed = _billed_usage(tenant, [*earlier, month], by_key)

    def key_label(key_id: int | None) -> str:
        if not by_key:
            return ""
        if key_id is None:
            return "(no key)"
        return key_names.get(key_id, f"deleted key {key_id}")

    lines: list[_Line] = []
    if not closed and plan.base_fee_usd:
        lines.append(_Line(LineKind.FEE, "Base fee", plan.base_fee_usd, usage_month=month))
    usage_charge = ZERO
    for (model, key_id), u in _differences(ledger.get(month, {}), billed.get(month, {})):
        label = model or "(no model)"
        if by_key:
            label = f"{label} · {key_label(key_id)}"
        kind = LineKind.USAGE if u.cost >= 0 else LineKind.CREDIT
        lines.append(
            _Line(kind, label, u.cost, u.cost, model, key_id, key_label(key_id), month, u)  # type: ignore[arg-type]
        )
        usage_charge += u.cost
    for p in earlier:
        for (model, key_id), u in _differences(ledger.get(p, {}), billed.get(p, {})):
            label = f"Correction {p:%Y-%m}: {model or '(no model)'}"
            if by_key:
                label = f"{label} · {key_label(key_id)}"
            lines.append(
                _Line(LineKind.CREDIT, label, u.cost, u.cost, model, key_id, key_label(key_id), p, u)  # type: ignore[arg-type]
            )
    billed_cost = sum((ln.cost for ln in lines if ln.kind in BILLED_KINDS), ZERO)
    markup_pct = plan.markup_percent or ZERO
    if markup_pct and billed_cost:
        lines.append(_Line(LineKind.MARKUP, f"Markup {markup_pct.normalize():f} %", billed_cost * markup_pct / HUNDRED))
    if plan.included_usd:
        used = -sum(
            (
                ln.amount_usd
                for inv in closed
                for ln in inv.lines.all()
                if ln.kind == LineKind.INCLUDED and ln.usage_month == month
            ),
            ZERO,
        )
        charge = usage_charge * (HUNDRED + markup_pct) / HUNDRED
        applied = min(max(plan.included_usd - used, ZERO), max(charge, ZERO))
        if applied:
            lines.append(_Line(LineKind.INCLUDED, "Included in plan", -applied, usage_month=month))
    return lines, period_start


def _store_lines(invoice: Invoice, lines: list[_Line]) -> None:
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            position=i,
            kind=ln.kind,
            label=ln.label[:300],
            model=ln.model,
            virtual_key_id=ln.key_id,
            key_name=ln.key_name[:200],
            usage_month=ln.usage_month,
            requests=ln.usage.requests,
            prompt_tokens=ln.usage.prompt,
            completion_tokens=ln.usage.completion,
            tokens=ln.usage.prompt + ln.usage.completion,
            cost_usd=ln.cost,
            amount_usd=ln.amount,
        )
        for i, ln in enumerate(lines, start=1)
    )
    invoice.subtotal_usd = sum((ln.amount for ln in lines if ln.kind not in (LineKind.FEE, LineKind.MARKUP)), ZERO)
    invoice.fee_usd = sum((ln.amount for ln in lines if ln.kind == LineKind.FEE), ZERO)
    invoice.markup_usd = sum((ln.amount for ln in lines if ln.kind == LineKind.MARKUP), ZERO)
    invoice.total_usd = round_total(sum((ln.amount for ln in lines), ZERO))


def _lock_tenant(tenant: Tenant) -> None:
    # Every invoice write for a tenant runs under its row lock: refreshes, finalizations and early
    # closes of one tenant happen one after the other, never interleaved.
    Tenant.objects.select_for_update().filter(id=tenant.id).first()


def _draft(tenant: Tenant, month: date) -> Invoice | None:
    return Invoice.objects.filter(tenant=tenant, month=month, status=InvoiceStatus.DRAFT).first()


def ledger_mark(tenant_id: int, month: date) -> tuple[int, Decimal]:
    """The month's ledger in two numbers (requests, exact cost): a call that lands moves at least the first."""
    agg = SpendLedger.objects.filter(tenant_id=tenant_id, day__gte=month, day__lte=month_last_day(month)).aggregate(
        r=Sum("requests"), c=Sum("cost_picodollars")
    )
    return int(agg["r"] or 0), from_pico(int(agg["c"] or 0))


def _refresh_locked(tenant: Tenant, month: date, *, create: bool) -> Invoice | None:
    lines, period_start = compute_lines(tenant, month)
    # Read under the tenant lock, after the lines: the mark never claims usage the lines lack.
    requests, cost = ledger_mark(tenant.id, month)
    invoice = _draft(tenant, month)
    if invoice is None:
        if not create:
            return None
        plan = _plan(tenant)
        invoice = Invoice.objects.create(
            tenant=tenant,
            month=month,
            period_start=period_start,
            period_end=month_last_day(month),
            markup_percent=plan.markup_percent or ZERO,
        )
    else:
        invoice.markup_percent = _plan(tenant).markup_percent or ZERO
    invoice.period_start = period_start
    invoice.period_end = month_last_day(month)
    # Who is billed, as of now: frozen at finalization, kept if the tenant is deleted later.
    invoice.tenant_slug, invoice.tenant_name = tenant.slug, tenant.name
    invoice.ledger_requests, invoice.ledger_cost_usd = requests, cost
    _store_lines(invoice, lines)
    invoice.updated_at = timezone.now()
    invoice.save(
        update_fields=[
            "period_start",
            "period_end",
            "tenant_slug",
            "tenant_name",
            "ledger_requests",
            "ledger_cost_usd",
            "subtotal_usd",
            "fee_usd",
            "markup_usd",
            "total_usd",
            "markup_percent",
            "updated_at",
        ]
    )
    return invoice


def invoice_for_month(tenant: Tenant, month: date, *, now: datetime | None = None) -> Invoice:
    """`gateway invoice`: the month's draft, built or refreshed from the ledger; or, once the month
    is fully closed, its last finalized invoice as it is."""
    if month > local_today(tenant, now).replace(day=1):
        raise ValidationError(f"{month:%Y-%m} has not started yet for {tenant.slug}")
    with transaction.atomic():
        _lock_tenant(tenant)
        if _month_closed_fully(tenant, month) and _draft(tenant, month) is None:
            return _closed_for_month(tenant, month)[-1]
        closed = _closed_for_month(tenant, month)
        if closed and _draft(tenant, month) is None:
            # Closed early: show the rest of the month only if there is a rest to bill.
            lines, _start = compute_lines(tenant, month)
            if not lines:
                return closed[-1]
        invoice = _refresh_locked(tenant, month, create=True)
        assert invoice is not None
        return invoice


def invoice_refresh(tenant: Tenant, month: date) -> Invoice | None:
    """Rebuild the month's draft if it has one (the console calls this as usage lands)."""
    with transaction.atomic():
        _lock_tenant(tenant)
        return _refresh_locked(tenant, month, create=False)


def projected_invoice(tenant: Tenant, now: datetime | None = None) -> Invoice:
    """The running month's invoice as it stands now (a draft, built or refreshed)."""
    return invoice_for_month(tenant, local_today(tenant, now).replace(day=1), now=now)


def refresh_drafts(*, now: datetime | None = None) -> list[Invoice]:
    """The periodic refresh (beat entry `billing-refresh-drafts`): rebuild the open drafts of every tenant
    whose ledger moved since its invoice was last built, creating the running month's draft if needed.

    Cheap when nothing happened: one grouped query over the ledger's last two months (index on tenant
    and day) and one over the invoices' stored marks; only tenants with new usage are rebuilt.
    Idempotent: a second run right after finds every mark equal and does nothing.
    """
    now = now or timezone.now()
    # Drafts of deleted tenants: nothing will bill them, and having no number, deleting them leaves no gap.
    Invoice.objects.filter(tenant__isnull=True, status=InvoiceStatus.DRAFT).delete()
    # Local months start at most 14 hours away from UTC's: from the 1st of the month of yesterday (UTC)
    # every tenant's running month, and a month that just ended, are covered.
    since = (now.date() - timedelta(days=1)).replace(day=1)
    ledger = {
        (row["tenant_id"], _as_date(row["month"])): (int(row["r"] or 0), from_pico(int(row["c"] or 0)))
        for row in SpendLedger.objects.filter(day__gte=since)
        .annotate(month=TruncMonth("day"))
        .values("tenant_id", "month")
        .annotate(r=Sum("requests"), c=Sum("cost_picodollars"))
        .order_by()
    }
    if not ledger:
        return []
    # The newest invoice of each (tenant, month) carries the mark of the last rebuild.
    marks: dict[tuple[int, date], tuple[str, int, Decimal]] = {}
    for tenant_id, month, status, requests, cost in (
        Invoice.objects.filter(tenant_id__in={t for t, _m in ledger}, month__gte=since)
        .order_by("tenant_id", "month", "period_end", "id")
        .values_list("tenant_id", "month", "status", "ledger_requests", "ledger_cost_usd")
    ):
        marks[(tenant_id, month)] = (status, requests, cost)
    tenants = Tenant.objects.in_bulk({t for t, _m in ledger})
    done = []
    for (tenant_id, month), mark in sorted(ledger.items()):
        seen = marks.get((tenant_id, month))
        tenant = tenants.get(tenant_id)
        if tenant is None or (seen is not None and (seen[1], seen[2]) == mark):
            continue
        running = local_today(tenant, now).replace(day=1)
        if month > running:
            continue  # local tomorrow's month in a time zone behind UTC: not started there yet
        try:
            if month == running:
                invoice: Invoice | None = invoice_for_month(tenant, month, now=now)
            elif seen is not None and seen[0] == InvoiceStatus.DRAFT:
                invoice = invoice_refresh(tenant, month)  # a month that ended, not yet finalized
            else:
                continue  # closed: a late change becomes a correction on the next invoice
        except Exception:
            # One tenant's trouble must not keep the others' drafts stale; the next run tries again.
            log.exception("could not refresh the %s invoice of tenant %s", f"{month:%Y-%m}", tenant.slug)
            continue
        if invoice is not None and invoice.status == InvoiceStatus.DRAFT:
            done.append(invoice)
    return done


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


# --- Finalizing --------------------------------------------------------------------------------------


def _next_number() -> int:
    """The next invoice number, taken under the counter's row lock in the caller's transaction: two
    finalizations wait for each other here, and a rollback hands the number back (no gaps)."""
    try:
        with transaction.atomic():
            InvoiceCounter.objects.get_or_create(name="operator")
    except IntegrityError:
        pass  # created by a concurrent finalization; it exists now
    counter = InvoiceCounter.objects.select_for_update().get(name="operator")
    counter.last_number += 1
    counter.save(update_fields=["last_number"])
    return counter.last_number


def _queue_stripe_push(invoice: Invoice) -> None:
    """Hand the invoice to what follows a finalization (the Stripe push, which billing.stripe registers:
    it queues after commit when Stripe is on). A failing hook never blocks finalization: `gateway
    stripe-sync` picks it up later."""
    for hook in AFTER_FINALIZE:
        try:
            hook(invoice)
        except Exception:
            log.warning("could not queue the Stripe push of invoice %s", invoice.label, exc_info=True)


def invoice_finalize(
    tenant: Tenant, *, month: date, actor: Actor, early: bool = False, now: datetime | None = None
) -> Invoice | None:
    """Finalize the month's invoice: refresh it from the ledger, number it, freeze it.

    Idempotent: a month already fully closed gives None, and so does a month with nothing to bill.
    Without `early` the month must have ended in the tenant's time zone; with it, the running month
    closes today and usage after this goes to a new invoice for the rest of the month.
    """
    today = local_today(tenant, now)
    last = month_last_day(month)
    if not early and today <= last:
        raise ValidationError(f"{month:%Y-%m} has not ended yet for {tenant.slug} (use --early to close it now)")
    if early and today > last:
        early = False  # the month is over anyway: a normal close
    with transaction.atomic():
        _lock_tenant(tenant)
        if _month_closed_fully(tenant, month):
            return None
        invoice = _refresh_locked(tenant, month, create=True)
        assert invoice is not None
        if not invoice.lines.exists():
            invoice.delete()  # a draft has no number yet, so deleting it leaves no gap
            return None
        invoice.number = _next_number()
        invoice.status = InvoiceStatus.FINALIZED
        invoice.finalized_at = now or timezone.now()
        if early:
            invoice.period_end = today
        invoice.save(update_fields=["number", "status", "finalized_at", "period_end"])
        audit(
            tenant,
            actor=actor,
            action="billing.invoice.finalize",
            target_type="Invoice",
            target_label=invoice.label,
            changes={"month": f"{month:%Y-%m}", "total_usd": str(invoice.total_usd), "early": early},
        )
        _queue_stripe_push(invoice)
    return invoice


def months_to_finalize(tenant: Tenant, now: datetime | None = None) -> list[date]:
    """What the beat task closes: the month that just ended, and any older month with a draft."""
    current = local_today(tenant, now).replace(day=1)
    previous = (current - timedelta(days=1)).replace(day=1)
    drafts = Invoice.objects.filter(tenant=tenant, status=InvoiceStatus.DRAFT, month__lt=current)
    return sorted({previous, *drafts.values_list("month", flat=True)})


def finalize_invoices(
    *,
    tenant: Tenant | None = None,
    month: date | None = None,
    early: bool = False,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> list[Invoice]:
    """`gateway finalize-invoices` and the beat task on the 1st. Safe to run any number of times."""
    actor = actor or Actor.cli()
    tenants = [tenant] if tenant else list(Tenant.objects.order_by("id"))
    done = []
    for t in tenants:
        if early:
            months = [month or local_today(t, now).replace(day=1)]
        elif month:
            months = [month]
        else:
            months = months_to_finalize(t, now)
        for m in months:  # oldest first: corrections for a month land on the next invoice, once
            if not early and local_today(t, now) <= month_last_day(m):
                continue
            invoice = invoice_finalize(t, month=m, actor=actor, early=early, now=now)
            if invoice is not None:
                done.append(invoice)
    return done


# --- After finalization ------------------------------------------------------------------------------


def mark_invoice_paid(invoice: Invoice, *, at: datetime | None = None, actor: Actor | None = None) -> bool:
    """Finalized -> paid (Stripe's invoice.paid). Idempotent: False when it was not finalized.

    `actor` is who says so in the audit log (the webhook passes `stripe-webhook`); the CLI by default."""
    with transaction.atomic():
        changed = Invoice.objects.filter(id=invoice.id, status=InvoiceStatus.FINALIZED).update(
            status=InvoiceStatus.PAID, paid_at=at or timezone.now()
        )
        if changed:
            invoice.refresh_from_db()
            audit(
                invoice.tenant,
                actor=actor or Actor.cli(),
                action="billing.invoice.paid",
                target_type="Invoice",
                target_label=invoice.label,
                changes={"status": [InvoiceStatus.FINALIZED, InvoiceStatus.PAID]},
            )
    return bool(changed)


def invoice_void(tenant: Tenant, *, invoice: Invoice, actor: Actor) -> bool:
    """Finalized -> void: the amount is written off (not billed again). Paid invoices stay paid.

    The invoice keeps its number (numbering stays gap-free). If Stripe has it, it is voided there too,
    after commit and with retries like a push (billing.stripe.sync.queue_void). Returns False when
    the invoice was not finalized (a draft, paid or already void): nothing changes then.
    """
    if invoice.tenant_id != tenant.id:
        raise ValidationError("That invoice belongs to another tenant.")
    with transaction.atomic():
        voided_at = timezone.now()
        # Backoff state is reset: from here on it counts the attempts to void in Stripe.
        changed = Invoice.objects.filter(id=invoice.id, status=InvoiceStatus.FINALIZED).update(
            status=InvoiceStatus.VOID,
            voided_at=voided_at,
            stripe_attempts=0,
            stripe_next_attempt_at=None,
            stripe_error="",
        )
        if changed:
            invoice.refresh_from_db()
            audit(
                tenant,
                actor=actor,
                action="billing.invoice.void",
                target_type="Invoice",
                target_label=invoice.label,
                changes={"status": [InvoiceStatus.FINALIZED, InvoiceStatus.VOID], "total_usd": str(invoice.total_usd)},
            )
            _queue_stripe_void(invoice)
    return bool(changed)


def _queue_stripe_void(invoice: Invoice) -> None:
    # Like the push: never blocks or fails the void; the beat's stripe-sync retries what is left.
    for hook in AFTER_VOID:
        try:
            hook(invoice)
        except Exception:
            log.warning("could not queue the Stripe void of invoice %s", invoice.label, exc_info=True)


# --- Plans -------------------------------------------------------------------------------------------

MAX_PLAN_USD = Decimal("9999999999.99")  # Plan amounts are DecimalField(max_digits=12, decimal_places=2)
MAX_MARKUP_PERCENT = Decimal(1000)


def plan_amount_error(value: Decimal, *, maximum: Decimal = MAX_PLAN_USD) -> str | None:
    """Why `value` cannot be a plan amount (USD, or percent for the markup), or None when it can."""
    if not value.is_finite() or value < 0:
        return "must be zero or more"
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        return "at most 2 decimal places"
    if value > maximum:
        return f"must be at most {maximum.normalize():f}"
    return None


def plan_set(
    tenant: Tenant,
    *,
    actor: Actor,
    base_fee_usd: Decimal = ZERO,
    markup_percent: Decimal = ZERO,
    included_usd: Decimal = ZERO,
    line_grouping: str = LineGrouping.MODEL,
) -> bool:
    """Set the tenant's plan (YAML `billing:` and the console). Returns whether anything changed.

    Drafts pick the new terms up on their next refresh; finalized invoices keep the terms they had.
    """
    errors = {}
    for name, value, maximum in (
        ("base_fee_usd", base_fee_usd, MAX_PLAN_USD),
        ("markup_percent", markup_percent, MAX_MARKUP_PERCENT),
        ("included_usd", included_usd, MAX_PLAN_USD),
    ):
        problem = plan_amount_error(Decimal(value), maximum=maximum)
        if problem:
            errors[name] = problem
    if line_grouping not in LineGrouping.values:
        errors["line_grouping"] = f"must be one of {', '.join(LineGrouping.values)}"
    if errors:
        raise ValidationError(errors)
    wanted = {
        "base_fee_usd": Decimal(base_fee_usd),
        "markup_percent": Decimal(markup_percent),
        "included_usd": Decimal(included_usd),
        "line_grouping": line_grouping,
    }
    with transaction.atomic():
        plan, created = Plan.objects.select_for_update().get_or_create(tenant=tenant)
        changes = {k: [str(getattr(plan, k)), str(v)] for k, v in wanted.items() if getattr(plan, k) != v}
        if not created and not changes:
            return False
        for k, v in wanted.items():
            setattr(plan, k, v)
        plan.updated_at = timezone.now()
        plan.save(update_fields=[*wanted, "updated_at"])
        audit(tenant, actor=actor, action="billing.plan", target_type="Plan", target_label=tenant.slug, changes=changes)
    return True
