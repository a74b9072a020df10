"""Celery tasks of the billing app: thin, each calls one service function.

Workers find them here by name (billing.tasks.<function>; the beat entries in settings name them too).
The services that queue them (billing.stripe.sync, billing.stripe.webhooks) import this module, so the
tasks import their services inside their bodies: that is the one import cycle billing allows.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, max_retries=5, default_retry_delay=30)
def send_budget_alert(self, *, budget_id: int, period_key: str, threshold: int, spent_nanos: int) -> None:
    """Thin: the service decides (exactly once per threshold and period) and sends.

    One call can cross several thresholds at once (50 % and 80 %); the proxy queues one task for each
    and workers run them in any order. So each task claims every lower threshold the same spend has
    crossed as well and mails them in one e-mail: whichever task runs first sends it, and the others
    find those alerts already sent (the alert rows are locked while it is sent). ALERT_REFUSED (a hard
    budget started refusing calls) takes the crossed thresholds not yet mailed along the same way.
    """
    from billing.services import budget_alerts_send, thresholds_up_to

    try:
        steps = thresholds_up_to(budget_id, threshold, spent_nanos)
        budget_alerts_send(budget_id=budget_id, period_key=period_key, thresholds=steps, spent_nanos=spent_nanos)
    except Exception as exc:  # SMTP hiccups: retry, the alert row keeps it exactly-once
        raise self.retry(exc=exc) from exc


# --- Stripe (billing.stripe.sync) ----------------------------------------------------------------------
# Thin: a failed push is recorded on the invoice with its backoff and retried by stripe_sync_task, so the
# tasks themselves never raise for Stripe and never sleep in a worker.


@shared_task
def push_invoice_task(*, invoice_id: int) -> str:
    from billing.stripe.sync import push_and_record

    return push_and_record(invoice_id)


@shared_task
def void_invoice_task(*, invoice_id: int) -> str:
    from billing.stripe.sync import void_and_record

    return void_and_record(invoice_id)


@shared_task
def stripe_sync_task() -> dict:
    from billing.stripe.sync import sync

    result = sync()
    return {"pushed": result.pushed, "voided": result.voided, "failed": [label for label, _ in result.failed]}


@shared_task(bind=True, max_retries=5, default_retry_delay=60)
def send_payment_failed_email(self, *, invoice_id: int, hosted_invoice_url: str = "") -> None:
    from billing.stripe.webhooks import payment_failed_email_send

    try:
        payment_failed_email_send(invoice_id=invoice_id, hosted_invoice_url=hosted_invoice_url)
    except OSError as exc:  # SMTP hiccups: retry later
        raise self.retry(exc=exc) from exc


# --- Invoices (billing.invoicing.services) -------------------------------------------------------------


@shared_task
def finalize_invoices_task() -> list[str]:
    """The beat entry on the 1st and 2nd (hourly): `gateway finalize-invoices`. Idempotent."""
    from billing.invoicing.services import finalize_invoices

    return [inv.label for inv in finalize_invoices()]


@shared_task
def refresh_drafts_task() -> list[str]:
    """The beat entry every 10 minutes: rebuild the drafts of tenants whose ledger moved. Idempotent."""
    from billing.invoicing.services import refresh_drafts

    return [f"{inv.billed_slug} {inv.month:%Y-%m}" for inv in refresh_drafts()]
