"""What an invoice shows people, the same in the PDF and on the console's billing page.

The itemized lines are usage, corrections and the included amount; the base fee and the markup are
shown once each, below them next to the subtotal, because the invoice stores them as parts of its
own (`fee_usd`, `markup_usd`, as the JSON contract has them) and listing them as lines too printed
them twice. Every amount but the total is written exactly, in one format, so a markup of 0.000058 never
reads 0.00 in one place and 0.000058 in another; the total is the one rounded figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.invoice_rules import BILLED_KINDS
from billing.models import Invoice, InvoiceLine, InvoiceStatus, LineKind
from gateway_project.common.money import format_usd

# Fee, markup and included lines have no tokens or provider cost of their own: a dash, not a 0 that
# reads as "nothing was used".
NOT_APPLICABLE = "—"
PARTS = (LineKind.FEE, LineKind.MARKUP)


@dataclass(frozen=True)
class StatementLine:
    number: int
    label: str
    tokens: str
    cost: str
    amount: str


@dataclass(frozen=True)
class StatementRow:
    label: str
    amount: str


@dataclass(frozen=True)
class Statement:
    heading: str  # "Draft invoice", "Invoice INV-000042", "Invoice INV-000042 (Void)"
    lines: list[StatementLine]
    summary: list[StatementRow]  # subtotal, then base fee and markup when the invoice has them
    total: StatementRow


def exact_usd(amount: Decimal) -> str:
    """An exact amount for people: at least cents (49.00), more places only when it has them (0.000058)."""
    text = format_usd(amount)
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def invoice_heading(invoice: Invoice) -> str:
    # A draft has no number yet ("DRAFT" is only its placeholder label): say what it is instead.
    if invoice.number is None:
        return "Draft invoice"
    if invoice.status == InvoiceStatus.FINALIZED:
        return f"Invoice {invoice.label}"
    return f"Invoice {invoice.label} ({invoice.get_status_display()})"


def itemized_lines(invoice: Invoice) -> list[InvoiceLine]:
    """The lines listed one by one: everything but the base fee and markup, which are shown as parts."""
    return [ln for ln in invoice.lines.all() if ln.kind not in PARTS]


def invoice_statement(invoice: Invoice) -> Statement:
    lines = [
        StatementLine(
            number=i,
            label=ln.label,
            tokens=f"{ln.tokens:,}" if ln.kind in BILLED_KINDS else NOT_APPLICABLE,
            cost=exact_usd(ln.cost_usd) if ln.kind in BILLED_KINDS else NOT_APPLICABLE,
            amount=exact_usd(ln.amount_usd),
        )
        for i, ln in enumerate(itemized_lines(invoice), start=1)
    ]
    summary = [StatementRow("Subtotal (usage, corrections, included)", exact_usd(invoice.subtotal_usd))]
    if invoice.fee_usd:
        summary.append(StatementRow("Base fee", exact_usd(invoice.fee_usd)))
    if invoice.markup_usd:
        summary.append(
            StatementRow(f"Markup ({invoice.markup_percent.normalize():f} %)", exact_usd(invoice.markup_usd))
        )
    total = StatementRow(f"Total {invoice.currency.upper()}", f"{invoice.total_usd:.2f}")
    return Statement(heading=invoice_heading(invoice), lines=lines, summary=summary, total=total)
