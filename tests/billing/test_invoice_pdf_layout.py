"""What an invoice looks like: the PDF rendered to an image and read back with positions, and the billing
page's header and lines (issue 21). Alice owns acme, Bob owns globex."""

from __future__ import annotations

import ctypes
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from django.test import Client
from PIL import Image, ImageOps

from billing.invoicing.exports import invoice_pdf
from billing.invoicing.services import invoice_finalize, invoice_for_month, invoice_void, local_today
from billing.models import Invoice, LineGrouping, Plan
from tenants.audit import Actor
from tenants.models import VirtualKey
from tests.helpers.billing import DEC_2, NOV, add_ledger

MID_NOV = datetime(2026, 11, 15, 12, tzinfo=UTC)
RENDER_SCALE = 2  # 144 dpi


@dataclass(frozen=True)
class Run:
    """One run of text as drawn (a table cell, a line of a paragraph) and its glyphs' box in PDF points."""

    text: str
    left: float
    bottom: float
    right: float
    top: float

    def overlaps(self, other: Run) -> bool:
        # Glyph boxes of neighbouring runs may touch, never share area.
        eps = 0.01
        return (
            self.left < other.right - eps
            and other.left < self.right - eps
            and self.bottom < other.top - eps
            and other.bottom < self.top - eps
        )

    def same_row(self, other: Run) -> bool:
        middle = (other.bottom + other.top) / 2
        return self.bottom <= middle <= self.top


def text_runs(data: bytes) -> list[Run]:
    """Page 1's text, one run per PDF text object (ReportLab draws each cell and each paragraph line
    as its own), measured by PDFium rather than by the ReportLab that wrote it."""
    textpage = pdfium.PdfDocument(data)[0].get_textpage()
    runs: list[Run] = []
    current: object = None
    chars: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []

    def flush() -> None:
        if boxes:
            left, bottom, right, top = zip(*boxes, strict=True)
            runs.append(Run("".join(chars).strip(), min(left), min(bottom), max(right), max(top)))
        chars.clear()
        boxes.clear()

    for i in range(textpage.count_chars()):
        obj = pdfium_c.FPDFText_GetTextObject(textpage.raw, i)
        owner = ctypes.cast(obj, ctypes.c_void_p).value if obj else None
        if owner is None:  # a line break PDFium made up: in no text object
            continue
        if owner != current:
            flush()
            current = owner
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i))
        chars.append(char)
        if not char.isspace():
            boxes.append(textpage.get_charbox(i))
    flush()
    return runs


def page_text(data: bytes) -> str:
    return pdfium.PdfDocument(data)[0].get_textpage().get_text_range()


def render_png(data: bytes, path: Path) -> Path:
    """Page 1 at 2x (144 dpi), next to the PDF itself: what a person looks at when a layout test fails."""
    path.with_suffix(".pdf").write_bytes(data)
    pdfium.PdfDocument(data)[0].render(scale=RENDER_SCALE).to_pil().save(path)
    return path


def inked_within_margins(png: Path, margin_mm: float = 18) -> bool:
    """Whether everything drawn on the rendered page (text, rules) keeps to the page's margins."""
    with Image.open(png) as image:
        gray = image.convert("L")
    margin = margin_mm / 25.4 * 72 * RENDER_SCALE
    left, top, right, bottom = ImageOps.invert(gray).getbbox() or (0, 0, 0, 0)
    return left >= margin and top >= margin and right <= gray.width - margin and bottom <= gray.height - margin


def clashes(runs: list[Run]) -> list[tuple[str, str]]:
    return [(a.text, b.text) for i, a in enumerate(runs) for b in runs[i + 1 :] if a.overlaps(b)]


def run(runs: list[Run], text: str) -> Run:
    (found,) = [r for r in runs if r.text == text]
    return found


def row_of(runs: list[Run], label: str) -> list[str]:
    """The texts on the same row as `label`, left to right."""
    anchor = run(runs, label)
    return [r.text for r in sorted(runs, key=lambda r: r.left) if r.same_row(anchor)]


