"""Invoices beyond build and finalize: drafts follow the ledger on a beat, voiding (console, API, Stripe), invoices that
outlive their tenant, and Stripe pushes that never hold up a request without a broker."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.test import Client
from pypdf import PdfReader

from billing.invoicing.exports import invoice_filename, invoice_pdf
from billing.invoicing.services import invoice_finalize, invoice_for_month, invoice_void, refresh_drafts
from billing.models import Invoice, InvoiceStatus, SpendLedger
from billing.stripe import sync as stripe_sync
from tenants.audit import Actor
from tenants.models import AuditLog, Role, Tenant
from tenants.services import management_token_create, tenant_delete
from tests.fakes.stripe_upstream import API_KEY, FakeStripe
from tests.helpers.billing import add_ledger

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
MID_NOV = datetime(2026, 11, 15, 12, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, 9, tzinfo=UTC)  # November is over for a UTC tenant
USD = 1_000_000_000_000  # picodollars


@pytest.fixture(scope="module")
def fake_stripe_server() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_stripe_server: FakeStripe, settings) -> FakeStripe:
    fake_stripe_server.reset()
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe_server.base_url
    return fake_stripe_server


def finalized_october(tenant: Tenant, usd: int = 12) -> Invoice:
    add_ledger(tenant, date(2026, 10, 7), "gpt-4o-mini", usd * USD)
    invoice = invoice_finalize(tenant, month=OCT, actor=Actor.cli(), now=MID_NOV)
    assert invoice is not None
    return invoice


# --- 1. Drafts follow the ledger ----------------------------------------------------------------------


def test_the_periodic_refresh_rebuilds_drafts_whose_ledger_moved_and_only_those(people):
    add_ledger(people.acme, date(2026, 11, 3), "gpt-4o-mini", 3 * USD // 2)

    (draft,) = refresh_drafts(now=MID_NOV)
    assert (draft.tenant_id, draft.month, draft.status, draft.total_usd) == (
        people.acme.id,
        NOV,
        InvoiceStatus.DRAFT,
        Decimal("1.50"),
    )
    assert refresh_drafts(now=MID_NOV) == []  # nothing landed since: nothing rebuilt, nothing created

    add_ledger(people.acme, date(2026, 11, 14), "gpt-4o-mini", USD // 4)
    (again,) = refresh_drafts(now=MID_NOV)
    assert again.id == draft.id and again.total_usd == Decimal("1.75")
    assert again.ledger_requests == 2 and again.ledger_cost_usd == Decimal("1.75")
    assert list(Invoice.objects.values_list("tenant__slug", "status")) == [("acme", "draft")]  # globex used nothing


def test_the_periodic_refresh_leaves_a_closed_month_alone(people):
    add_ledger(people.acme, date(2026, 11, 20), "gpt-4o-mini", 2 * USD)
    invoice = invoice_finalize(people.acme, month=NOV, actor=Actor.cli(), now=DEC_1)
    add_ledger(people.acme, date(2026, 11, 30), "gpt-4o-mini", USD)  # late: a correction for December

    assert refresh_drafts(now=DEC_1) == []
    invoice.refresh_from_db()
    assert invoice.total_usd == Decimal("2.00") and Invoice.objects.count() == 1


def test_the_beat_runs_the_refresh_every_ten_minutes(people, settings):
    from billing.invoicing.services import local_today
    from billing.tasks import refresh_drafts_task

    entry = settings.CELERY_BEAT_SCHEDULE["billing-refresh-drafts"]
    assert entry == {"task": refresh_drafts_task.name, "schedule": 600.0}
    today = local_today(people.globex)
    add_ledger(people.globex, today, "gpt-4o-mini", USD)
    assert refresh_drafts_task.apply().get() == [f"globex {today:%Y-%m}"]
    assert refresh_drafts_task.apply().get() == []


# --- 2. Void --------------------------------------------------------------------------------------------


def test_the_owner_voids_an_invoice_in_the_console_and_it_keeps_its_number(people, client):
    invoice = finalized_october(people.acme)
    client.force_login(people.erin)
    url = f"/t/acme/billing/invoices/{invoice.id}/void"
    assert client.post(url).status_code == 403  # owners only

    client.force_login(people.alice)
    page = client.get("/t/acme/billing/")
    assert url.encode() in page.content and b"hx-confirm" in page.content
    response = client.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == "/t/acme/billing/"

    invoice.refresh_from_db()
    assert (invoice.status, invoice.number) == (InvoiceStatus.VOID, 1) and invoice.voided_at is not None
    (row,) = AuditLog.objects.filter(action="billing.invoice.void")
    assert (row.actor_label, row.target_label, row.tenant_id) == ("alice@acme.example", "INV-000001", people.acme.id)
    page = client.get("/t/acme/billing/")
    assert url.encode() not in page.content  # no button on a void invoice
    # Voiding twice changes nothing; the next invoice takes the next number (no gap, no reuse).
    client.post(url)
    assert AuditLog.objects.filter(action="billing.invoice.void").count() == 1
    assert finalized_october(people.globex).number == 2


def test_the_api_voids_finalized_unpaid_invoices_and_refuses_the_rest(people):
    _token, secret = management_token_create(people.acme, name="ops", role=Role.OWNER, actor=Actor.cli())
    api = Client(headers={"Authorization": f"Bearer {secret}"})
    invoice = finalized_october(people.acme)
    draft = invoice_for_month(people.acme, NOV, now=MID_NOV)

    response = api.post(f"/api/v1/invoices/{invoice.id}/void")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "void" and response.json()["number"] == "INV-000001"
    for target in (invoice, draft):  # already void; a draft has nothing to void
        response = api.post(f"/api/v1/invoices/{target.id}/void")
        assert response.status_code == 409 and response.json()["error"]["code"] == "invoice_not_voidable"
    # Bob's token never reaches Acme's invoice.
    _token, bobs = management_token_create(people.globex, name="ops", role=Role.OWNER, actor=Actor.cli())
    response = Client(headers={"Authorization": f"Bearer {bobs}"}).post(f"/api/v1/invoices/{invoice.id}/void")
    assert response.status_code == 404


def test_a_pushed_invoice_is_voided_in_stripe_once_with_retries(people, fake, django_capture_on_commit_callbacks):
    invoice = finalized_october(people.acme)
    assert stripe_sync.push_and_record(invoice.id) == "pushed"
    invoice.refresh_from_db()

    with django_capture_on_commit_callbacks() as callbacks:
        assert invoice_void(people.acme, invoice=invoice, actor=Actor.cli()) is True
    assert len(callbacks) == 1  # queued for after commit, not done inline

    fake.fail_next(1, status=500, path="/void")
    assert stripe_sync.void_and_record(invoice.id) == "failed"
    invoice.refresh_from_db()
    assert invoice.stripe_attempts == 1 and invoice.stripe_next_attempt_at is not None
    assert stripe_sync.sync().voided == []  # waiting out its backoff
    assert stripe_sync.sync(force=True).voided == ["INV-000001"]

    assert fake.invoices[invoice.stripe_invoice_id]["status"] == "void"
    assert [c.idempotency_key for c in fake.posts("/void")] == ["inv-1-void", "inv-1-void"]
    assert stripe_sync.void_and_record(invoice.id) == "skipped" and fake.duplicates == []
    (row,) = AuditLog.objects.filter(action="billing.invoice.stripe_void")
    assert row.actor_label == "stripe-sync" and row.changes["outcome"] == "voided"


def test_a_half_pushed_invoice_is_deleted_from_stripe_and_a_paid_one_is_left_alone(people, fake):
    half = finalized_october(people.acme)
    fake.fail_next(1, status=500, path="/finalize")  # the push stops before Stripe finalizes its copy
    assert stripe_sync.push_and_record(half.id) == "failed"
    half.refresh_from_db()
    invoice_void(people.acme, invoice=half, actor=Actor.cli())
    assert stripe_sync.void_and_record(half.id) == "voided"
    assert half.stripe_invoice_id not in fake.invoices and fake.invoiceitems == {}

    paid = finalized_october(people.globex)
    assert stripe_sync.push_and_record(paid.id) == "pushed"
    paid.refresh_from_db()
    fake.invoices[paid.stripe_invoice_id]["status"] = "paid"  # Stripe collected it before our void
    invoice_void(people.globex, invoice=paid, actor=Actor.cli())
    assert stripe_sync.void_and_record(paid.id) == "voided"
    paid.refresh_from_db()
    assert "already collected" in paid.stripe_error and paid.stripe_voided_at is not None
    assert fake.posts("/void") == []


# --- 3. Invoices outlive their tenant -------------------------------------------------------------------


def test_deleting_a_tenant_keeps_its_issued_invoices_and_the_numbering(people):
    invoice = finalized_october(people.acme, usd=7)
    invoice_for_month(people.acme, NOV, now=MID_NOV)  # a draft: no number yet

    tenant_delete(people.acme, actor=Actor.cli())

    invoice.refresh_from_db()
    assert invoice.tenant is None and (invoice.number, invoice.status) == (1, InvoiceStatus.FINALIZED)
    assert (invoice.billed_slug, invoice.billed_name, invoice.lines.count()) == ("acme", "Acme Corp", 1)
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(invoice_pdf(invoice))).pages)
    assert "Acme Corp" in text and "INV-000001" in text and "7.00" in text
    assert invoice_filename(invoice, "pdf") == "acme-2026-10-INV-000001.pdf"
    # The orphaned draft goes with the next periodic refresh; numbering carries on from 1.
    refresh_drafts(now=MID_NOV)
    assert list(Invoice.objects.filter(tenant__isnull=True).values_list("number", flat=True)) == [1]
    assert finalized_october(people.globex).number == 2


# --- 5. Without a broker, the push runs after the response ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_without_a_broker_a_slow_stripe_does_not_hold_up_finalization(fake):
    from gateway_project.celery import app

    tenant = Tenant.objects.create(slug="slowco", name="Slow Co")
    SpendLedger.objects.create(tenant=tenant, day=date(2026, 10, 9), model="gpt-4o-mini", cost_picodollars=USD)
    fake.slow_next(1, 1.0)  # Stripe's first answer (the customer) takes a second
    before, app.conf.task_always_eager = app.conf.task_always_eager, True
    try:
        invoice = invoice_finalize(tenant, month=OCT, actor=Actor.cli(), now=MID_NOV)
    finally:
        app.conf.task_always_eager = before
    assert invoice is not None
    (thread,) = [t for t in threading.enumerate() if t.name == f"stripe-billing.tasks.push_invoice_task-{invoice.id}"]
    # Finalization has returned while Stripe is still answering: the push was not run inline.
    assert thread.is_alive() and not Invoice.objects.get(pk=invoice.pk).stripe_pushed_at

    thread.join(30)
    invoice.refresh_from_db()
    assert invoice.stripe_pushed_at is not None and sum(i["amount"] for i in fake.invoiceitems.values()) == 100
