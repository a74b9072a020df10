"""The project as an installed app: it holds the operator's command line (`manage.py gateway`, in
management/commands/) and wires together what the domain apps cannot import from each other."""

from __future__ import annotations

from datetime import timedelta

from django.apps import AppConfig
from django.utils import timezone


def calls_last_day(tenant) -> dict[str, int]:
    """The tenant overview's calls and errors of the last 24 hours (tenants.selectors.OVERVIEW_COUNTS)."""
    from observability.models import CallLog

    calls = CallLog.objects.filter(tenant=tenant, created_at__gte=timezone.now() - timedelta(hours=24))
    return {"calls_24h": calls.count(), "errors_24h": calls.filter(status_code__gte=400).count()}


class GatewayProjectConfig(AppConfig):
    name = "gateway_project"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from tenants.selectors import OVERVIEW_COUNTS

        OVERVIEW_COUNTS["observability"] = calls_last_day
