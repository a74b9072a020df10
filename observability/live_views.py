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
from routing.selectors import model_names_for
from tenants.models import Role
from tenants.permissions import tenant_access, visible_keys


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
    }
    return render(request, "observability/live.html", context)
