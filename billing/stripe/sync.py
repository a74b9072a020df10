"""Stripe as the payment rail: one customer per tenant, finalized invoices pushed as Stripe invoices.

Stripe is on when `STRIPE_API_KEY` is set. Nothing here runs on the proxy path or while a console page
renders: finalization queues `push_invoice_task`, and the `billing-stripe-sync` beat entry (and
`gateway stripe-sync`) picks up whatever is still unpushed, so a Stripe outage only delays billing.

Exactly-once billing rests on Stripe's idempotency: every POST carries an `Idempotency-Key` derived from
our records (`cus-<tenant id>`, `inv-<number>`, `inv-<number>-item-<n>`, `inv-<number>-finalize`), so a
retry, a crash between two calls or two workers pushing the same invoice replay Stripe's first answer
instead of creating a second object. Stripe keeps keys for 24 hours; beyond that the stored
`stripe_invoice_id` and the `gateway_line` metadata on invoice items make a late retry skip what Stripe
already has.

Failures are recorded on the invoice (`stripe_attempts`, `stripe_next_attempt_at` with exponential
backoff, `stripe_error` scrubbed of our secrets) and retried by the beat task.

A voided invoice that Stripe has is voided there too (`POST /v1/invoices/{id}/void`, key
`inv-<number>-void`; a Stripe invoice still in draft, left by an interrupted push, is deleted instead),
queued and retried the same way, with the same backoff fields.

Without a Celery broker (tasks run eagerly, in the caller) a push or a void must still not hold up the
request that finalized or voided the invoice: after commit it runs in a daemon thread of its own. If
the process ends first, nothing is lost: the invoice is still unpushed (or not yet voided in Stripe)
and the next `gateway stripe-sync` or beat run picks it up, its idempotency keys replaying whatever
part Stripe had already done.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from billing.invoice_rules import line_cents
from billing.models import Invoice, InvoiceStatus, Plan

# Queued after commit; the tasks call back into this module (billing.tasks imports it in their bodies).
from billing.tasks import push_invoice_task, void_invoice_task
from gateway_project.common.redact import redact
from tenants.audit import Actor, audit
from tenants.models import Tenant

if TYPE_CHECKING:
    import stripe

# `stripe` takes most of a second to import: it is imported where a call is made, not when the URL
# configuration (and so every gateway process) loads this module.

log = logging.getLogger("gateway.billing.stripe")

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=6)
# A push holds this lock (in the shared cache) so two workers do not interleave on one invoice; it
# expires on its own if a worker dies mid-push.
LOCK_SECONDS = 300
PORTAL_TIMEOUT = 10.0  # seconds: the owner is waiting on a click


def enabled() -> bool:
    return bool(settings.STRIPE_API_KEY)


def client(*, timeout: float | None = None) -> stripe.StripeClient:
    """A client for the configured account. No retries inside the library: our own backoff retries, with
    the same idempotency keys, from a worker instead of a sleeping request."""
    import stripe

    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(
        settings.STRIPE_API_KEY,
        base_addresses=base,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout or settings.STRIPE_TIMEOUT),
    )


def scrub(text: str) -> str:
    """Stripe error text with our secrets (in full or masked, as Stripe quotes keys) taken out."""
    secrets = [s for s in (settings.STRIPE_API_KEY, settings.STRIPE_WEBHOOK_SECRET) if s and len(s) >= 8]
    return redact(text, sorted(secrets, key=len, reverse=True))[:2000]


def describe(exc: Exception) -> str:
    import stripe

    if isinstance(exc, stripe.StripeError):
        status = f"HTTP {exc.http_status}: " if exc.http_status else ""
        return scrub(f"{type(exc).__name__}: {status}{exc.user_message or ''}".strip())
    return scrub(f"{type(exc).__name__}: {exc}")


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes after the first, second, third ... failure, at most 6 hours."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


# --- customers ----------------------------------------------------------------------------------------


def ensure_customer(tenant: Tenant, sc: stripe.StripeClient | None = None) -> str:
    """The tenant's Stripe customer id, creating the customer the first time. The key is the tenant's
    id, so two first pushes racing (or a crash before the id was stored) end up with one customer."""
    plan, _ = Plan.objects.get_or_create(tenant=tenant)
    if plan.stripe_customer_id:
        return plan.stripe_customer_id
    sc = sc or client()
    # Only fields that do not change: a retry with the same key must send the same parameters.
    customer = sc.v1.customers.create(
        params={"name": tenant.name, "metadata": {"gateway_tenant": tenant.slug}},
        options={"idempotency_key": f"cus-{tenant.id}"},
    )
    Plan.objects.filter(pk=plan.pk, stripe_customer_id="").update(stripe_customer_id=customer.id)
    return Plan.objects.values_list("stripe_customer_id", flat=True).get(pk=plan.pk)


# --- invoices -----------------------------------------------------------------------------------------


def invoice_key(invoice: Invoice) -> str:
    return f"inv-{invoice.number}"


def stripe_items(invoice: Invoice) -> list[dict]:
    """One Stripe invoice item per line: integer cents that add up exactly to the invoice total."""
    items = []
    for n, (line, cents) in enumerate(line_cents(invoice), start=1):
        items.append(
            {
                "n": n,
                "amount": cents,
                "description": (line.label or line.model or line.get_kind_display())[:500],
            }
        )
    return items


def push_invoice(invoice: Invoice) -> bool:
    """Push one finalized invoice to Stripe and finalize it there. True when Stripe has it (now or
    already); raises the Stripe error otherwise. Callers that want the failure recorded and retried use
    `push_and_record`."""
    if invoice.stripe_pushed_at is not None:
        return True
    if invoice.status != InvoiceStatus.FINALIZED or invoice.number is None:
        raise ValueError(f"invoice {invoice.pk} is {invoice.status}: only finalized invoices go to Stripe")
    # The draft invoice first, then items attached to it with `invoice=` (Stripe's Invoicing API flow since
    # API version 2022-08-01, when pending items stopped being swept into new invoices): an item can then
    # never land on another invoice of the same customer.
    sc = client()
    customer = ensure_customer(invoice.tenant, sc)
    key = invoice_key(invoice)
    done_lines: set[str] = set()
    if invoice.stripe_invoice_id:
        # A retry, maybe after Stripe forgot our keys (24 h): ask Stripe what it already has.
        remote = sc.v1.invoices.retrieve(invoice.stripe_invoice_id)
        if remote.status != "draft":
            _mark_pushed(invoice)
            return True
        existing = sc.v1.invoice_items.list(params={"invoice": invoice.stripe_invoice_id, "limit": 100})
        done_lines = {_metadata(item).get("gateway_line", "") for item in existing.auto_paging_iter()}
    else:
        remote = sc.v1.invoices.create(
            params={
                "customer": customer,
                "currency": "usd",
                "collection_method": "charge_automatically",
                # We finalize explicitly once every item is on it; until then it stays a draft.
                "auto_advance": False,
                # Only the items we attach below, never other pending items of this customer.
                "pending_invoice_items_behavior": "exclude",
                "description": f"LLM gateway usage {invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d}",
                "metadata": {"gateway_tenant": invoice.tenant.slug, "gateway_invoice": invoice.label},
            },
            options={"idempotency_key": key},
        )
        invoice.stripe_invoice_id = remote.id
        Invoice.objects.filter(pk=invoice.pk).update(stripe_invoice_id=remote.id)
    for item in stripe_items(invoice):
        if str(item["n"]) in done_lines:
            continue
        sc.v1.invoice_items.create(
            params={
                "customer": customer,
                "invoice": invoice.stripe_invoice_id,
                "amount": item["amount"],
                "currency": "usd",
                "description": item["description"],
                "metadata": {"gateway_invoice": invoice.label, "gateway_line": str(item["n"])},
            },
            options={"idempotency_key": f"{key}-item-{item['n']}"},
        )
    if not Invoice.objects.filter(pk=invoice.pk, status=InvoiceStatus.FINALIZED).exists():
        # Voided while we were pushing: leave Stripe's copy a draft; the void sync deletes it.
        return False
    sc.v1.invoices.finalize_invoice(
        invoice.stripe_invoice_id,
        params={"auto_advance": True},  # Stripe collects it from here on
        options={"idempotency_key": f"{key}-finalize"},
    )
    _mark_pushed(invoice)
    return True


def _metadata(obj: stripe.StripeObject) -> dict:
    return obj.to_dict().get("metadata") or {}


def _mark_pushed(invoice: Invoice) -> None:
    invoice.stripe_pushed_at = timezone.now()
    invoice.stripe_next_attempt_at = None
    invoice.stripe_error = ""
    with transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).update(
            stripe_pushed_at=invoice.stripe_pushed_at, stripe_next_attempt_at=None, stripe_error=""
        )
        audit(
            invoice.tenant,
            actor=Actor(label="stripe-sync"),
            action="billing.invoice.stripe_push",
            target_type="Invoice",
            target_label=invoice.label,
            changes={"stripe_invoice_id": invoice.stripe_invoice_id, "attempts": invoice.stripe_attempts + 1},
        )
    log.info("invoice %s pushed to Stripe as %s", invoice.label, invoice.stripe_invoice_id)


def push_and_record(invoice_id: int) -> str:
    """Push one invoice, recording a failure for the backoff. Returns "pushed", "failed" or "skipped"
    (not finalized, already pushed, Stripe off, or another worker is on it). Never raises for Stripe."""
    if not enabled():
        return "skipped"
    lock = f"billing:stripe-push:{invoice_id}"
    if not cache.add(lock, 1, LOCK_SECONDS):
        return "skipped"
    try:
        invoice = Invoice.objects.select_related("tenant").filter(pk=invoice_id).first()
        if invoice is None or invoice.stripe_pushed_at is not None or invoice.status != InvoiceStatus.FINALIZED:
            return "skipped"
        if invoice.tenant is None:
            return "skipped"  # the tenant was deleted (and its Stripe customer with its plan)
        import stripe

        try:
            pushed = push_invoice(invoice)
        except (stripe.StripeError, OSError) as exc:
            _record_failure(invoice, exc)
            return "failed"
        return "pushed" if pushed else "skipped"
    finally:
        cache.delete(lock)


def _record_failure(invoice: Invoice, exc: Exception, what: str = "push") -> None:
    attempts = invoice.stripe_attempts + 1
    error = describe(exc)
    Invoice.objects.filter(pk=invoice.pk).update(
        stripe_attempts=attempts, stripe_next_attempt_at=timezone.now() + backoff(attempts), stripe_error=error
    )
    log.warning("Stripe %s of invoice %s failed (attempt %d): %s", what, invoice.label, attempts, error)


# --- voids --------------------------------------------------------------------------------------------


def void_invoice(invoice: Invoice) -> str:
    """Void our voided invoice in Stripe: "voided", "deleted" (it was still a Stripe draft), or "paid"
    (Stripe collected it first: nothing to undo here, the operator refunds in Stripe). Raises the Stripe
    error otherwise."""
    sc = client()
    remote = sc.v1.invoices.retrieve(invoice.stripe_invoice_id)
    if remote.status == "draft":
        # Stripe cannot void a draft, only delete it (DELETE is idempotent by nature).
        sc.v1.invoices.delete(invoice.stripe_invoice_id)
        outcome = "deleted"
    elif remote.status == "paid":
        outcome = "paid"
    elif remote.status != "void":
        sc.v1.invoices.void_invoice(
            invoice.stripe_invoice_id, options={"idempotency_key": f"{invoice_key(invoice)}-void"}
        )
        outcome = "voided"
    else:
        outcome = "voided"
    voided_at = timezone.now()
    error = "" if outcome != "paid" else "Stripe had already collected this invoice: refund it in Stripe if due."
    with transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).update(
            stripe_voided_at=voided_at, stripe_next_attempt_at=None, stripe_error=error
        )
        audit(
            invoice.tenant,
            actor=Actor(label="stripe-sync"),
            action="billing.invoice.stripe_void",
            target_type="Invoice",
            target_label=invoice.label,
            changes={"stripe_invoice_id": invoice.stripe_invoice_id, "outcome": outcome},
        )
    if outcome == "paid":
        log.warning(
            "invoice %s was voided here but Stripe had collected it (%s)", invoice.label, invoice.stripe_invoice_id
        )
    else:
        log.info("invoice %s voided in Stripe (%s): %s", invoice.label, invoice.stripe_invoice_id, outcome)
    return outcome


def void_and_record(invoice_id: int) -> str:
    """Void one invoice in Stripe, recording a failure for the backoff. Returns "voided", "failed" or
    "skipped" (not void, Stripe never had it, already done, Stripe off, or a worker holds it)."""
    if not enabled():
        return "skipped"
    # The push's lock: a void never interleaves with a push of the same invoice.
    lock = f"billing:stripe-push:{invoice_id}"
    if not cache.add(lock, 1, LOCK_SECONDS):
        return "skipped"
    try:
        invoice = Invoice.objects.select_related("tenant").filter(pk=invoice_id).first()
        if (
            invoice is None
            or invoice.status != InvoiceStatus.VOID
            or not invoice.stripe_invoice_id
            or invoice.stripe_voided_at is not None
        ):
            return "skipped"
        import stripe

        try:
            void_invoice(invoice)
        except (stripe.StripeError, OSError) as exc:
            _record_failure(invoice, exc, "void")
            return "failed"
        return "voided"
    finally:
        cache.delete(lock)


def due_voids(tenant: Tenant | None = None, *, now: datetime | None = None, force: bool = False):
    """Voided invoices Stripe has and has not voided yet (whose backoff has passed, unless forced)."""
    qs = Invoice.objects.filter(status=InvoiceStatus.VOID, stripe_voided_at__isnull=True).exclude(stripe_invoice_id="")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if not force:
        qs = qs.filter(Q(stripe_next_attempt_at__isnull=True) | Q(stripe_next_attempt_at__lte=now or timezone.now()))
    return qs.order_by("number")


def due_invoices(tenant: Tenant | None = None, *, now: datetime | None = None, force: bool = False):
    """Finalized invoices Stripe has not got yet (whose backoff has passed, unless forced)."""
    # Not those of deleted tenants: their Stripe customer went with their plan.
    qs = Invoice.objects.filter(status=InvoiceStatus.FINALIZED, stripe_pushed_at__isnull=True, tenant__isnull=False)
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if not force:
        qs = qs.filter(Q(stripe_next_attempt_at__isnull=True) | Q(stripe_next_attempt_at__lte=now or timezone.now()))
    return qs.order_by("number")


@dataclass
class SyncResult:
    pushed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    voided: list[str] = field(default_factory=list)


def sync(tenant: Tenant | None = None, *, force: bool = False) -> SyncResult:
    """Push every finalized invoice Stripe has not got yet. The beat task respects each invoice's
    backoff; the operator's `gateway stripe-sync` forces a try now."""
    result = SyncResult()
    if not enabled():
        return result
    for invoice_id, label in due_invoices(tenant, force=force).values_list("id", "number"):
        label = Invoice(number=label).label
        outcome = push_and_record(invoice_id)
        if outcome == "pushed":
            result.pushed.append(label)
        elif outcome == "failed":
            error = Invoice.objects.values_list("stripe_error", flat=True).get(pk=invoice_id)
            result.failed.append((label, error))
        else:
            result.skipped.append(label)
    for invoice_id, label in due_voids(tenant, force=force).values_list("id", "number"):
        label = Invoice(number=label).label
        outcome = void_and_record(invoice_id)
        if outcome == "voided":
            result.voided.append(label)
        elif outcome == "failed":
            error = Invoice.objects.values_list("stripe_error", flat=True).get(pk=invoice_id)
            result.failed.append((label, error))
        else:
            result.skipped.append(label)
    return result


