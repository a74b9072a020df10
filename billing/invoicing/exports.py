"""Invoices as JSON (`gateway invoice --json`), CSV and PDF (ReportLab, text from a Django template).

CSV and PDF show each line's amount in cents as `billing.invoice_rules.line_cents` splits the one rounded
total across the lines, so the rows always add up to the printed total; the exact unrounded amount
is in its own CSV column.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import escape

from billing.invoice_rules import cents_to_usd, line_cents
from billing.models import Invoice, LineKind
from gateway_project.common.money import format_usd

CSV_FIELDS = [
    "invoice",
    "position",
    "kind",
    "description",
    "model",
    "key",
    "usage_month",
    "requests",
    "tokens",
    "cost_usd",
    "amount_exact_usd",
    "amount_usd",
]


def _usd(amount: Decimal) -> str:
    return format_usd(amount)


def _exact(amount: Decimal) -> str:
    """An exact amount for people: at least cents (49.00), more places only when it has them."""
    text = format_usd(amount)
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    """The `gateway invoice --json` contract. Amounts are exact decimal strings; `total_usd` is the
    rounded total. `lines` holds usage, correction and included lines (fee and markup have their own
    fields): subtotal_usd is their sum and total_usd = round(subtotal + fee + markup)."""
    lines = [
        {
            "model": ln.label if ln.kind in (LineKind.CREDIT, LineKind.INCLUDED) or not ln.model else ln.model,
            "tokens": ln.tokens,
            "cost_usd": _usd(ln.cost_usd),
            "amount_usd": _usd(ln.amount_usd),
        }
        for ln in invoice.lines.all()
        if ln.kind not in (LineKind.FEE, LineKind.MARKUP)
    ]
    return {
        "number": invoice.label,
        "status": invoice.status,
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "currency": "usd",
        "subtotal_usd": _usd(invoice.subtotal_usd),
        "fee_usd": _usd(invoice.fee_usd),
        "markup_usd": _usd(invoice.markup_usd),
        "total_usd": f"{invoice.total_usd:.2f}",
        "lines": lines,
    }


def invoice_csv(invoice: Invoice) -> str:
    """One row per invoice line; the amount_usd column sums to the invoice total."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for line, cents in line_cents(invoice):
        writer.writerow(
            {
                "invoice": invoice.label,
                "position": line.position,
                "kind": line.kind,
                "description": _csv_safe(line.label),
                "model": _csv_safe(line.model),
                "key": _csv_safe(line.key_name),
                "usage_month": f"{line.usage_month:%Y-%m}" if line.usage_month else "",
                "requests": line.requests,
                "tokens": line.tokens,
                "cost_usd": _usd(line.cost_usd),
                "amount_exact_usd": _usd(line.amount_usd),
                "amount_usd": f"{cents_to_usd(cents):.2f}",
            }
        )
    return out.getvalue()


def _csv_safe(text: str) -> str:
    # Model and key names come from tenants: a leading =, +, - or @ would run as a spreadsheet formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def invoice_filename(invoice: Invoice, ext: str) -> str:
    return f"{invoice.billed_slug}-{invoice.month:%Y-%m}-{invoice.label}.{ext}"


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a PDF: operator, tenant, number, period, lines and totals."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    cents = line_cents(invoice)
    context = {
        "invoice": invoice,
        # The snapshot on the invoice, not the live tenant: a finalized invoice never changes.
        "tenant": {"name": invoice.billed_name, "slug": invoice.billed_slug},
        "operator_name": settings.GATEWAY_OPERATOR_NAME,
        "operator_address": [a for a in settings.GATEWAY_OPERATOR_ADDRESS.splitlines() if a.strip()],
    }
    # The words come from a Django template (autoescaped, which is also what ReportLab's paragraph
    # markup needs); each non-empty line is one paragraph, "# " starts a heading.
    text = render_to_string("billing/invoices_pdf.txt", context)
    story: list[Any] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("# "):
            story.append(Paragraph(line[2:], styles["Heading2"]))
        else:
            story.append(Paragraph(line, styles["Normal"]))
    story.append(Spacer(1, 6 * mm))
    rows: list[list[Any]] = [["#", "Description", "Tokens", "Provider cost (USD)", "Amount (USD)"]]
    for line, c in cents:
        rows.append(
            [
                str(line.position),
                Paragraph(_escape(line.label), styles["Normal"]),
                f"{line.tokens:,}" if line.tokens else "",
                _exact(line.cost_usd) if line.kind in (LineKind.USAGE, LineKind.CREDIT) else "",
                f"{cents_to_usd(c):.2f}",
            ]
        )
    # Parts are shown exact: the only rounding is the total's.
    rows.append(["", "Subtotal (usage, corrections, included)", "", "", _exact(invoice.subtotal_usd)])
    rows.append(["", "Base fee", "", "", _exact(invoice.fee_usd)])
    rows.append(["", f"Markup ({invoice.markup_percent.normalize():f} %)", "", "", _exact(invoice.markup_usd)])
    rows.append(["", f"Total {invoice.currency.upper()}", "", "", f"{invoice.total_usd:.2f}"])
    table = Table(rows, colWidths=[10 * mm, 80 * mm, 22 * mm, 32 * mm, 28 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("LINEABOVE", (0, -4), (-1, -4), 0.5, colors.black),
                ("LINEABOVE", (0, -1), (-1, -1), 1, colors.black),
                ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(table)
    story.append(Spacer(1, 6 * mm))
    story.append(
        Paragraph(
            "Amounts are exact until the total, which is rounded once to the cent (half up); line amounts "
            "show that total split across the lines.",
            styles["Italic"],
        )
    )
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=f"Invoice {invoice.label}",
        author=settings.GATEWAY_OPERATOR_NAME,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
    )
    doc.build(story)
    return buf.getvalue()


def _escape(text: str) -> str:
    return escape(text)
