from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, max_retries=5, default_retry_delay=30)
def send_budget_alert(self, *, budget_id: int, period_key: str, threshold: int, spent_nanos: int) -> None:
    """Thin: the service decides (exactly once per threshold and period) and sends."""
    from billing.services import budget_alert_send

    try:
        budget_alert_send(budget_id=budget_id, period_key=period_key, threshold=threshold, spent_nanos=spent_nanos)
    except Exception as exc:  # SMTP hiccups: retry, the alert row keeps it exactly-once
        raise self.retry(exc=exc) from exc
