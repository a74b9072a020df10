"""Invoice exports (CSV, PDF), the `gateway invoice` / `finalize-invoices` commands, reconcile, the YAML
`billing:` section, the management API and the console billing page, with their permissions."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from pypdf import PdfReader

from billing.invoice_rules import round_total
from billing.invoicing.services import invoice_finalize, invoice_for_month
from billing.models import Invoice, InvoiceStatus, Plan
from billing.selectors import ledger_month_total
from tenants.audit import Actor
from tenants.services import management_token_create
from tests.helpers.billing import DEC_2, NOV, add_ledger, synthetic_month


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("gateway", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


@pytest.fixture
def november(people, settings):
    settings.GATEWAY_OPERATOR_NAME = "Gateway Operator GmbH"
    settings.GATEWAY_OPERATOR_ADDRESS = "Hauptstrasse 1\n10115 Berlin"
    exact = synthetic_month(people.acme)
    invoice = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    return invoice, exact


def test_csv_rows_sum_to_the_total_and_the_pdf_shows_the_same_total_and_number(people, november, tmp_path):
    invoice, _exact = november
    csv_path, pdf_path = tmp_path / "inv.csv", tmp_path / "inv.pdf"
    run("invoice", "--tenant", "acme", "--month", "2026-11", "--csv", str(csv_path), "--pdf", str(pdf_path))

    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == invoice.lines.count() == 3
    assert sum(Decimal(r["amount_usd"]) for r in rows) == invoice.total_usd
    assert sum(Decimal(r["cost_usd"]) for r in rows) == ledger_month_total(people.acme, NOV)
    assert {r["invoice"] for r in rows} == {"INV-000001"}

    text = pdf_text(pdf_path.read_bytes())
    assert "INV-000001" in text
    assert f"{invoice.total_usd}" in text and "Total USD" in text
    assert "Gateway Operator GmbH" in text and "10115 Berlin" in text
    assert "Acme Corp" in text and "2026-11-01" in text and "2026-11-30" in text


def test_invoice_json_is_the_documented_contract(people):
    Plan.objects.create(tenant=people.acme, base_fee_usd=Decimal(49), markup_percent=Decimal(10))
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 1_500_000_000_000, prompt=1000, completion=500)
    doc = json.loads(run("invoice", "--tenant", "acme", "--month", "2026-11", "--json"))
    assert list(doc) == [
        "number",
        "status",
        "period_start",
        "period_end",
        "currency",
        "subtotal_usd",
        "fee_usd",
        "markup_usd",
        "total_usd",
        "lines",
    ]
    assert doc == {
        "number": "DRAFT",
        "status": "draft",
        "period_start": "2026-11-01",
        "period_end": "2026-11-30",
        "currency": "usd",
        "subtotal_usd": "1.5",
        "fee_usd": "49",
        "markup_usd": "0.15",
        "total_usd": "50.65",
        "lines": [{"model": "gpt-4o", "tokens": 1500, "cost_usd": "1.5", "amount_usd": "1.5"}],
    }
    # A finalized invoice prints as it is, with its number.
    run("finalize-invoices", "--tenant", "acme", "--month", "2026-11")
    add_ledger(people.acme, date(2026, 11, 4), "gpt-4o", 10**12)  # late: goes to December, not here
    doc = json.loads(run("invoice", "--tenant", "acme", "--month", "2026-11", "--json"))
    assert (doc["number"], doc["status"], doc["total_usd"]) == ("INV-000001", "finalized", "50.65")


def test_finalize_invoices_twice_creates_nothing_new(people):
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o", 10**12)
    add_ledger(people.globex, date(2026, 11, 3), "gpt-4o", 2 * 10**12)
    first = run("finalize-invoices", "--month", "2026-11")
    assert "INV-000001" in first and "INV-000002" in first
    assert run("finalize-invoices", "--month", "2026-11").strip() == "nothing to finalize"
    assert Invoice.objects.count() == 2


def test_command_errors_are_clear(people):
    with pytest.raises(CommandError, match="not a month"):
        run("invoice", "--tenant", "acme", "--month", "November")
    with pytest.raises(CommandError, match="no tenant"):
        run("invoice", "--tenant", "nope", "--month", "2026-11")


def test_reconcile_checks_invoices_against_the_ledger(people, november):
    from billing.invoicing.commands import reconcile_invoices

    class Out:
        def __init__(self) -> None:
            self.stdout, self.stderr = io.StringIO(), io.StringIO()

    out = Out()
    assert reconcile_invoices(out, people.acme) == 0
    assert "invoices match the ledger" in out.stdout.getvalue()
    # A late correction without a later draft is reported as pending, not as a difference.
    add_ledger(people.acme, date(2026, 11, 5), "gpt-4o", 10**12)
    out = Out()
    assert reconcile_invoices(out, people.acme) == 0
    assert "billed on the next invoice" in out.stdout.getvalue()
    # Once December's draft exists it carries the correction, and everything adds up again.
    invoice_for_month(people.acme, date(2026, 12, 1))
    out = Out()
    assert reconcile_invoices(out, people.acme) == 0 and "invoices match" in out.stdout.getvalue()
    # An invoice that no longer adds up is a difference.
    Invoice.objects.filter(id=november[0].id).update(total_usd=Decimal("1.00"))
    out = Out()
    assert reconcile_invoices(out, people.acme) == 1
    assert "INV-000001 total" in out.stderr.getvalue()


def test_gateway_reconcile_runs_the_invoice_check(people):
    # A fee-only invoice: no ledger, so the call-log half agrees and the invoice half runs.
    Plan.objects.create(tenant=people.acme, base_fee_usd=Decimal(49))
    invoice = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_2)
    assert invoice.total_usd == 49
    assert run("reconcile", "--tenant", "acme").splitlines() == [
        "ledger matches call logs",
        "invoices match the ledger",
    ]
    Invoice.objects.filter(id=invoice.id).update(total_usd=Decimal("48.00"))
    with pytest.raises(CommandError, match="between the spend ledger and the invoices"):
        run("reconcile", "--tenant", "acme")


def test_the_billing_yaml_section_applies_and_exports_round_trip(people):
    from tenants.config import ConfigError, apply_config, export_config

    yaml_text = "tenant: acme\nname: Acme Corp\nbilling: {base_fee_usd: 49, markup_percent: 10.5, included_usd: 0}\n"
    _tenant, changes = apply_config(yaml_text)
    assert "~ billing" in changes
    plan = Plan.objects.get(tenant=people.acme)
    assert (plan.base_fee_usd, plan.markup_percent, plan.included_usd) == (Decimal(49), Decimal("10.5"), 0)
    exported = export_config(people.acme)
    assert "billing:\n  base_fee_usd: 49\n  markup_percent: 10.5\n  included_usd: 0\n" in exported
    _tenant, changes = apply_config(exported)
    assert "~ billing" not in changes
    with pytest.raises(ConfigError, match=r"billing\.markup_percent"):
        apply_config("tenant: acme\nname: Acme Corp\nbilling: {markup_percent: -1}\n")
    with pytest.raises(ConfigError, match="unknown field"):
        apply_config("tenant: acme\nname: Acme Corp\nbilling: {fee: 1}\n")


# --- API and console: owners only, 404 across tenants --------------------------------------------------


def token_client(tenant, owner, role: str) -> Client:
    _token, secret = management_token_create(tenant, name=f"t-{role}", role=role, actor=Actor(user=owner))
    return Client(headers={"Authorization": f"Bearer {secret}"})


def test_owner_api_lists_and_downloads_and_other_tenants_get_404(people, november):
    invoice, _exact = november
    alice = token_client(people.acme, people.alice, "owner")
    listing = alice.get("/api/v1/invoices/")
    assert listing.status_code == 200
    assert [(i["number"], i["status"], i["total_usd"]) for i in listing.json()] == [
        ("INV-000001", "finalized", str(invoice.total_usd))
    ]
    detail = alice.get(f"/api/v1/invoices/{invoice.id}/").json()
    assert detail["total_usd"] == str(invoice.total_usd) and len(detail["lines"]) == 3
    pdf = alice.get(f"/api/v1/invoices/{invoice.id}/pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert str(invoice.total_usd) in pdf_text(pdf.content)
    got_csv = alice.get(f"/api/v1/invoices/{invoice.id}/csv")
    assert got_csv.status_code == 200
    rows = list(csv.DictReader(io.StringIO(got_csv.content.decode())))
    assert sum(Decimal(r["amount_usd"]) for r in rows) == invoice.total_usd

    bob = token_client(people.globex, people.bob, "owner")
    assert bob.get("/api/v1/invoices/").json() == []
    for suffix in ("/", "/pdf", "/csv"):
        response = bob.get(f"/api/v1/invoices/{invoice.id}{suffix}")
        assert response.status_code == 404, suffix
        assert str(invoice.total_usd) not in response.content.decode(errors="replace")

    admin = token_client(people.acme, people.alice, "admin")
    assert admin.get("/api/v1/invoices/").status_code == 403
    assert admin.get(f"/api/v1/invoices/{invoice.id}/pdf").status_code == 403


def test_console_billing_page_for_the_owner_only(people, november):
    invoice, _exact = november
    alice = Client()
    alice.force_login(people.alice)
    page = alice.get("/t/acme/billing/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "INV-000001" in body and str(invoice.total_usd) in body
    csv_response = alice.get(f"/t/acme/billing/invoices/{invoice.id}/csv")
    assert csv_response.status_code == 200 and "INV-000001" in csv_response.content.decode()
    pdf_response = alice.get(f"/t/acme/billing/invoices/{invoice.id}/pdf")
    assert "INV-000001" in pdf_text(pdf_response.content)
    assert round_total(ledger_month_total(people.acme, NOV)) == invoice.total_usd

    erin = Client()
    erin.force_login(people.erin)  # a member of acme, not an owner
    assert erin.get("/t/acme/billing/").status_code == 403
    assert erin.get(f"/t/acme/billing/invoices/{invoice.id}/pdf").status_code == 403

    bob = Client()
    bob.force_login(people.bob)
    assert bob.get("/t/acme/billing/").status_code == 404
    assert bob.get(f"/t/globex/billing/invoices/{invoice.id}/pdf").status_code == 404
    assert bob.get(f"/t/acme/billing/invoices/{invoice.id}/csv").status_code == 404


def test_console_plan_form_saves_and_rejects_bad_input(people):
    alice = Client()
    alice.force_login(people.alice)
    form = {"base_fee_usd": "49", "markup_percent": "10", "included_usd": "5", "line_grouping": "model"}
    assert alice.post("/t/acme/billing/", form).status_code == 302
    plan = Plan.objects.get(tenant=people.acme)
    assert (plan.base_fee_usd, plan.markup_percent, plan.included_usd) == (49, 10, 5)
    bad = alice.post("/t/acme/billing/", {**form, "markup_percent": "-3"})
    assert bad.status_code == 200 and "greater than or equal to 0" in bad.content.decode()
    assert Plan.objects.get(tenant=people.acme).markup_percent == 10
    fragment = alice.post("/t/acme/billing/", {**form, "base_fee_usd": "x"}, headers={"HX-Request": "true"})
    assert 'id="plan-form"' in fragment.content.decode() and "<html" not in fragment.content.decode()
    saved = alice.post("/t/acme/billing/", {**form, "included_usd": "0"}, headers={"HX-Request": "true"})
    assert saved.headers["HX-Redirect"] == "/t/acme/billing/"
    assert Plan.objects.get(tenant=people.acme).included_usd == 0

    erin = Client()
    erin.force_login(people.erin)
    assert erin.post("/t/acme/billing/", {**form, "base_fee_usd": "0"}).status_code == 403
    assert Plan.objects.get(tenant=people.acme).base_fee_usd == 49


def test_the_projected_invoice_follows_the_running_month(people):
    from django.utils import timezone

    today = timezone.now().date()
    add_ledger(people.acme, today, "gpt-4o", 2_345_000_000_000)
    alice = Client()
    alice.force_login(people.alice)
    body = alice.get("/t/acme/billing/").content.decode()
    assert "2.35" in body  # month-to-date spend and the projected total
    draft = Invoice.objects.get(tenant=people.acme, status=InvoiceStatus.DRAFT)
    assert draft.total_usd == Decimal("2.35")
    assert invoice_for_month(people.acme, today.replace(day=1)).id == draft.id


def test_finalize_invoices_early_closes_the_running_month_and_later_usage_goes_to_a_new_invoice(people):
    from billing.invoicing.services import local_today

    today = local_today(people.acme)
    month = f"{today:%Y-%m}"
    add_ledger(people.acme, today, "gpt-4o", 3 * 10**12)
    assert "INV-000001" in run("finalize-invoices", "--tenant", "acme", "--early")
    assert run("finalize-invoices", "--tenant", "acme", "--early").strip() == "nothing to finalize"
    closed = json.loads(run("invoice", "--tenant", "acme", "--month", month, "--json"))
    assert (closed["number"], closed["period_end"], closed["total_usd"]) == ("INV-000001", f"{today}", "3.00")

    add_ledger(people.acme, today, "gpt-4o", 10**12)  # later the same day
    rest = json.loads(run("invoice", "--tenant", "acme", "--month", month, "--json"))
    assert (rest["number"], rest["status"], rest["period_start"], rest["total_usd"]) == (
        "DRAFT",
        "draft",
        f"{today}",
        "1.00",
    )
    assert Invoice.objects.filter(tenant=people.acme).count() == 2


def test_a_month_that_has_not_started_has_no_invoice(people):
    with pytest.raises(CommandError, match="has not started"):
        run("invoice", "--tenant", "acme", "--month", "2099-01")
    assert not Invoice.objects.exists()


def test_the_stripe_portal_is_linked_only_when_stripe_is_on(people, settings):
    alice = Client()
    alice.force_login(people.alice)
    settings.STRIPE_API_KEY = ""
    assert "/t/acme/billing/stripe-portal/" not in alice.get("/t/acme/billing/").content.decode()
    # On: a link only; the portal session is created when the owner clicks, so the page never waits on Stripe.
    settings.STRIPE_API_KEY = "sk_test_not_called"
    assert "/t/acme/billing/stripe-portal/" in alice.get("/t/acme/billing/").content.decode()


def test_the_beat_task_finalizes_the_month_just_ended_once(people, settings):
    from datetime import timedelta

    from billing.invoicing.services import local_today
    from billing.tasks import finalize_invoices_task

    assert settings.CELERY_BEAT_SCHEDULE["billing-finalize-invoices"]["task"] == finalize_invoices_task.name
    last_month = local_today(people.acme).replace(day=1) - timedelta(days=1)
    add_ledger(people.acme, last_month, "gpt-4o", 10**12)
    assert finalize_invoices_task() == ["INV-000001"]
    assert finalize_invoices_task() == []