def queue_push(invoice: Invoice) -> None:
    """After finalization: push once the transaction commits, in a worker, never in the caller."""
    if enabled():
        _after_commit(push_invoice_task, invoice.pk)


def queue_void(invoice: Invoice) -> None:
    """After a void: void Stripe's copy once the transaction commits (if Stripe has one yet; a push
    still under way is caught by the beat's next sync)."""
    if enabled() and invoice.stripe_invoice_id:
        _after_commit(void_invoice_task, invoice.pk)


def _after_commit(task, invoice_id: int) -> None:
    if task.app.conf.task_always_eager:
        # No broker: `.delay()` would run the Stripe calls right here, in the request that finalized or
        # voided the invoice. A daemon thread keeps them out of it (see the module docstring).
        transaction.on_commit(lambda: start_in_background(task, invoice_id))
    else:
        transaction.on_commit(lambda: task.delay(invoice_id=invoice_id))


_background: set[threading.Thread] = set()


def start_in_background(task, invoice_id: int) -> threading.Thread:
    thread = threading.Thread(
        target=_run_in_background, args=(task, invoice_id), name=f"stripe-{task.name}-{invoice_id}", daemon=True
    )
    _background.add(thread)
    thread.start()
    return thread


def _run_in_background(task, invoice_id: int) -> None:
    try:
        task.apply(kwargs={"invoice_id": invoice_id})
    except Exception:
        log.exception("background %s for invoice %s failed", task.name, invoice_id)
    finally:
        connections.close_all()  # this thread's own connections; the request's are untouched
        _background.discard(threading.current_thread())


