"""Console pages for money: budgets with usage bars, rate limits, and the spend overview.

Conventions as in tenants.views: every form works without JavaScript; with htmx the same view answers
with a fragment of the same template. Members see the tenant budget and the budgets and spend of the
keys they created; viewers read everything; admins and owners change budgets, limits and settings.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from billing.forms import BillingSettingsForm, BudgetForm, LimitForm, SpendRangeForm
from billing.models import LimitScope, RateLimit
from billing.periods import period_start
from billing.selectors import (
    BudgetUsage,
    access_budget,
    access_invoice,
    budget_outage_mode,
    budget_usage,
    deployment_rate_limits,
    key_names,
    key_rate_limits,
    own_keys,
    price_overrides,
    spend_by_end_user,
    spend_by_key,
    spend_by_model_rows,
    spend_by_tag,
    spend_totals,
    tenant_rate_limit,
    tenant_timezone,
    unpriced_deployments,
    visible_budgets,
)
from billing.services import (
    billing_settings_set,
    budget_delete,
    budget_outage_mode_set,
    budget_upsert,
    invoice_finalize_draft,
    rate_limit_set,
)
from gateway_project.common.htmx import HtmxHttpRequest
from gateway_project.common.money import from_pico
from tenants.forms import add_service_errors
from tenants.models import Role
from tenants.permissions import BILLING_MANAGE, CONFIG_WRITE, TenantAccess, access_key, tenant_access, visible_keys

PERIOD_ORDER = {"day": 0, "week": 1, "month": 2, "total": 3}


# --- Access helpers --------------------------------------------------------------------------------


def _usages(access: TenantAccess) -> list[BudgetUsage]:
    tz = tenant_timezone(access.tenant.id)
    now = timezone.now()
    budgets = sorted(visible_budgets(access), key=lambda b: (b.scope != "tenant", b.scope, PERIOD_ORDER[b.period]))
    return [budget_usage(b, now=now, tz=tz) for b in budgets]


def _month_start(access: TenantAccess) -> date | None:
    return period_start("month", timezone.now(), tenant_timezone(access.tenant.id))


def _own_key_rows(access: TenantAccess, usages: list[BudgetUsage]) -> list[dict]:
    """The caller's own keys: spend this month and the budget closest to stopping each one."""
    keys = list(own_keys(access).order_by("revoked", "name"))
    if not keys:
        return []
    spent = spend_by_key(access.tenant, since=_month_start(access), key_ids=[k.id for k in keys])
    tenant_wide = [u for u in usages if u.budget.scope == "tenant"]
    rows = []
    for key in keys:
        applying = tenant_wide + [u for u in usages if u.budget.scope == f"key:{key.name}"]
        # The budget with the least money left is the one that will refuse (or alert) first.
        tightest = min(applying, key=lambda u: (u.remaining, -u.percent), default=None)
        rows.append({"key": key, "spent": from_pico(spent.get(key.id, 0)), "usage": tightest})
    return rows


# --- Budgets ---------------------------------------------------------------------------------------


def _budgets_context(access: TenantAccess, form: BudgetForm | None = None) -> dict:
    usages = _usages(access)
    return {
        "section": "budgets",
        "usages": usages,
        "own_keys": _own_key_rows(access, usages),
        "form": form or BudgetForm(),
        "timezone": tenant_timezone(access.tenant.id).key,
        "outage_mode": budget_outage_mode(access.tenant.id),
        "unpriced": unpriced_deployments(access.tenant.id),
    }


