"""Invoices as JSON (`gateway invoice --json`), CSV and PDF (ReportLab, text from a Django template).

CSV shows each line's amount in cents as `billing.invoice_rules.line_cents` splits the one rounded
total across the lines, so the rows always add up to the printed total; the exact unrounded amount
is in its own column. The PDF shows what the billing page shows (billing.invoicing.statement): exact
amounts, the base fee and markup once each, and the one rounded total.
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
from billing.invoicing.statement import invoice_statement, itemized_lines
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
        for ln in itemized_lines(invoice)
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


# The PDF's table: ReportLab's built-in fonts, so widths can be measured before anything is drawn.
FONT, BOLD, FONT_SIZE = "Helvetica", "Helvetica-Bold", 10
CELL_PADDING = 6  # points, ReportLab's default left and right padding of a table cell
FRAME_PADDING = 6  # points, SimpleDocTemplate's frame pads its content on each side
NUMERIC_HEADERS = ("Tokens", "Provider cost (USD)", "Amount (USD)")
# Points. The description is kept this wide before headers get room to stay on one line (a model and
# key name on one or two lines); it never gets less than the floor (ReportLab breaks long words there).
DESCRIPTION_MIN = 170.0
DESCRIPTION_FLOOR = 60.0


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a PDF: operator, tenant, number, period, lines, fee and markup, total."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    statement = invoice_statement(invoice)
    context = {
        "invoice": invoice,
        "heading": statement.heading,
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

    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=statement.heading,
        author=settings.GATEWAY_OPERATOR_NAME,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
    )
    head = ParagraphStyle("InvoiceHead", parent=styles["Normal"], fontName=BOLD, fontSize=FONT_SIZE)
    head_right = ParagraphStyle("InvoiceHeadRight", parent=head, alignment=TA_RIGHT)
    rows: list[list[Any]] = [
        [Paragraph("#", head), Paragraph("Description", head), *(Paragraph(h, head_right) for h in NUMERIC_HEADERS)]
    ]
    for ln in statement.lines:
        rows.append([str(ln.number), Paragraph(_escape(ln.label), styles["Normal"]), ln.tokens, ln.cost, ln.amount])
    first_part = len(rows)
    # Subtotal, fee, markup and total: the label spans the description and both columns before the amount.
    for part in [*statement.summary, statement.total]:
        rows.append(["", part.label, "", "", part.amount])
    widths = _column_widths(rows, available=doc.width - 2 * FRAME_PADDING)
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 1), (-1, -1), FONT),
                ("FONTNAME", (0, -1), (-1, -1), BOLD),
                ("FONTSIZE", (0, 1), (-1, -1), FONT_SIZE),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("LINEABOVE", (0, first_part), (-1, first_part), 0.5, colors.black),
                ("LINEABOVE", (0, -1), (-1, -1), 1, colors.black),
                ("ALIGN", (2, 1), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, 0), "BOTTOM"),
                ("VALIGN", (0, 1), (-1, -1), "TOP"),
                *(("SPAN", (1, r), (3, r)) for r in range(first_part, len(rows))),
            ]
        )
    )
    story.append(table)
    story.append(Spacer(1, 6 * mm))
    story.append(
        Paragraph("Amounts are exact; only the total is rounded, once, to the cent (half up).", styles["Italic"])
    )
    doc.build(story)
    return buf.getvalue()


def _column_widths(rows: list[list[Any]], *, available: float) -> list[float]:
    """#, description, then the numeric columns, each as wide as its widest figure as set (the total in
    bold) or its header's longest word: the header wraps, a figure never has to. Room to spare lets the
    headers stay on one line; the description takes the rest and wraps. So no cell runs into the next,
    however long an exact amount is."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    last = len(rows) - 1
    number = max(stringWidth(str(row[0]), BOLD, FONT_SIZE) for row in [["#"], *rows[1:]]) + 2 * CELL_PADDING
    needed, comfortable = [], []
    for col, title in enumerate(NUMERIC_HEADERS, start=2):
        widest = max(stringWidth(word, BOLD, FONT_SIZE) for word in title.split())
        for i, row in enumerate(rows[1:], start=1):
            widest = max(widest, stringWidth(row[col], BOLD if i == last else FONT, FONT_SIZE))
        needed.append(widest + 2 * CELL_PADDING)
        comfortable.append(max(widest, stringWidth(title, BOLD, FONT_SIZE)) + 2 * CELL_PADDING)
    spare = available - number - DESCRIPTION_MIN - sum(needed)
    numeric = []
    for need, wish in zip(needed, comfortable, strict=True):
        grow = min(max(spare, 0.0), wish - need)
        numeric.append(need + grow)
        spare -= grow
    description = max(available - number - sum(numeric), DESCRIPTION_FLOOR)
    return [number, description, *numeric]


def _escape(text: str) -> str:
    return escape(text)