def wait_for_background(timeout: float = 60.0) -> None:
    """For commands that end right after finalizing: let the background pushes finish (within `timeout`
    seconds in all) instead of dying with the process. Anything still unfinished is left to stripe-sync."""
    deadline = time.monotonic() + timeout
    for thread in list(_background):
        thread.join(max(deadline - time.monotonic(), 0))


# --- customer portal ----------------------------------------------------------------------------------


def portal_url(tenant: Tenant, return_url: str) -> str | None:
    """A fresh Billing Portal session for the tenant's customer, or None when Stripe is off or unreachable.

    Makes Stripe calls (bounded by PORTAL_TIMEOUT): call it when the owner clicks, not while a page renders
    (the `billing-stripe-portal` view does that).
    """
    if not enabled():
        return None
    import stripe

    try:
        sc = client(timeout=PORTAL_TIMEOUT)
        customer = ensure_customer(tenant, sc)
        # A session is not a charge: a new one per click is what Stripe expects, so the key is random.
        session = sc.v1.billing_portal.sessions.create(
            params={"customer": customer, "return_url": return_url},
            options={"idempotency_key": f"portal-{tenant.id}-{uuid.uuid4().hex}"},
        )
    except (stripe.StripeError, OSError) as exc:
        log.warning("Stripe billing portal for %s unavailable: %s", tenant.slug, describe(exc))
        return None
    return session.url