@login_required
@require_POST
def budget_outage_mode_view(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """What hard budgets do while Redis is down: refuse the calls they cover, or let them through."""
    access = tenant_access(request, slug)
    access.require(CONFIG_WRITE)
    mode = request.POST.get("mode", "")
    try:
        changed = budget_outage_mode_set(access.tenant, mode=mode, actor=access.actor)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if changed:
            what = "let calls through" if mode == "open" else "refuse the calls they cover"
            messages.success(request, f"While Redis is unreachable, hard budgets now {what}.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("budgets", kwargs={"slug": slug}))
    return redirect("budgets", slug=slug)


@login_required
@require_http_methods(["GET", "POST"])
def budgets(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        form = BudgetForm(request.POST)
        if form.is_valid():
            try:
                budget, _changed = budget_upsert(access.tenant, actor=access.actor, **form.cleaned_data)
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if request.htmx:
                    response = render(
                        request, "billing/budgets.html#create_form", {"form": BudgetForm(), "created": budget}
                    )
                    return trigger_client_event(response, "budgets-changed")
                messages.success(request, f"Saved the {budget.scope} budget ({budget.limit_usd.normalize()} USD).")
                return redirect("budgets", slug=slug)
        if request.htmx:
            return render(request, "billing/budgets.html#create_form", {"form": form})
        return render(request, "billing/budgets.html", _budgets_context(access, form))
    template = "billing/budgets.html#rows" if request.htmx else "billing/budgets.html"
    return render(request, template, _budgets_context(access))


@login_required
@require_http_methods(["GET", "POST"])
def budget_detail(request: HtmxHttpRequest, slug: str, budget_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    budget = access_budget(access, budget_id)
    form = BudgetForm(request.POST or None, initial=BudgetForm.initial_for(budget), editing=budget)
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            data = form.cleaned_data
            try:
                budget, _changed = budget_upsert(
                    access.tenant,
                    scope=budget.scope,
                    period=budget.period,
                    limit_usd=data["limit_usd"],
                    mode=data["mode"],
                    alert_at=data["alert_at"],
                    actor=access.actor,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if request.htmx:
                    usage = budget_usage(budget, now=timezone.now(), tz=tenant_timezone(access.tenant.id))
                    response = render(request, "billing/budgets.html#row", {"u": usage})
                    return trigger_client_event(response, "budgets-changed")
                messages.success(request, f"Saved the {budget.scope} budget.")
                return redirect("budgets", slug=slug)
    usage = budget_usage(budget, now=timezone.now(), tz=tenant_timezone(access.tenant.id))
    context = {"section": "budgets", "u": usage, "form": form}
    template = "billing/budgets.html#edit_row" if request.htmx else "billing/budget_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def budget_delete_view(request: HtmxHttpRequest, slug: str, budget_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    budget = access_budget(access, budget_id)
    access.require(CONFIG_WRITE)
    budget_delete(access.tenant, budget=budget, actor=access.actor)
    if request.htmx:
        return trigger_client_event(HttpResponse(""), "budgets-changed")
    messages.success(request, f"Deleted the {budget.scope} budget.")
    return redirect("budgets", slug=slug)


# --- Rate limits -----------------------------------------------------------------------------------


def _limit_initial(limit: RateLimit | None) -> dict:
    if limit is None:
        return {}
    return {"rpm": limit.rpm, "tpm": limit.tpm, "max_parallel": limit.max_parallel}


def _key_limit_rows(access: TenantAccess) -> list[dict]:
    keys = list(visible_keys(access).filter(revoked=False).order_by("name"))
    limits = key_rate_limits(access.tenant, [k.id for k in keys])
    return [{"key": k, "limit": limits.get(k.id)} for k in keys]


def _deployment_limit_rows(access: TenantAccess) -> list[dict]:
    return [{"limit": r, "deployment": d} for r, d in deployment_rate_limits(access.tenant)]


@login_required
@require_http_methods(["GET", "POST"])
def limits(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    current = tenant_rate_limit(access.tenant)
    form = LimitForm(request.POST or None, initial=_limit_initial(current), parallel=False)
    saved = False
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            data = form.cleaned_data
            try:
                rate_limit_set(
                    access.tenant, scope=LimitScope.TENANT, rpm=data["rpm"], tpm=data["tpm"], actor=access.actor
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if not request.htmx:
                    messages.success(request, "Saved the tenant's limits.")
                    return redirect("limits", slug=slug)
                saved = True
        if request.htmx:
            return render(request, "billing/limits.html#tenant_form", {"tenant_form": form, "saved": saved})
    context = {
        "section": "limits",
        "tenant_form": form,
        "key_rows": _key_limit_rows(access),
        "deployment_rows": _deployment_limit_rows(access),
    }
    return render(request, "billing/limits.html", context)


@login_required
@require_POST
def key_limits(request: HtmxHttpRequest, slug: str, key_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    # The key first: a member asking about someone else's key learns nothing (404, not 403).
    key = access_key(access, key_id)
    access.require(CONFIG_WRITE)
    form = LimitForm(request.POST)
    error = ""
    if form.is_valid():
        data = form.cleaned_data
        try:
            rate_limit_set(
                access.tenant,
                scope=LimitScope.KEY,
                ref=str(key.id),
                rpm=data["rpm"],
                tpm=data["tpm"],
                max_parallel=data["max_parallel"],
                actor=access.actor,
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
    else:
        error = " ".join(f"{form.fields[name].label}: {' '.join(errs)}" for name, errs in form.errors.items())
    if request.htmx:
        limit = key_rate_limits(access.tenant, [key.id]).get(key.id)
        context = {"row": {"key": key, "limit": limit}, "row_error": error, "saved": not error}
        return render(request, "billing/limits.html#key_row", context)
    if error:
        messages.error(request, f"{key.name}: {error}")
    else:
        messages.success(request, f"Saved the limits of {key.name}.")
    return redirect("limits", slug=slug)


# --- Spend -----------------------------------------------------------------------------------------


def _spend_range(access: TenantAccess, form: SpendRangeForm) -> tuple[date | None, date | None]:
    """(first day, last day) of the page's range in the tenant's time zone; this month by default."""
    today = timezone.now().astimezone(tenant_timezone(access.tenant.id)).date()
    data = form.cleaned_data if form.is_bound and form.is_valid() else {"range": "month"}
    if data["range"] == "7d":
        return today - timedelta(days=6), today
    if data["range"] == "30d":
        return today - timedelta(days=29), today
    if data["range"] == "custom":
        return data["since"], data.get("until")
    return _month_start(access), None


def _spend_context(access: TenantAccess, form: SpendRangeForm | None = None) -> dict:
    form = form or SpendRangeForm()
    since, until = _spend_range(access, form)
    # Members see what their own keys spent; viewers and up audit the whole tenant.
    own_only = access.role == Role.MEMBER
    key_ids = list(own_keys(access).values_list("id", flat=True)) if own_only else None
    names = key_names(access.tenant)
    by_key = sorted(
        (
            {"id": key_id, "name": names.get(key_id) if key_id else None, "spent": from_pico(cost)}
            for key_id, cost in spend_by_key(access.tenant, since=since, until=until, key_ids=key_ids).items()
        ),
        key=lambda row: -row["spent"],
    )
    by_model = spend_by_model_rows(access.tenant, since=since, until=until, key_ids=key_ids)
    totals = spend_totals(access.tenant, since=since, until=until, key_ids=key_ids)
    # The same range as instants, for the fragment served from the call-log rollups (observability).
    tz = tenant_timezone(access.tenant.id)
    start = datetime.combine(since or date(2000, 1, 1), time.min, tzinfo=tz)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=tz) if until else timezone.now()
    return {
        "usage_query": urlencode({"start": start.isoformat(), "end": end.isoformat()}),
        "section": "spend",
        "own_only": own_only,
        "range_form": form,
        "since": since,
        "until": until,
        "by_key": by_key,
        "by_model": by_model,
        "by_user": spend_by_end_user(access.tenant, since=since, until=until, key_ids=key_ids),
        # The tag ledger does not record keys, so a member (who sees only their keys) gets no tag totals.
        "by_tag": [] if own_only else spend_by_tag(access.tenant, since=since, until=until),
        "totals": totals,
        "total": totals["cost"],
        "prices": price_overrides(access.tenant),
    }


@login_required
@require_http_methods(["GET", "POST"])
def spend(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    form = BillingSettingsForm(request.POST or None, initial={"timezone": tenant_timezone(access.tenant.id).key})
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            try:
                billing_settings_set(access.tenant, timezone_name=form.cleaned_data["timezone"], actor=access.actor)
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, "Saved the time zone.")
                # Every figure on the page is counted from midnight in this zone: reload all of it.
                if request.htmx:
                    return HttpResponseClientRedirect(reverse("spend", kwargs={"slug": slug}))
                return redirect("spend", slug=slug)
        if request.htmx:
            return render(request, "billing/spend.html#settings_form", {"settings_form": form})
    range_form = SpendRangeForm(request.GET or None)
    context = {**_spend_context(access, range_form), "settings_form": form}
    return render(request, "billing/spend.html", context, status=400 if range_form.errors else 200)


# --- Invoices (the rest of the billing page is billing.invoicing.views) ------------------------------


@login_required
@require_POST
def invoice_finalize_view(request: HtmxHttpRequest, slug: str, invoice_id: int) -> HttpResponse:
    """Finalize a draft invoice now, as `gateway finalize-invoices` would; with `early`, close the running
    month today. Owners only, like the rest of the billing page."""
    access = tenant_access(request, slug, BILLING_MANAGE)
    invoice = access_invoice(access, invoice_id)
    try:
        invoice = invoice_finalize_draft(
            access.tenant, invoice=invoice, actor=access.actor, early=request.POST.get("early") == "1"
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Finalized {invoice.label} ({invoice.total_usd} USD). It will not change again.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("billing", kwargs={"slug": slug}))
    return redirect("billing", slug=slug)