@pytest.fixture
def small_markup(people) -> Invoice:
    """November for acme, still a draft: a 49 USD fee and 10 % markup on 0.00058 USD of usage, so the
    markup is 0.000058 (it printed as 0.00 on its line)."""
    Plan.objects.create(tenant=people.acme, base_fee_usd=Decimal(49), markup_percent=Decimal(10))
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o-mini", 380_000_000, prompt=1200, completion=300)
    add_ledger(people.acme, date(2026, 11, 4), "claude-haiku-4-5", 200_000_000, prompt=90_000, completion=12_345)
    return invoice_for_month(people.acme, NOV, now=MID_NOV)


# --- The PDF ------------------------------------------------------------------------------------------


def test_the_pdf_header_cells_and_all_other_text_never_overlap(small_markup, tmp_path):
    data = invoice_pdf(small_markup)
    png = render_png(data, tmp_path / "invoice-draft.png")
    runs = text_runs(data)

    header = [run(runs, t) for t in ("#", "Description", "Tokens", "Provider cost (USD)", "Amount (USD)")]
    assert [h.left for h in header] == sorted(h.left for h in header), f"header out of order, see {png}"
    for left, right in itertools.pairwise(header):
        assert left.right < right.left, f"{left.text!r} runs into {right.text!r}, see {png}"
    assert clashes(runs) == [], f"overlapping text, see {png}"
    assert inked_within_margins(png), f"something is drawn in the margins, see {png}"
    # Figures are right-aligned under their header.
    assert abs(run(runs, "102,345").right - run(runs, "Tokens").right) < 0.5
    assert abs(run(runs, "0.000058").right - run(runs, "Amount (USD)").right) < 0.5


def test_the_pdf_shows_fee_and_markup_once_as_exact_as_the_summary(small_markup, tmp_path):
    data = invoice_pdf(small_markup)
    render_png(data, tmp_path / "invoice-draft.png")
    runs, text = text_runs(data), page_text(data)

    assert text.count("Base fee") == 1 and text.count("Markup") == 1
    assert row_of(runs, "Base fee") == ["Base fee", "49.00"]
    # The markup's amount is the invoice's, to the last digit: not 0.00 in one place and 0.000058 in another.
    assert row_of(runs, "Markup (10 %)") == ["Markup (10 %)", "0.000058"]
    assert small_markup.markup_usd == Decimal("0.000058")
    assert row_of(runs, "gpt-4o-mini") == ["2", "gpt-4o-mini", "1,500", "0.00038", "0.00038"]
    # Only usage lines have tokens: in the table, nothing under "Tokens" says 0.
    tokens, total = run(runs, "Tokens"), run(runs, "Total USD")
    column = [
        r.text
        for r in runs
        if r.right > tokens.left and r.left < tokens.right and tokens.bottom > r.top and r.bottom >= total.bottom
    ]
    assert column == ["102,345", "1,500"]
    assert row_of(runs, "Total USD") == ["Total USD", "49.00"]
    # A draft has no number: its title says what it is.
    assert run(runs, "Draft invoice")
    assert "DRAFT (Draft)" not in text and "Invoice DRAFT" not in text
    assert pdfium.PdfDocument(data).get_metadata_dict()["Title"] == "Draft invoice"


