"""The live call log page: the socket (observability.consumers) does the work, this view draws the frame.

Kept apart from observability.views (dashboard, explorer, exports): the live page only needs the
tenant, the filters' choices and the socket's address.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from gateway_project.common.htmx import HtmxHttpRequest
from observability.consumers import SESSION_TENANT
from observability.live import event
from observability.models import CallLog
from observability.views import scope_key_ids
from routing.selectors import model_names_for
from tenants.models import Role, VirtualKey
from tenants.permissions import TenantAccess, tenant_access, visible_keys

RECENT_CALLS = 50
# The call-log columns the live page's events are made of (observability.live.event).
EVENT_FIELDS = (
    "request_id", "created_at", "virtual_key_id", "requested_model", "route", "variant", "provider",
    "upstream_model", "stream", "status_code", "latency_ms", "ttfb_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost_picodollars", "cost_estimated", "error_type", "error_message", "end_user",
    "cache_status", "pii_actions", "guardrails", "fallback_reason", "client_disconnected",
)  # fmt: skip


def recent_events(access: TenantAccess, count: int) -> list[dict]:
    """The tenant's latest calls (a member's: their own keys'), oldest first, as the socket sends them."""
    rows = CallLog.objects.filter(tenant=access.tenant)
    own = scope_key_ids(access)
    if own is not None:
        rows = rows.filter(virtual_key_id__in=own)
    latest = list(rows.order_by("-created_at", "-id").values(*EVENT_FIELDS)[:count])
    names = dict(VirtualKey.objects.filter(tenant=access.tenant).values_list("id", "name"))
    out = []
    for record in reversed(latest):
        key_id = record["virtual_key_id"]
        out.append({**event(record), "key": names.get(key_id) or f"key #{key_id}"})
    return out


@login_required
@require_GET
def live_logs(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    # The user's current tenant for the socket, which falls back to it without ?tenant=.
    if request.session.get(SESSION_TENANT) != access.tenant.slug:
        request.session[SESSION_TENANT] = access.tenant.slug
    context = {
        "section": "live",
        "keys": list(visible_keys(access).order_by("name").values_list("name", flat=True)),
        "models": model_names_for(access.tenant),
        "own_only": access.role == Role.MEMBER,
        "socket_path": f"/ws/logs/?tenant={access.tenant.slug}",
        # The page swaps the placeholder for each call's request id.
        "detail_url": reverse("log-by-request", args=[access.tenant.slug, "REQUEST_ID"]),
        # The page starts with the latest calls already stored, not empty; the socket adds the rest.
        "initial": recent_events(access, RECENT_CALLS),
    }
    return render(request, "observability/live.html", context)
