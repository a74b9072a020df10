"""Management REST API for money: budgets and spend (conventions in tenants.apis)."""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from billing.invoicing.exports import invoice_csv, invoice_filename, invoice_json, invoice_pdf
from billing.invoicing.services import invoice_refresh, invoice_void
from billing.models import BudgetMode, BudgetPeriod, InvoiceStatus
from billing.selectors import (
    access_budget,
    access_invoice,
    budget_usage,
    own_keys,
    spend_by_key,
    spend_by_model,
    spend_summary,
    tenant_timezone,
    visible_budgets,
    visible_invoices,
)
from billing.services import (
    MAX_ALERT_PERCENT,
    NOT_A_DRAFT,
    NOTHING_TO_BILL,
    budget_delete,
    budget_upsert,
    invoice_finalize_draft,
)
from gateway_project.common.money import format_usd, from_pico
from tenants.apis import TokenApi
from tenants.models import Role
from tenants.permissions import BILLING_MANAGE, CONFIG_WRITE
from tenants.strict import StrictSerializer


class BudgetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="budget.id")
    scope = serializers.CharField(source="budget.scope")
    period = serializers.CharField(source="budget.period")
    mode = serializers.CharField(source="budget.mode")
    limit_usd = serializers.DecimalField(source="budget.limit_usd", max_digits=18, decimal_places=6)
    alert_at = serializers.ListField(source="budget.alert_at", child=serializers.IntegerField())
    spent_usd = serializers.SerializerMethodField(help_text="Spent in the current period (tenant time zone).")
    remaining_usd = serializers.SerializerMethodField()
    percent = serializers.IntegerField()

    def get_spent_usd(self, usage) -> str:
        return format_usd(usage.spent)

    def get_remaining_usd(self, usage) -> str:
        return format_usd(usage.remaining)


class BudgetListApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(BudgetOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List budgets with this period's spend")
    def get(self, request: Request) -> Response:
        tz, now = tenant_timezone(self.access.tenant.id), timezone.now()
        usages = [budget_usage(b, now=now, tz=tz) for b in visible_budgets(self.access).order_by("scope", "period")]
        return Response(self.OutputSerializer(usages, many=True).data)


class BudgetUpsertApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(StrictSerializer):
        scope = serializers.CharField(max_length=220, help_text="tenant, key:NAME, user:ID or tag:TAG")
        limit_usd = serializers.DecimalField(max_digits=18, decimal_places=6, min_value=0)
        period = serializers.ChoiceField(choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
        mode = serializers.ChoiceField(choices=BudgetMode.choices, default=BudgetMode.HARD)
        alert_at = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=MAX_ALERT_PERCENT), required=False, allow_null=True
        )

    class OutputSerializer(BudgetOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer},
        summary="Create a budget, or change the one with the same scope and period",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        existed = visible_budgets(self.access).filter(
            scope=serializer.validated_data["scope"].strip(), period=serializer.validated_data["period"]
        )
        created = not existed.exists()
        budget, _changed = budget_upsert(self.access.tenant, actor=self.access.actor, **serializer.validated_data)
        usage = budget_usage(budget, now=timezone.now(), tz=tenant_timezone(self.access.tenant.id))
        return Response(
            self.OutputSerializer(usage).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class BudgetDeleteApi(TokenApi):
    required_perm = CONFIG_WRITE
    takes_no_input = True

    @extend_schema(request=None, responses={204: None}, summary="Delete a budget")
    def delete(self, request: Request, budget_id: int) -> Response:
        budget = access_budget(self.access, budget_id)
        budget_delete(self.access.tenant, budget=budget, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SpendApi(TokenApi):
    class QuerySerializer(StrictSerializer):
        since = serializers.DateField(required=False)
        until = serializers.DateField(required=False)

    class OutputSerializer(serializers.Serializer):
        total_usd = serializers.CharField()
        by_key = serializers.DictField(child=serializers.CharField())
        by_model = serializers.DictField(child=serializers.CharField())

    @extend_schema(
        parameters=[
            OpenApiParameter("since", date, description="First day (tenant time zone); default: all time."),
            OpenApiParameter("until", date, description="Last day, inclusive."),
        ],
        responses=OutputSerializer,
        summary="Spend by key and model, exact decimal strings (as `gateway spend --json`)",
    )
    def get(self, request: Request) -> Response:
        params = self.QuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        since, until = params.validated_data.get("since"), params.validated_data.get("until")
        if self.access.role != Role.MEMBER:
            return Response(spend_summary(self.access.tenant, since=since, until=until))
        # A member's token sees what the keys of the person who minted it spent.
        return Response(self._own_spend(since, until))

    def _own_spend(self, since: date | None, until: date | None) -> dict:
        tenant = self.access.tenant
        names = dict(own_keys(self.access).values_list("id", "name"))
        by_key = spend_by_key(tenant, since=since, until=until, key_ids=list(names))
        by_model = spend_by_model(tenant, since=since, until=until, key_ids=list(names))
        return {
            "total_usd": format_usd(from_pico(sum(by_key.values()))),
            "by_key": {
                names[k]: format_usd(from_pico(v)) for k, v in sorted(by_key.items(), key=lambda i: names[i[0]])
            },
            "by_model": {m: format_usd(from_pico(v)) for m, v in sorted(by_model)},
        }


# --- Invoices (owners only: billing.manage) ---------------------------------------------------------


class InvoiceSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.CharField(source="label", help_text="INV-000042, or DRAFT until finalized.")
    status = serializers.CharField()
    month = serializers.DateField(format="%Y-%m", help_text="The calendar month billed (tenant time zone).")
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    currency = serializers.CharField()
    total_usd = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True)
    finalized_at = serializers.DateTimeField(allow_null=True)
    paid_at = serializers.DateTimeField(allow_null=True)


def _current_invoice(access, invoice_id: int):
    invoice = access_invoice(access, invoice_id)
    if invoice.status == InvoiceStatus.DRAFT:
        # A draft follows the ledger: show it as of now.
        invoice = invoice_refresh(invoice.tenant, invoice.month) or invoice
    return invoice


class InvoiceListApi(TokenApi):
    required_perm = BILLING_MANAGE
    takes_no_input = True

    class OutputSerializer(InvoiceSummarySerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List the tenant's invoices, newest first")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(visible_invoices(self.access), many=True).data)


class InvoiceDetailApi(TokenApi):
    required_perm = BILLING_MANAGE
    takes_no_input = True

    class OutputSerializer(InvoiceSummarySerializer):
        subtotal_usd = serializers.CharField()
        fee_usd = serializers.CharField()
        markup_usd = serializers.CharField()
        lines = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        responses=OutputSerializer,
        summary="One invoice with its lines (exact decimal strings; the total is rounded once, to the cent)",
    )
    def get(self, request: Request, invoice_id: int) -> Response:
        invoice = _current_invoice(self.access, invoice_id)
        body = {**InvoiceSummarySerializer(invoice).data, **invoice_json(invoice)}
        body["total_usd"] = f"{invoice.total_usd:.2f}"
        return Response(body)


class InvoicePdfApi(TokenApi):
    required_perm = BILLING_MANAGE
    takes_no_input = True

    @extend_schema(responses={(200, "application/pdf"): bytes}, summary="The invoice as a PDF")
    def get(self, request: Request, invoice_id: int) -> HttpResponse:
        invoice = _current_invoice(self.access, invoice_id)
        response = HttpResponse(invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice_filename(invoice, "pdf")}"'
        return response


class InvoiceCsvApi(TokenApi):
    required_perm = BILLING_MANAGE
    takes_no_input = True

    @extend_schema(
        responses={(200, "text/csv"): str}, summary="The invoice as CSV: one row per line, amounts sum to the total"
    )
    def get(self, request: Request, invoice_id: int) -> HttpResponse:
        invoice = _current_invoice(self.access, invoice_id)
        response = HttpResponse(invoice_csv(invoice), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{invoice_filename(invoice, "csv")}"'
        return response


class InvoiceNotVoidable(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "invoice_not_voidable"
    default_detail = "Only a finalized, unpaid invoice can be voided."


class InvoiceVoidApi(TokenApi):
    required_perm = BILLING_MANAGE
    takes_no_input = True

    class OutputSerializer(InvoiceSummarySerializer):
        voided_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(
        request=None,
        responses={200: OutputSerializer, 409: None},
        summary="Void a finalized, unpaid invoice (it keeps its number; Stripe's copy is voided too)",
        description="409 `invoice_not_voidable` for a draft, a paid or an already void invoice.",
    )
    def post(self, request: Request, invoice_id: int) -> Response:
        invoice = access_invoice(self.access, invoice_id)
        if not invoice_void(self.access.tenant, invoice=invoice, actor=self.access.actor):
            invoice.refresh_from_db()  # the state that refused it, not the one we loaded
            raise InvoiceNotVoidable(
                f"{invoice.label} is {invoice.status}: only a finalized, unpaid invoice can be voided."
            )
        invoice.refresh_from_db()
        return Response(self.OutputSerializer(invoice).data)


class InvoiceNotFinalizable(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "invoice_not_finalizable"
    default_detail = "Only a draft invoice with something to bill can be finalized."


class InvoiceFinalizeApi(TokenApi):
    required_perm = BILLING_MANAGE

    class InputSerializer(StrictSerializer):
        early = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Close the running month's draft today (as `gateway finalize-invoices --early`); usage "
            "after today goes on a new invoice. Without it, only a month that has ended can be finalized.",
        )

    class OutputSerializer(InvoiceSummarySerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 400: None, 409: None},
        summary="Finalize a draft invoice: it gets the next number and never changes again",
        description="409 `invoice_not_finalizable` for an invoice that is not a draft (finalized, paid or void) "
        "or has nothing to bill; 400 naming `early` for the running month without `early: true`.",
    )
    def post(self, request: Request, invoice_id: int) -> Response:
        invoice = access_invoice(self.access, invoice_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            invoice = invoice_finalize_draft(
                self.access.tenant, invoice=invoice, actor=self.access.actor, early=serializer.validated_data["early"]
            )
        except DjangoValidationError as exc:
            if getattr(exc, "code", None) in (NOT_A_DRAFT, NOTHING_TO_BILL):
                raise InvoiceNotFinalizable(exc.messages[0]) from None
            raise
        return Response(self.OutputSerializer(invoice).data)
