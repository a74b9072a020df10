"""The console's billing page (owners only): the plan, month-to-date spend and the projected invoice,
the invoice list with CSV and PDF downloads, and the way into the Stripe customer portal.

Other roles get 403 (and people outside the tenant 404), like the other owner-only pages.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from billing.invoicing.exports import invoice_csv, invoice_filename, invoice_pdf
from billing.invoicing.services import (
    MAX_MARKUP_PERCENT,
    MAX_PLAN_USD,
    invoice_refresh,
    invoice_void,
    local_today,
    plan_set,
    projected_invoice,
)
from billing.invoicing.statement import invoice_statement
from billing.models import InvoiceStatus, LineGrouping
from billing.selectors import access_invoice, ledger_month_total, plan_of, visible_invoices
from billing.stripe import sync as stripe_sync
from gateway_project.common.htmx import HtmxHttpRequest
from tenants.forms import add_service_errors
from tenants.permissions import BILLING_MANAGE, TenantAccess, tenant_access


class PlanForm(forms.Form):
    base_fee_usd = forms.DecimalField(
        label="Monthly base fee (USD)", min_value=0, max_value=MAX_PLAN_USD, decimal_places=2, initial=0
    )
    markup_percent = forms.DecimalField(
        label="Markup on provider cost (%)", min_value=0, max_value=MAX_MARKUP_PERCENT, decimal_places=2, initial=0
    )
    included_usd = forms.DecimalField(
        label="Included usage (USD)",
        min_value=0,
        max_value=MAX_PLAN_USD,
        decimal_places=2,
        initial=0,
        help_text="Usage up to this amount each month is covered by the base fee.",
    )
    line_grouping = forms.ChoiceField(label="Invoice lines", choices=LineGrouping.choices, initial=LineGrouping.MODEL)


def _plan_initial(access: TenantAccess) -> dict:
    plan = plan_of(access.tenant)
    if plan is None:
        return {}
    return {
        "base_fee_usd": plan.base_fee_usd,
        "markup_percent": plan.markup_percent,
        "included_usd": plan.included_usd,
        "line_grouping": plan.line_grouping,
    }


def _page_context(access: TenantAccess) -> dict:
    today = local_today(access.tenant)
    month = today.replace(day=1)
    projected = projected_invoice(access.tenant)
    return {
        "section": "billing",
        "month": month,
        "today": today,
        "mtd_spend": ledger_month_total(access.tenant, month),
        "projected": projected,
        "statement": invoice_statement(projected),
        "invoices": list(visible_invoices(access).exclude(status=InvoiceStatus.DRAFT, month=month)),
        "stripe_on": stripe_sync.enabled(),
    }


@login_required
@require_http_methods(["GET", "POST"])
def billing_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, BILLING_MANAGE)
    form = PlanForm(request.POST or None, initial=_plan_initial(access))
    if request.method == "POST":
        if form.is_valid():
            try:
                plan_set(access.tenant, actor=access.actor, **form.cleaned_data)
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, "Saved the plan. The running month's invoice uses it from now on.")
                if request.htmx:
                    return HttpResponseClientRedirect(reverse("billing", kwargs={"slug": slug}))
                return redirect("billing", slug=slug)
        if request.htmx:
            return render(request, "billing/invoices.html#plan_form", {"plan_form": form})
    return render(request, "billing/invoices.html", {**_page_context(access), "plan_form": form})


def _download(request: HtmxHttpRequest, slug: str, invoice_id: int):
    access = tenant_access(request, slug, BILLING_MANAGE)
    invoice = access_invoice(access, invoice_id)
    if invoice.status == InvoiceStatus.DRAFT:
        invoice = invoice_refresh(invoice.tenant, invoice.month) or invoice
    return invoice


@login_required
@require_GET
def invoice_csv_download(request: HtmxHttpRequest, slug: str, invoice_id: int) -> HttpResponse:
    invoice = _download(request, slug, invoice_id)
    response = HttpResponse(invoice_csv(invoice), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{invoice_filename(invoice, "csv")}"'
    return response


@login_required
@require_GET
def invoice_pdf_download(request: HtmxHttpRequest, slug: str, invoice_id: int) -> HttpResponse:
    invoice = _download(request, slug, invoice_id)
    response = HttpResponse(invoice_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{invoice_filename(invoice, "pdf")}"'
    return response


@login_required
@require_POST
def invoice_void_view(request: HtmxHttpRequest, slug: str, invoice_id: int) -> HttpResponse:
    """Write a finalized, unpaid invoice off. It keeps its number; Stripe's copy is voided too."""
    access = tenant_access(request, slug, BILLING_MANAGE)
    invoice = access_invoice(access, invoice_id)
    if invoice_void(access.tenant, invoice=invoice, actor=access.actor):
        messages.success(request, f"Voided {invoice.label}: it keeps its number and is not billed.")
    else:
        invoice.refresh_from_db()
        messages.error(
            request,
            f"{invoice.label} is {invoice.get_status_display().lower()}: only a finalized, unpaid invoice can be voided.",
        )
    if request.htmx:
        return HttpResponseClientRedirect(reverse("billing", kwargs={"slug": slug}))
    return redirect("billing", slug=slug)