def test_a_finalized_invoice_with_long_amounts_and_names_fits_the_page(people, tmp_path):
    """Key grouping with long key names, a correction, an included amount and exact amounts of 14 places."""
    Plan.objects.create(
        tenant=people.acme,
        base_fee_usd=Decimal("1234.56"),
        markup_percent=Decimal("10.55"),
        included_usd=Decimal(5),
        line_grouping=LineGrouping.KEY,
    )
    key = VirtualKey.objects.create(
        tenant=people.acme, name="research-team-batch-evaluations-nightly-2026", key_hash="h" * 64, prefix="p"
    )
    add_ledger(people.acme, date(2026, 10, 20), "gpt-4o", 10**12)
    assert invoice_finalize(people.acme, month=date(2026, 10, 1), actor=Actor.cli(), now=MID_NOV)
    add_ledger(people.acme, date(2026, 10, 21), "gpt-4o", 123_456_789_012)  # late: a correction in November
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 98_765_432_101_234_567, key=key.id, prompt=9 * 10**9)
    add_ledger(people.acme, date(2026, 11, 4), "claude-sonnet-4-5", 7_000_000_000_001, prompt=10**6)
    invoice = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    assert invoice is not None and invoice.label == "INV-000002"

    data = invoice_pdf(invoice)
    png = render_png(data, tmp_path / "invoice-finalized.png")
    runs, text = text_runs(data), page_text(data)
    assert clashes(runs) == [], f"overlapping text, see {png}"
    assert inked_within_margins(png), f"something is drawn in the margins, see {png}"
    assert run(runs, "Invoice INV-000002") and "(Finalized)" not in text
    assert row_of(runs, "Included in plan")[2:] == ["—", "—", "-5.00"]
    assert text.count("Base fee") == 1 and text.count("Markup") == 1
    assert row_of(runs, "Markup (10.55 %)")[1] == f"{invoice.markup_usd.normalize():f}"

    invoice_void(people.acme, invoice=invoice, actor=Actor.cli())
    invoice.refresh_from_db()
    assert run(text_runs(invoice_pdf(invoice)), "Invoice INV-000002 (Void)")


def test_a_fee_only_invoice_has_no_lines_and_the_fee_once(people, tmp_path):
    Plan.objects.create(tenant=people.acme, base_fee_usd=Decimal(49))
    invoice = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    assert invoice is not None

    data = invoice_pdf(invoice)
    png = render_png(data, tmp_path / "invoice-fee-only.png")
    runs, text = text_runs(data), page_text(data)
    assert clashes(runs) == [] and inked_within_margins(png), f"see {png}"
    assert row_of(runs, "Subtotal (usage, corrections, included)")[1] == "0.00"
    assert text.count("Base fee") == 1 and "Markup" not in text
    assert row_of(runs, "Total USD") == ["Total USD", "49.00"]


# --- The billing page ------------------------------------------------------------------------------------


def test_the_billing_page_sums_up_the_month_in_stat_cards_and_lists_no_zero_tokens(people):
    today = local_today(people.acme)
    Plan.objects.create(tenant=people.acme, base_fee_usd=Decimal(49), markup_percent=Decimal(10))
    add_ledger(people.acme, today, "gpt-4o-mini", 580_000_000, prompt=1200, completion=300)
    alice = Client()
    alice.force_login(people.alice)
    body = alice.get("/t/acme/billing/").content.decode()

    assert '<dl class="stats">' not in body and "DRAFT · Draft" not in body and ">DRAFT<" not in body
    summary = re.search(r'<div class="grid" id="billing-summary".*?\n</div>', body, re.S)
    assert summary is not None
    assert summary.group().count('<div class="stat">') == 3
    assert '<div class="value" id="invoice-status">Draft</div>' in summary.group()
    assert '<div class="value" id="projected-total">$49.00</div>' in summary.group()
    # Spend below a cent is shown, not rounded to $0.00.
    assert re.search(r'id="mtd-spend"[^>]*>\$0\.00058<', summary.group())

    tokens = re.findall(r'<td data-label="Tokens" class="num">([^<]*)</td>', body)
    assert tokens == ["1,500"]  # the usage line; fee and markup are not lines
    assert body.count("Base fee") == 1 and body.count("Markup (10 %)") == 1
    assert re.search(r'<th scope="row" colspan="3">Markup \(10 %\)</th><td class="num">0.000058</td>', body)


def test_bob_sees_none_of_acmes_invoice(people, small_markup):
    bob = Client()
    bob.force_login(people.bob)
    assert bob.get("/t/acme/billing/").status_code == 404
    assert bob.get(f"/t/globex/billing/invoices/{small_markup.id}/pdf").status_code == 404
    assert "gpt-4o-mini" not in bob.get("/t/globex/billing/").content.decode()
