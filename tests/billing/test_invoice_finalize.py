"""Owners finalize a draft invoice from the console and the API (`POST /api/v1/invoices/<id>/finalize`), as
`gateway finalize-invoices` does: numbered, frozen, audit-logged. Nobody else can, and never twice."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from billing.invoicing.services import invoice_for_month, local_today
from billing.models import Invoice, InvoiceStatus
from tenants.models import AuditLog, Role
from tests.helpers.billing import add_ledger

pytestmark = pytest.mark.usefixtures("console_defaults")

USD = 1_000_000_000_000  # picodollars


def _draft_of_last_month(tenant) -> Invoice:
    """A draft for the month that just ended (the beat task has not closed it yet), with 2 USD on it."""
    last_month = (local_today(tenant).replace(day=1) - timedelta(days=1)).replace(day=1)
    add_ledger(tenant, last_month + timedelta(days=3), "gpt-4o-mini", 2 * USD)
    invoice = invoice_for_month(tenant, last_month)
    assert invoice.status == InvoiceStatus.DRAFT
    return invoice


def _finalize(client, invoice: Invoice, body: dict | None = None):
    return client.post(
        f"/api/v1/invoices/{invoice.id}/finalize", data=json.dumps(body or {}), content_type="application/json"
    )


def test_the_owner_finalizes_a_draft_through_the_api(world, api_as):
    invoice = _draft_of_last_month(world.acme)
    response = _finalize(api_as(Role.OWNER), invoice)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == invoice.id and body["status"] == "finalized"
    assert body["number"].startswith("INV-") and body["total_usd"] == "2.00" and body["finalized_at"]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and invoice.number is not None
    (row,) = AuditLog.objects.filter(action="billing.invoice.finalize")
    assert (row.tenant_id, row.target_label) == (world.acme.id, invoice.label)


def test_finalizing_twice_is_a_clear_409_and_changes_nothing(world, api_as):
    invoice = _draft_of_last_month(world.acme)
    owner = api_as(Role.OWNER)
    assert _finalize(owner, invoice).status_code == 200
    invoice.refresh_from_db()
    response = _finalize(owner, invoice)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "invoice_not_finalizable"
    assert error["message"] == f"{invoice.label} is finalized: only a draft can be finalized."
    assert AuditLog.objects.filter(action="billing.invoice.finalize").count() == 1
    assert Invoice.objects.get(id=invoice.id).number == invoice.number


def test_an_admin_gets_403_and_bobs_globex_token_404(world, api_as):
    invoice = _draft_of_last_month(world.acme)
    response = _finalize(api_as(Role.ADMIN), invoice)
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    response = _finalize(api_as(Role.OWNER, world.globex), invoice)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Invoice.objects.get(id=invoice.id).status == InvoiceStatus.DRAFT
    assert not AuditLog.objects.filter(action="billing.invoice.finalize").exists()


def test_the_running_month_closes_only_early(world, api_as):
    add_ledger(world.acme, local_today(world.acme), "gpt-4o-mini", 3 * USD)
    running = invoice_for_month(world.acme, local_today(world.acme).replace(day=1))
    owner = api_as(Role.OWNER)
    response = _finalize(owner, running)
    assert response.status_code == 400
    assert "has not ended yet" in response.json()["error"]["fields"]["early"][0]
    assert Invoice.objects.get(id=running.id).status == InvoiceStatus.DRAFT

    response = _finalize(owner, running, {"early": True})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "finalized"
    assert response.json()["period_end"] == local_today(world.acme).isoformat()


def test_a_draft_with_nothing_to_bill_is_refused_and_kept(world, api_as):
    last_month = (local_today(world.acme).replace(day=1) - timedelta(days=1)).replace(day=1)
    empty = invoice_for_month(world.acme, last_month)
    response = _finalize(api_as(Role.OWNER), empty)
    assert response.status_code == 409 and "nothing to bill" in response.json()["error"]["message"]
    assert Invoice.objects.filter(id=empty.id, status=InvoiceStatus.DRAFT).exists()


# --- The console ----------------------------------------------------------------------------------------


def test_the_owner_finalizes_from_the_billing_page(world, client_as):
    invoice = _draft_of_last_month(world.acme)
    url = f"/t/acme/billing/invoices/{invoice.id}/finalize"
    alice = client_as(world.alice)
    page = alice.get("/t/acme/billing/")
    assert url.encode() in page.content and b"hx-confirm" in page.content

    response = alice.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == "/t/acme/billing/"
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and invoice.number is not None
    (row,) = AuditLog.objects.filter(action="billing.invoice.finalize")
    assert (row.actor_label, row.target_label) == ("alice@acme.example", invoice.label)
    page = alice.get("/t/acme/billing/")
    assert url.encode() not in page.content  # no button on a finalized invoice
    assert f"Finalized {invoice.label}".encode() in page.content

    # Twice: nothing changes, and the page says why.
    response = alice.post(url, follow=True)
    assert b"only a draft can be finalized" in response.content
    assert AuditLog.objects.filter(action="billing.invoice.finalize").count() == 1


def test_only_owners_of_the_tenant_may_finalize_in_the_console(world, client_as):
    invoice = _draft_of_last_month(world.acme)
    url = f"/t/acme/billing/invoices/{invoice.id}/finalize"
    assert client_as(world.dave).post(url).status_code == 403
    assert client_as(world.bob).post(url).status_code == 404
    assert client_as(world.bob).post(f"/t/globex/billing/invoices/{invoice.id}/finalize").status_code == 404
    assert client_as(None).post(url).status_code == 302  # to the sign-in page
    assert Invoice.objects.get(id=invoice.id).status == InvoiceStatus.DRAFT


def test_the_running_month_can_be_closed_early_from_the_console(world, client_as):
    add_ledger(world.acme, local_today(world.acme), "gpt-4o-mini", 3 * USD)
    alice = client_as(world.alice)
    page = alice.get("/t/acme/billing/")
    assert b"Close the month early and finalize" in page.content
    running = Invoice.objects.get(tenant=world.acme, status=InvoiceStatus.DRAFT)
    alice.post(f"/t/acme/billing/invoices/{running.id}/finalize", {"early": "1"})
    running.refresh_from_db()
    assert running.status == InvoiceStatus.FINALIZED and running.period_end == local_today(world.acme)
