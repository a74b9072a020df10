"""Stripe webhooks: signed like Stripe signs them, each event id processed exactly once.

Payloads are signed the way Stripe does (`Stripe-Signature: t=<unix time>,v1=<HMAC-SHA256 of "t.payload">`
with the endpoint secret), then replayed, sent from several threads at once, sent stale and forged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import date

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, InvoiceStatus, LineKind, StripeEvent
from tenants.models import AuditLog, Membership, Role

SECRET = "whsec_test_0123456789abcdefghijklmnop"
URL = "/billing/stripe/webhook/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stripe_on(settings):
    settings.STRIPE_API_KEY = "sk_test_unused_in_these_tests_0000"
    settings.STRIPE_WEBHOOK_SECRET = SECRET


@pytest.fixture
def eager_celery():
    from gateway_project.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def people(db, django_user_model):
    """Alice owns acme (Dave is its admin), Bob owns globex."""
    from tenants.models import Tenant

    acme = Tenant.objects.create(slug="acme", name="Acme Corp")
    globex = Tenant.objects.create(slug="globex", name="Globex")
    made = {}
    for name, tenant, role in (
        ("alice", acme, Role.OWNER),
        ("dave", acme, Role.ADMIN),
        ("bob", globex, Role.OWNER),
    ):
        made[name] = django_user_model.objects.create_user(username=name, email=f"{name}@{tenant.slug}.test")
        Membership.objects.create(user=made[name], tenant=tenant, role=role)
    return acme, globex


def finalized(tenant, number: int, stripe_id: str = "") -> Invoice:
    month = date(2026, 10, 1)
    invoice = Invoice.objects.create(
        tenant=tenant,
        number=number,
        status=InvoiceStatus.FINALIZED,
        month=month,
        period_start=month,
        period_end=date(2026, 10, 31),
        total_usd="61.23",
        finalized_at=timezone.now(),
        stripe_invoice_id=stripe_id,
    )
    InvoiceLine.objects.create(invoice=invoice, kind=LineKind.USAGE, label="gpt-4o-mini", amount_usd="61.23")
    return invoice


def event(event_type: str, *, event_id: str = "evt_1", tenant: str = "acme", invoice: str = "INV-000042", **obj):
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {
                "object": {
                    "id": "in_fake000001",
                    "object": "invoice",
                    "status": "paid" if event_type == "invoice.paid" else "open",
                    "metadata": {"gateway_tenant": tenant, "gateway_invoice": invoice},
                    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_test/in_fake000001",
                    **obj,
                }
            },
        }
    )


def sign(payload: str, secret: str = SECRET, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    signature = hmac.new(secret.encode(), f"{at}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={at},v1={signature}"


def deliver(payload: str, signature: str | None = None, client: Client | None = None):
    headers = {"Stripe-Signature": sign(payload) if signature is None else signature}
    return (client or Client()).post(URL, payload, content_type="application/json", headers=headers)


def test_invoice_paid_marks_our_invoice_paid_once_even_when_replayed(people):
    acme, _ = people
    invoice = finalized(acme, 42)
    paid_at = int(time.time()) - 60
    payload = event("invoice.paid", status_transitions={"paid_at": paid_at})

    first = deliver(payload)
    replay = deliver(payload)  # Stripe delivers at least once

    assert first.status_code == 200 and first.json() == {"received": True, "duplicate": False}
    assert replay.status_code == 200 and replay.json() == {"received": True, "duplicate": True}
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID and int(invoice.paid_at.timestamp()) == paid_at
    assert list(StripeEvent.objects.values_list("event_id", "type")) == [("evt_1", "invoice.paid")]
    (row,) = AuditLog.objects.filter(action="billing.invoice.paid")
    assert row.actor_label == "stripe-webhook" and row.target_label == "INV-000042"


def test_an_invoice_of_a_deleted_tenant_can_still_be_paid(people):
    """Issued invoices outlive their tenant (billing.models.Invoice.tenant is SET_NULL with a snapshot)."""
    from tenants.audit import Actor
    from tenants.services import tenant_delete

    acme, _ = people
    invoice = finalized(acme, 42)
    Invoice.objects.filter(pk=invoice.pk).update(tenant_slug="acme", tenant_name="Acme Corp")
    tenant_delete(acme, actor=Actor.cli())

    assert deliver(event("invoice.paid")).status_code == 200
    invoice.refresh_from_db()
    assert invoice.tenant is None and invoice.status == InvoiceStatus.PAID and invoice.billed_slug == "acme"


def test_a_stale_signature_is_refused_and_changes_nothing(people):
    acme, _ = people
    invoice = finalized(acme, 42)
    payload = event("invoice.paid")

    response = deliver(payload, sign(payload, at=int(time.time()) - 301))  # past the 300 s tolerance

    assert response.status_code == 400
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and not StripeEvent.objects.exists()


def test_a_signature_from_the_future_is_refused_and_changes_nothing(people):
    acme, _ = people
    invoice = finalized(acme, 42)
    payload = event("invoice.paid")

    response = deliver(payload, sign(payload, at=int(time.time()) + 3600))  # validly signed, for an hour ahead

    assert response.status_code == 400 and "future" in response.json()["error"]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and not StripeEvent.objects.exists()


def test_a_validly_signed_but_absurdly_deep_body_is_a_400(people):
    payload = "[" * 100_000 + "]" * 100_000
    assert deliver(payload).status_code == 400


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda p: sign(p, secret="whsec_someone_else"), id="other-secret"),
        pytest.param(lambda p: sign(p.replace("INV-000042", "INV-000043")), id="other-payload"),
        pytest.param(lambda p: "", id="missing"),
        pytest.param(lambda p: "t=abc,v1=zz", id="garbage"),
    ],
)
def test_a_bad_signature_is_refused_and_changes_nothing(people, signature):
    acme, _ = people
    invoice = finalized(acme, 42)
    payload = event("invoice.paid")

    response = deliver(payload, signature(payload))

    assert response.status_code == 400 and response.json() == {"error": "invalid Stripe-Signature"}
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and not StripeEvent.objects.exists()


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"id": "evt_x", "type": "invoice.paid", "data": 3}'])
def test_a_signed_body_that_is_not_a_stripe_event_is_a_400(people, body):
    assert deliver(body).status_code == 400
    assert not StripeEvent.objects.exists()


def test_without_a_webhook_secret_nothing_is_accepted(people, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    acme, _ = people
    finalized(acme, 42)
    assert deliver(event("invoice.paid")).status_code == 400
    assert not StripeEvent.objects.exists()


def test_unknown_event_types_are_acknowledged_and_ignored(people):
    acme, _ = people
    invoice = finalized(acme, 42)
    response = deliver(event("customer.subscription.updated"))
    assert response.status_code == 200 and response.json()["ignored"] == "customer.subscription.updated"
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and not StripeEvent.objects.exists()


def test_the_webhook_needs_no_csrf_token_and_only_takes_post(people):
    client = Client(enforce_csrf_checks=True)
    acme, _ = people
    finalized(acme, 42)
    assert deliver(event("invoice.paid"), client=client).status_code == 200
    assert client.get(URL).status_code == 405


def test_an_event_naming_another_tenants_invoice_changes_nothing(people):
    """Bob's Stripe invoice (or a hand-made one) cannot mark Alice's invoice paid."""
    acme, _globex = people
    alices = finalized(acme, 42)

    response = deliver(event("invoice.paid", tenant="globex"))

    assert response.status_code == 200
    alices.refresh_from_db()
    assert alices.status == InvoiceStatus.FINALIZED


def test_an_event_for_another_stripe_invoice_than_the_one_we_pushed_changes_nothing(people):
    acme, _ = people
    invoice = finalized(acme, 42, stripe_id="in_the_real_one")
    deliver(event("invoice.paid"))
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED


def test_payment_failed_emails_the_owners_once(people, eager_celery, django_capture_on_commit_callbacks):
    acme, _ = people
    finalized(acme, 42)
    payload = event("invoice.payment_failed", event_id="evt_failed_1")

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(payload).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(payload).json()["duplicate"] is True

    (message,) = mail.outbox
    assert message.to == ["alice@acme.test"]  # owners only: not Dave (admin), not Bob (globex)
    assert "INV-000042" in message.subject and "61.23 USD" in message.subject
    assert "https://invoice.stripe.com/i/acct_test/in_fake000001" in message.body
    assert SECRET not in message.body and "sk_test_" not in message.body


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_event_have_exactly_one_effect(people, eager_celery):
    acme, _ = people
    invoice = finalized(acme, 42)
    payload = event("invoice.payment_failed", event_id="evt_concurrent")
    signature = sign(payload)
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def post() -> None:
        from django.db import connection

        try:
            barrier.wait(5)
            statuses.append(deliver(payload, signature).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert statuses == [200] * 6
    assert StripeEvent.objects.filter(event_id="evt_concurrent").count() == 1
    assert len(mail.outbox) == 1
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED
