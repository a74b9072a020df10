"""Pushing finalized invoices to Stripe: one customer per tenant, items in cents, idempotent retries.

Everything talks to tests/fakes/stripe_upstream.py over real HTTP through the official `stripe` library.
The fake refuses a repeated identical POST that lacks the first one's Idempotency-Key (real Stripe would
bill twice), so `fake.duplicates == []` proves that retries replayed instead of re-creating.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, InvoiceStatus, LineKind, Plan
from billing.stripe import sync as stripe_sync
from tenants.models import AuditLog
from tests.fakes.stripe_upstream import API_KEY, FakeStripe
from tests.helpers import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("console_defaults")]


# The console's cast (tests.helpers.people, the `world` fixture): Alice owns acme, Dave is its admin, Bob owns globex.
@pytest.fixture
def acme(world):
    return world.acme


@pytest.fixture
def globex(world):
    return world.globex


@pytest.fixture
def alice(world):
    return world.alice


@pytest.fixture
def bob(world):
    return world.bob


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
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_secret_0123456789"
    return fake_stripe_server


LINES = [
    ("gpt-4o-mini", LineKind.USAGE, Decimal("12.3456789")),
    ("claude-sonnet", LineKind.USAGE, Decimal("7.0000004")),
    ("Base fee", LineKind.FEE, Decimal("49")),
    ("Correction for October", LineKind.CREDIT, Decimal("-1.115")),
]


def finalized_invoice(tenant, number: int, lines=LINES, month: date = date(2026, 10, 1)) -> Invoice:
    exact = sum((amount for _, _, amount in lines), Decimal(0))
    invoice = Invoice.objects.create(
        tenant=tenant,
        number=number,
        status=InvoiceStatus.FINALIZED,
        month=month,
        period_start=month,
        period_end=month.replace(day=28),
        total_usd=exact.quantize(Decimal("0.01")),
        finalized_at=timezone.now(),
    )
    for position, (label, kind, amount) in enumerate(lines):
        InvoiceLine.objects.create(
            invoice=invoice, position=position, kind=kind, label=label, model=label, amount_usd=amount
        )
    return invoice


def test_a_push_creates_the_customer_the_invoice_its_items_in_cents_and_finalizes_it(fake, acme):
    invoice = finalized_invoice(acme, 41)

    assert stripe_sync.push_and_record(invoice.id) == "pushed"

    invoice.refresh_from_db()
    (customer,) = fake.customers.values()
    assert customer["metadata"] == {"gateway_tenant": "acme"}
    assert Plan.objects.get(tenant=acme).stripe_customer_id == customer["id"]
    (remote,) = fake.invoices.values()
    assert remote["id"] == invoice.stripe_invoice_id
    assert remote["metadata"] == {"gateway_tenant": "acme", "gateway_invoice": "INV-000041"}
    assert remote["status"] == "open" and remote["auto_advance"] is True
    items = sorted(fake.invoiceitems.values(), key=lambda i: int(i["metadata"]["gateway_line"]))
    assert [(i["description"], i["amount"], i["currency"]) for i in items] == [
        ("gpt-4o-mini", 1235, "usd"),
        ("claude-sonnet", 700, "usd"),
        ("Base fee", 4900, "usd"),
        ("Correction for October", -112, "usd"),
    ]
    # The cents add up to our total exactly (rounded once, at the total).
    assert sum(i["amount"] for i in items) == remote["total"] == int(invoice.total_usd * 100) == 6723
    assert [c.idempotency_key for c in fake.posts()] == [
        f"cus-{acme.id}",
        "inv-41",
        "inv-41-item-1",
        "inv-41-item-2",
        "inv-41-item-3",
        "inv-41-item-4",
        "inv-41-finalize",
    ]
    assert invoice.stripe_pushed_at is not None and invoice.stripe_error == "" and invoice.stripe_attempts == 0
    (entry,) = AuditLog.objects.filter(action="billing.invoice.stripe_push")
    assert (entry.tenant, entry.target_label, entry.actor_label) == (acme, "INV-000041", "stripe-sync")
    assert entry.changes == {"stripe_invoice_id": invoice.stripe_invoice_id, "attempts": 1}


def test_one_customer_per_tenant_across_invoices(fake, acme, globex):
    for number in (1, 2):
        stripe_sync.push_and_record(finalized_invoice(acme, number, month=date(2026, 8 + number, 1)).id)
    stripe_sync.push_and_record(finalized_invoice(globex, 3).id)

    assert sorted(c["metadata"]["gateway_tenant"] for c in fake.customers.values()) == ["acme", "globex"]
    assert len(fake.posts("/v1/customers")) == 2
    globex_invoice = next(i for i in fake.invoices.values() if i["metadata"]["gateway_tenant"] == "globex")
    assert globex_invoice["customer"] == Plan.objects.get(tenant=globex).stripe_customer_id


def test_sync_run_twice_and_a_lost_push_record_never_bill_twice(fake, acme):
    invoice = finalized_invoice(acme, 7)
    assert stripe_sync.sync().pushed == ["INV-000007"]
    assert stripe_sync.sync().pushed == []  # already pushed: nothing sent
    posts_after_first = len(fake.posts())

    # As if we crashed after Stripe answered but before anything was stored on our side.
    Invoice.objects.filter(pk=invoice.pk).update(stripe_pushed_at=None, stripe_invoice_id="")
    Plan.objects.filter(tenant=acme).update(stripe_customer_id="")
    assert stripe_sync.sync(force=True).pushed == ["INV-000007"]

    assert len(fake.posts()) == 2 * posts_after_first  # every call was repeated ...
    assert fake.duplicates == []  # ... with its key, so Stripe replayed it
    assert (len(fake.customers), len(fake.invoices), len(fake.invoiceitems)) == (1, 1, 4)


def test_a_crash_after_stripe_finalized_only_asks_stripe(fake, acme):
    invoice = finalized_invoice(acme, 6)
    stripe_sync.push_and_record(invoice.id)
    invoice.refresh_from_db()
    Invoice.objects.filter(pk=invoice.pk).update(stripe_pushed_at=None)  # the last save was lost
    posts = len(fake.posts())

    assert stripe_sync.sync(force=True).pushed == ["INV-000006"]

    assert len(fake.posts()) == posts  # no POST at all: Stripe said the invoice is already open
    assert [(c.method, c.path) for c in fake.calls[-1:]] == [("GET", f"/v1/invoices/{invoice.stripe_invoice_id}")]


def test_a_crash_after_the_items_is_retried_without_duplicates(fake, acme):
    invoice = finalized_invoice(acme, 8)
    fake.fail_next(1, status=500, path="/finalize")

    before = timezone.now()
    assert stripe_sync.push_and_record(invoice.id) == "failed"

    invoice.refresh_from_db()
    assert invoice.stripe_pushed_at is None and invoice.stripe_attempts == 1
    assert invoice.stripe_invoice_id  # stored as soon as Stripe created it
    assert before + timedelta(seconds=59) < invoice.stripe_next_attempt_at < timezone.now() + timedelta(seconds=61)
    assert "APIError" in invoice.stripe_error and "500" in invoice.stripe_error
    assert len(fake.invoiceitems) == 4 and next(iter(fake.invoices.values()))["status"] == "draft"

    assert stripe_sync.sync().pushed == []  # its backoff has not passed
    assert stripe_sync.sync(force=True).pushed == ["INV-000008"]
    assert fake.duplicates == []
    assert (len(fake.invoices), len(fake.invoiceitems)) == (1, 4)
    assert next(iter(fake.invoices.values()))["status"] == "open"
    invoice.refresh_from_db()
    assert (
        invoice.stripe_pushed_at is not None and invoice.stripe_error == "" and invoice.stripe_next_attempt_at is None
    )


def test_a_retry_after_stripe_forgot_the_keys_skips_what_stripe_already_has(fake, acme):
    invoice = finalized_invoice(acme, 9)
    fake.fail_next(1, status=500, path="/v1/invoiceitems")  # the first item fails, the push stops there
    assert stripe_sync.push_and_record(invoice.id) == "failed"
    fake.fail_next(1, status=500, path="/finalize")
    assert stripe_sync.push_and_record(invoice.id) == "failed"
    assert len(fake.invoiceitems) == 4

    fake.forget_keys()  # 24 hours later
    assert stripe_sync.push_and_record(invoice.id) == "pushed"

    assert fake.duplicates == [] and len(fake.invoiceitems) == 4
    assert next(iter(fake.invoices.values()))["status"] == "open"


def test_an_invoice_another_worker_is_pushing_is_left_alone(fake, acme):
    from django.core.cache import cache

    invoice = finalized_invoice(acme, 16)
    cache.add(f"billing:stripe-push:{invoice.id}", 1, 60)  # another worker holds it
    try:
        assert stripe_sync.push_and_record(invoice.id) == "skipped"
    finally:
        cache.delete(f"billing:stripe-push:{invoice.id}")
    assert fake.calls == []
    assert stripe_sync.push_and_record(invoice.id) == "pushed"


def test_rate_limits_and_server_errors_back_off_exponentially(fake, acme):
    invoice = finalized_invoice(acme, 10)
    fake.fail_next(1, status=429)
    fake.fail_next(1, status=500)
    fake.fail_next(1, status=503)

    waits, errors = [], []
    for expected in ("failed", "failed", "failed", "pushed"):
        assert stripe_sync.push_and_record(invoice.id) == expected
        invoice.refresh_from_db()
        if expected == "failed":
            waits.append(round((invoice.stripe_next_attempt_at - timezone.now()).total_seconds() / 60))
            errors.append(invoice.stripe_error.split(":")[0])
            assert stripe_sync.sync().pushed == []  # not due yet
    assert waits == [1, 2, 4]
    assert errors == ["RateLimitError", "APIError", "APIError"]
    assert invoice.stripe_attempts == 3 and invoice.stripe_pushed_at is not None
    assert fake.duplicates == [] and len(fake.invoices) == 1


def test_the_backoff_is_capped():
    assert stripe_sync.backoff(1) == timedelta(minutes=1)
    assert stripe_sync.backoff(4) == timedelta(minutes=8)
    assert stripe_sync.backoff(40) == timedelta(hours=6)


def test_neither_the_stored_error_nor_the_log_holds_the_api_key(fake, acme, settings, caplog):
    settings.STRIPE_API_KEY = "sk_test_wrong_key_abcdefghijklmnop"
    invoice = finalized_invoice(acme, 11)

    with caplog.at_level("DEBUG"):
        assert stripe_sync.push_and_record(invoice.id) == "failed"

    invoice.refresh_from_db()
    assert "AuthenticationError" in invoice.stripe_error and "[redacted]" in invoice.stripe_error
    assert "Stripe push of invoice INV-000011 failed" in caplog.text
    for piece in ("sk_test_wrong_key_abcdefghijklmnop", "sk_test_", "mnop"):
        assert piece not in invoice.stripe_error and piece not in caplog.text


def test_only_finalized_unpushed_invoices_are_synced(fake, acme):
    finalized_invoice(acme, 12)
    paid = finalized_invoice(acme, 13, month=date(2026, 9, 1))
    Invoice.objects.filter(pk=paid.pk).update(status=InvoiceStatus.PAID)
    void = finalized_invoice(acme, 14, month=date(2026, 8, 1))
    Invoice.objects.filter(pk=void.pk).update(status=InvoiceStatus.VOID)

    assert stripe_sync.sync(acme).pushed == ["INV-000012"]
    assert len(fake.invoices) == 1


def test_with_stripe_off_nothing_is_sent(fake, acme, settings):
    settings.STRIPE_API_KEY = ""
    invoice = finalized_invoice(acme, 15)
    assert stripe_sync.push_and_record(invoice.id) == "skipped"
    assert stripe_sync.sync().pushed == [] and stripe_sync.portal_url(acme, "https://gw.test/") is None
    assert fake.calls == []


def test_the_fake_refuses_an_identical_post_without_the_same_key(fake):
    form = {"name": "Acme", "metadata[gateway_tenant]": "acme"}
    auth = {"Authorization": f"Bearer {API_KEY}"}
    first = httpx.post(f"{fake.base_url}/v1/customers", data=form, headers={**auth, "Idempotency-Key": "k1"})
    replay = httpx.post(f"{fake.base_url}/v1/customers", data=form, headers={**auth, "Idempotency-Key": "k1"})
    other = httpx.post(f"{fake.base_url}/v1/customers", data=form, headers=auth)
    reused = httpx.post(
        f"{fake.base_url}/v1/customers", data={"name": "Globex"}, headers={**auth, "Idempotency-Key": "k1"}
    )

    assert first.status_code == 200 and replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["type"] == "idempotency_error"
    assert reused.status_code == 400 and reused.json()["error"]["type"] == "idempotency_error"
    assert len(fake.customers) == 1 and len(fake.duplicates) == 1


# --- Stripe down: finalization and the console go on ---------------------------------------------------


def test_stripe_down_does_not_block_finalization(fake, acme, settings, django_capture_on_commit_callbacks):
    from billing.invoicing.services import invoice_finalize
    from billing.models import SpendLedger
    from billing.tasks import push_invoice_task
    from gateway_project.celery import app
    from tenants.audit import Actor

    settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    SpendLedger.objects.create(
        tenant=acme, day=date(2026, 10, 3), model="gpt-4o-mini", cost_picodollars=1_234_567_890_000, requests=3
    )
    before, app.conf.task_always_eager = app.conf.task_always_eager, True
    try:
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            invoice = invoice_finalize(acme, month=date(2026, 10, 1), actor=Actor.cli())
        elapsed = time.monotonic() - started
    finally:
        app.conf.task_always_eager = before
    assert invoice is not None
    # No broker: the push went to a background thread (which cannot see this test's uncommitted rows;
    # test_invoices_followups shows one at work). Wait for it so it does not hold the push lock.
    for thread in threading.enumerate():
        if thread.name.startswith("stripe-"):
            thread.join(15)
    # What a worker (or, without a broker, the background thread) runs after commit: the failure is
    # recorded for the backoff, finalization is untouched.
    assert push_invoice_task.apply(kwargs={"invoice_id": invoice.id}).get() == "failed"

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED and invoice.total_usd == Decimal("1.23")
    assert invoice.stripe_pushed_at is None and invoice.stripe_attempts == 1
    assert "APIConnectionError" in invoice.stripe_error
    assert elapsed < 10

    settings.STRIPE_API_BASE = fake.base_url  # Stripe is back: the next sync catches up
    assert stripe_sync.sync(force=True).pushed == [invoice.label]
    assert sum(i["amount"] for i in fake.invoiceitems.values()) == 123


def test_the_beat_entry_runs_the_sync_task_every_minute(fake, acme, settings):
    from billing import tasks  # noqa: F401  (registers the tasks, as the worker's autodiscovery does)
    from gateway_project.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["billing-stripe-sync"]
    assert entry["schedule"] == 60.0
    finalized_invoice(acme, 30)
    fake.fail_next(1, status=500, path="/v1/invoices")
    assert app.tasks[entry["task"]].apply().get() == {"pushed": [], "voided": [], "failed": ["INV-000030"]}
    Invoice.objects.filter(number=30).update(stripe_next_attempt_at=timezone.now())  # the backoff has passed
    assert app.tasks[entry["task"]].apply().get() == {"pushed": ["INV-000030"], "voided": [], "failed": []}


def test_the_stripe_sync_command_pushes_and_reports(fake, acme, globex):
    finalized_invoice(acme, 20)
    finalized_invoice(globex, 21)
    out = call_command_output("stripe-sync", "--tenant", "acme")
    assert out.strip() == "INV-000020: pushed to Stripe"
    assert [i["metadata"]["gateway_tenant"] for i in fake.invoices.values()] == ["acme"]
    assert call_command_output("stripe-sync", "--tenant", "acme").strip() == "nothing to push"

    fake.fail_next(1, status=500)
    with pytest.raises(CommandError, match="1 invoice"):
        call_command_output("stripe-sync")


def test_the_stripe_sync_command_says_when_stripe_is_off(acme, settings):
    settings.STRIPE_API_KEY = ""
    with pytest.raises(CommandError, match="STRIPE_API_KEY"):
        call_command_output("stripe-sync")


def call_command_output(*args: str) -> str:
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command("gateway", *args, stdout=out, stderr=err)
    return out.getvalue()


# --- customer portal ---------------------------------------------------------------------------------


def test_the_owner_is_sent_to_a_fresh_portal_session(fake, acme, alice, client):
    client.force_login(alice)
    response = client.get("/t/acme/billing/stripe-portal/")
    assert response.status_code == 302
    (session,) = fake.portal_sessions.values()
    assert response["Location"] == session["url"]
    assert session["return_url"].endswith("/t/acme/billing/")
    assert session["customer"] == Plan.objects.get(tenant=acme).stripe_customer_id


def test_with_stripe_down_the_portal_link_comes_back_with_a_message(fake, acme, alice, client, settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"
    client.force_login(alice)
    response = client.get("/t/acme/billing/stripe-portal/", follow=False)
    assert response.status_code == 302 and response["Location"] == "/t/acme/billing/"


def test_the_billing_page_never_waits_for_stripe(fake, acme, alice, client):
    """It only links to the portal view, so a Stripe outage cannot slow it: no call at all on render."""
    client.force_login(alice)
    response = client.get("/t/acme/billing/")
    assert response.status_code == 200
    assert b"/t/acme/billing/stripe-portal/" in response.content
    assert fake.calls == []


def test_bob_cannot_open_alices_portal_and_an_admin_cannot_either(fake, world, client):
    client.force_login(world.bob)
    assert client.get("/t/acme/billing/stripe-portal/").status_code == 404
    client.force_login(world.dave)
    assert client.get("/t/acme/billing/stripe-portal/").status_code == 403
    assert fake.calls == []
