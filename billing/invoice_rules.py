"""The invoice rules that need no query: calendar months, which invoices count as billed, the one
rounding of a total to cents, and its split across the lines (the module docstring of
billing.invoicing.services states the rules in full).

Reads (billing.selectors), the Stripe push (billing.stripe.sync) and the exports use these as well as
the invoice services, so they live below all of them.
"""

from __future__ import annotations

import calendar
from datetime import date
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from django.core.exceptions import ValidationError

from billing.models import Invoice, InvoiceLine, InvoiceStatus, LineKind

CENT = Decimal("0.01")
HUNDRED = Decimal(100)
ZERO = Decimal(0)
# Invoices that count as billed: void ones too (voiding writes the amount off, it is not re-billed).
CLOSED = (InvoiceStatus.FINALIZED, InvoiceStatus.PAID, InvoiceStatus.VOID)
BILLED_KINDS = (LineKind.USAGE, LineKind.CREDIT)


def parse_month(text: str) -> date:
    """'2026-11' -> date(2026, 11, 1); ValidationError for anything else."""
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise ValidationError(f"{text!r} is not a month (YYYY-MM)") from None


def month_last_day(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def round_total(amount: Decimal) -> Decimal:
    """The invoice's one rounding: to whole cents, half up."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def line_cents(invoice: Invoice) -> list[tuple[InvoiceLine, int]]:
    """Each line in whole cents, summing exactly to the invoice total (the one rounding, split across
    the lines by largest remainder; ties go to the earlier line). For CSV rows and Stripe items."""
    lines = list(invoice.lines.all())
    total_cents = int(invoice.total_usd * HUNDRED)
    exact = [ln.amount_usd * HUNDRED for ln in lines]
    floors = [int(x.to_integral_value(rounding=ROUND_FLOOR)) for x in exact]
    missing = total_cents - sum(floors)
    order = sorted(range(len(lines)), key=lambda i: (-(exact[i] - floors[i]), i))
    cents = list(floors)
    # `missing` is within 0..len(lines) by construction (the total rounds the exact sum); the guard
    # keeps a hand-edited row from looping.
    for i in order[: max(missing, 0)]:
        cents[i] += 1
    return list(zip(lines, cents, strict=True))


def cents_to_usd(cents: int) -> Decimal:
    return (Decimal(cents) / HUNDRED).quantize(CENT)
