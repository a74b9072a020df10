"""Stripe webhooks at POST /billing/stripe/webhook/: signed, and each event processed exactly once.

The signature (`Stripe-Signature: t=...,v1=...`, HMAC-SHA256 of `t.payload` with STRIPE_WEBHOOK_SECRET)
is checked by the library's `Webhook.construct_event` with its 300 s tolerance; anything else is a 400
and changes nothing. Stripe delivers at least once, sometimes twice at the same moment: the event's row
(`StripeEvent.event_id`, unique) is inserted in the same transaction as the event's effect, so a second
delivery either waits for the first and then fails on the constraint, or finds the row: one effect.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.invoicing.services import mark_invoice_paid
from billing.models import Invoice, StripeEvent
from billing.tasks import send_payment_failed_email
from tenants.audit import Actor
from tenants.models import Membership, Role

log = logging.getLogger("gateway.billing.stripe")

HANDLED = ("invoice.paid", "invoice.payment_failed")


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return JsonResponse({"error": "Stripe webhooks are not configured on this gateway"}, status=400)
    import stripe  # heavy: loaded on the first webhook, not with the URL configuration

    signature = request.headers.get("Stripe-Signature", "")
    if _from_the_future(signature):
        # The library refuses timestamps older than its tolerance, not newer ones: a signature made for
        # later (a clock far ahead, or a capture prepared to be replayed) is refused here.
        return JsonResponse({"error": "invalid Stripe-Signature (timestamp in the future)"}, status=400)
    try:
        event = stripe.Webhook.construct_event(request.body.decode("utf-8"), signature, secret)
    except stripe.SignatureVerificationError:
        # Also a stale timestamp (older than the tolerance): a replayed capture is not an event.
        return JsonResponse({"error": "invalid Stripe-Signature"}, status=400)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # not JSON, not an object, too deep
        return JsonResponse({"error": "the body is not a Stripe event"}, status=400)
    data = event.to_dict()  # plain dicts all the way down (StripeObject is not a dict)
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        return JsonResponse({"error": "the body is not a Stripe event"}, status=400)
    if event_type not in HANDLED:
        return JsonResponse({"received": True, "ignored": event_type})
    obj = data["data"].get("object") if isinstance(data.get("data"), dict) else None
    if not isinstance(obj, dict):
        return JsonResponse({"error": "the event has no data.object"}, status=400)
    processed = process_event(event_id, event_type, obj)
    return JsonResponse({"received": True, "duplicate": not processed})


SIGNATURE_TOLERANCE_S = 300  # the library's default, both ways


def _from_the_future(signature: str) -> bool:
    for part in signature.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value) > timezone.now().timestamp() + SIGNATURE_TOLERANCE_S
            except ValueError:
                return False  # the library refuses it
    return False


def process_event(event_id: str, event_type: str, obj: dict) -> bool:
    """Apply one event's effect with its row, once. False when the event was already processed."""
    try:
        with transaction.atomic():
            # Inserted first: a concurrent delivery of the same id blocks here until this transaction
            # ends, then fails on the unique constraint (or goes ahead if this one rolled back).
            StripeEvent.objects.create(event_id=event_id, type=event_type, processed_at=timezone.now())
            invoice = _our_invoice(obj)
            if invoice is None:
                log.warning("Stripe event %s (%s) names no invoice of ours: ignored", event_id, event_type)
            elif event_type == "invoice.paid":
                _invoice_paid(invoice, obj)
            elif event_type == "invoice.payment_failed":
                _invoice_payment_failed(invoice, obj)
    except IntegrityError:
        if StripeEvent.objects.filter(event_id=event_id).exists():
            return False
        raise
    return True


_LABEL = re.compile(r"^(?:INV-)?0*(\d+)$")


def _our_invoice(obj: dict) -> Invoice | None:
    """Our invoice named by the Stripe invoice's metadata (`gateway_invoice`, our number), checked against
    the tenant in `gateway_tenant` so a hand-made Stripe invoice cannot mark another tenant's bill."""
    metadata = obj.get("metadata") or {}
    match = _LABEL.match(str(metadata.get("gateway_invoice", "")).strip())
    if not match:
        return None
    slug = metadata.get("gateway_tenant", "")
    invoice = (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("tenant")
        # The snapshot too: an invoice of a deleted tenant can still be paid.
        .filter(Q(tenant__slug=slug) | Q(tenant__isnull=True, tenant_slug=slug), number=int(match.group(1)))
        .first()
    )
    if invoice is not None and invoice.stripe_invoice_id and obj.get("id") != invoice.stripe_invoice_id:
        log.warning(
            "Stripe invoice %s claims %s, pushed as %s", obj.get("id"), invoice.label, invoice.stripe_invoice_id
        )
        return None
    return invoice


def _invoice_paid(invoice: Invoice, obj: dict) -> None:
    transitions = (obj.get("status_transitions") or {}).get("paid_at")
    paid_at = datetime.fromtimestamp(transitions, tz=UTC) if transitions else timezone.now()
    if mark_invoice_paid(invoice, at=paid_at, actor=Actor(label="stripe-webhook")):
        log.info("invoice %s paid in Stripe (%s)", invoice.label, obj.get("id"))


def _invoice_payment_failed(invoice: Invoice, obj: dict) -> None:
    invoice_id, url = invoice.pk, str(obj.get("hosted_invoice_url") or "")
    # Queued after commit: the email goes out only for the delivery whose row was stored.
    transaction.on_commit(lambda: send_payment_failed_email.delay(invoice_id=invoice_id, hosted_invoice_url=url))


def payment_failed_email_send(*, invoice_id: int, hosted_invoice_url: str = "") -> int:
    """Tell the tenant's owners that Stripe could not collect an invoice. Returns the number of mails."""
    invoice = Invoice.objects.select_related("tenant").filter(pk=invoice_id).first()
    if invoice is None:
        return 0
    tenant = invoice.tenant
    if tenant is None:
        return 0  # the tenant was deleted: nobody to tell
    owners = sorted(
        set(
            Membership.objects.filter(tenant=tenant, role=Role.OWNER)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
    )
    if not owners:
        return 0
    context = {
        "tenant": tenant,
        "invoice": invoice,
        "hosted_invoice_url": hosted_invoice_url if hosted_invoice_url.startswith("https://") else "",
        "url": f"{settings.PUBLIC_URL}/t/{tenant.slug}/billing/",
    }
    subject = f"[{tenant.name}] Payment failed for invoice {invoice.label} ({invoice.total_usd} USD)"
    EmailMessage(subject=subject, body=render_to_string("billing/email/payment_failed.txt", context), to=owners).send()
    return len(owners)
