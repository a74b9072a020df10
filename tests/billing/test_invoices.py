"""Monthly invoices from the spend ledger: totals to the cent, plans, finalization, corrections, --early."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing.invoice_rules import line_cents, round_total
from billing.invoicing.services import finalize_invoices, invoice_finalize, invoice_for_month
from billing.models import BillingSettings, Invoice, InvoiceStatus, LineKind, Plan
from billing.selectors import ledger_month_total
from gateway_project.common.money import from_pico
from tenants.audit import Actor
from tests.helpers.billing import DEC_2, NOV, add_ledger, synthetic_month

MID_NOV = datetime(2026, 11, 15, 12, tzinfo=UTC)


def test_a_month_invoiced_twice_is_one_invoice_whose_total_is_the_ledger_to_the_cent(people):
    exact = synthetic_month(people.acme)
    first = invoice_for_month(people.acme, NOV)
    second = invoice_for_month(people.acme, NOV)
    assert first.id == second.id
    assert Invoice.objects.filter(tenant=people.acme).count() == 1
    assert second.status == InvoiceStatus.DRAFT and second.label == "DRAFT"
    assert second.total_usd == round_total(from_pico(exact)) == round_total(ledger_month_total(people.acme, NOV))
    assert sorted(ln.model for ln in second.lines.all()) == ["claude-sonnet", "gpt-4o", "gpt-4o-mini"]
    assert sum(ln.cost_usd for ln in second.lines.all()) == from_pico(exact)  # unrounded lines
    assert sum(c for _ln, c in line_cents(second)) == second.total_usd * 100

    finalized = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    again = finalize_invoices(tenant=people.acme, month=NOV, now=DEC_2)
    assert again == []
    assert finalized.number == 1 and finalized.label == "INV-000001"
    assert Invoice.objects.filter(tenant=people.acme).count() == 1
    assert invoice_for_month(people.acme, NOV).id == finalized.id


def test_fee_markup_and_included_follow_the_documented_rounding_rule(people):
    Plan.objects.create(
        tenant=people.acme, base_fee_usd=Decimal(49), markup_percent=Decimal(10), included_usd=Decimal("0.5")
    )
    # 1.234567891234 USD and 0.000000000001 USD of provider cost.
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 1_234_567_891_234)
    add_ledger(people.acme, date(2026, 11, 4), "gpt-4o-mini", 1)
    inv = invoice_for_month(people.acme, NOV)
    cost = Decimal("1.234567891235")
    markup = cost * Decimal("0.1")
    assert inv.fee_usd == 49
    assert inv.markup_usd == markup
    kinds = {ln.kind: ln.amount_usd for ln in inv.lines.all()}
    assert kinds[LineKind.INCLUDED] == Decimal("-0.5")
    assert inv.subtotal_usd == cost - Decimal("0.5")
    # Exact: 49 + 1.234567891235 + 0.1234567891235 - 0.5 = 49.8580246803585 -> 49.86, rounded once.
    assert inv.total_usd == Decimal("49.86")
    assert sum(c for _ln, c in line_cents(inv)) == 4986


def test_included_never_exceeds_the_usage_charge(people):
    Plan.objects.create(tenant=people.acme, included_usd=Decimal(20))
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 3 * 10**12)
    inv = invoice_for_month(people.acme, NOV)
    assert inv.total_usd == 0
    assert [ln.amount_usd for ln in inv.lines.filter(kind=LineKind.INCLUDED)] == [Decimal(-3)]


def test_a_month_that_has_not_ended_cannot_be_finalized_without_early(people):
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 10**12)
    with pytest.raises(ValidationError, match="has not ended"):
        invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=MID_NOV)
    assert finalize_invoices(tenant=people.acme, now=MID_NOV) == []
    assert not Invoice.objects.exclude(status=InvoiceStatus.DRAFT).exists()


def test_a_finalized_invoice_never_changes_and_a_late_correction_is_a_credit_on_the_next(people):
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 10 * 10**12)
    nov = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    assert nov.total_usd == 10
    # A late correction lowers November by 2.5 USD; December has its own usage.
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", -2_500_000_000_000, prompt=0, completion=0)
    add_ledger(people.acme, date(2026, 12, 1), "gpt-4o", 4 * 10**12)

    assert invoice_for_month(people.acme, NOV).id == nov.id
    nov.refresh_from_db()
    assert nov.total_usd == 10 and nov.status == InvoiceStatus.FINALIZED
    assert [ln.amount_usd for ln in nov.lines.all()] == [Decimal(10)]

    dec = invoice_for_month(people.acme, date(2026, 12, 1))
    credit = dec.lines.get(kind=LineKind.CREDIT)
    assert credit.amount_usd == Decimal("-2.5") and credit.usage_month == NOV
    assert "2026-11" in credit.label
    assert dec.total_usd == Decimal("1.5")
    # Finalized once, the correction is billed and does not come back.
    dec = invoice_finalize(
        people.acme, month=date(2026, 12, 1), actor=Actor.cli(), now=datetime(2027, 1, 2, tzinfo=UTC)
    )
    jan = invoice_for_month(people.acme, date(2027, 1, 1), now=datetime(2027, 1, 2, tzinfo=UTC))
    assert jan.total_usd == 0 and not jan.lines.exists()
    assert (nov.number, dec.number) == (1, 2)


def test_early_close_sends_the_rest_of_the_month_to_a_new_invoice(people):
    add_ledger(people.acme, date(2026, 11, 10), "gpt-4o", 3 * 10**12)
    add_ledger(people.acme, date(2026, 11, 15), "gpt-4o", 1 * 10**12)
    [early] = finalize_invoices(tenant=people.acme, early=True, now=MID_NOV)
    assert early.status == InvoiceStatus.FINALIZED and early.total_usd == 4
    assert (early.period_start, early.period_end) == (NOV, date(2026, 11, 15))
    assert finalize_invoices(tenant=people.acme, early=True, now=MID_NOV) == []  # idempotent: nothing new

    # Later usage that same day and month goes to a second invoice for the rest of November.
    add_ledger(people.acme, date(2026, 11, 15), "gpt-4o", 2 * 10**12)
    add_ledger(people.acme, date(2026, 11, 20), "gpt-4o-mini", 5 * 10**11)
    rest = invoice_for_month(people.acme, NOV)
    assert rest.id != early.id and rest.status == InvoiceStatus.DRAFT
    assert (rest.period_start, rest.period_end) == (date(2026, 11, 15), date(2026, 11, 30))
    assert rest.total_usd == Decimal("2.50")
    [closed] = finalize_invoices(tenant=people.acme, now=DEC_2)
    assert closed.id == rest.id and closed.number == early.number + 1
    assert early.total_usd + closed.total_usd == round_total(ledger_month_total(people.acme, NOV))
    assert finalize_invoices(tenant=people.acme, now=DEC_2) == []


def test_months_follow_the_tenant_time_zone(people):
    BillingSettings.objects.create(tenant=people.acme, timezone="Pacific/Kiritimati")  # UTC+14
    add_ledger(people.acme, date(2026, 11, 30), "gpt-4o", 10**12)
    add_ledger(people.acme, date(2026, 12, 1), "gpt-4o", 2 * 10**12)
    # 2026-11-30 11:00 UTC is already December 1st in Kiritimati: November has ended there.
    [nov] = finalize_invoices(tenant=people.acme, now=datetime(2026, 11, 30, 11, tzinfo=UTC))
    assert nov.month == NOV and nov.total_usd == 1
    # ... but not in UTC, for globex.
    add_ledger(people.globex, date(2026, 11, 30), "gpt-4o", 10**12)
    assert finalize_invoices(tenant=people.globex, now=datetime(2026, 11, 30, 11, tzinfo=UTC)) == []


def test_a_month_without_anything_to_bill_gets_no_invoice(people):
    assert finalize_invoices(tenant=people.acme, now=DEC_2) == []
    assert not Invoice.objects.exists()


def test_lines_per_model_and_key_when_the_plan_asks(people):
    from tenants.models import VirtualKey

    web = VirtualKey.objects.create(tenant=people.acme, name="web", prefix="sk-gw-web", key_hash="h1")
    Plan.objects.create(tenant=people.acme, line_grouping="key")
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 10**12, key=web.id)
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 2 * 10**12)
    inv = invoice_for_month(people.acme, NOV)
    assert [(ln.label, ln.key_name, ln.amount_usd) for ln in inv.lines.all()] == [
        ("gpt-4o · (no key)", "(no key)", Decimal(2)),
        ("gpt-4o · web", "web", Decimal(1)),
    ]
    assert inv.total_usd == 3


def test_paid_and_void_are_one_way_and_void_is_not_billed_again(people):
    from billing.invoicing.services import invoice_void, mark_invoice_paid

    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 10**12)
    add_ledger(people.globex, date(2026, 11, 3), "gpt-4o", 10**12)
    paid = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    assert mark_invoice_paid(paid) is True
    assert mark_invoice_paid(paid) is False  # Stripe delivered invoice.paid twice: nothing changes
    paid.refresh_from_db()
    assert paid.status == InvoiceStatus.PAID and paid.paid_at is not None
    assert invoice_void(people.acme, invoice=paid, actor=Actor.cli()) is False

    written_off = invoice_finalize(people.globex, month=NOV, actor=Actor.cli(), now=DEC_2)
    with pytest.raises(ValidationError):
        invoice_void(people.acme, invoice=written_off, actor=Actor.cli())
    assert invoice_void(people.globex, invoice=written_off, actor=Actor.cli()) is True
    dec = invoice_for_month(people.globex, date(2026, 12, 1), now=DEC_2)
    assert not dec.lines.exists()
