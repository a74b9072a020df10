"""The key page's usage panel: one key's calls, spend and last use, from the call-log rollups.

The key page (tenants.views.key_detail) loads it with htmx, as billing's Spend page loads its key table:
tenants sits below observability and cannot read the rollups. Opened without htmx it is a page of its
own, so the key page's link to it works without JavaScript.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from gateway_project.common.htmx import HtmxHttpRequest
from observability.selectors import key_activity
from tenants.permissions import access_key, tenant_access


@login_required
@require_GET
def key_usage(request: HtmxHttpRequest, slug: str, key_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    # The key page's own rule: a member sees only the keys they created (another's is 404, as on the
    # dashboard, which sums only a member's own keys).
    key = access_key(access, key_id)
    usage = key_activity(access.tenant, key, now=timezone.now())
    # The explorer over the same 30 days, so that the calls it lists are the ones counted here.
    calls_query = urlencode({"key": key.id, "since": usage.last_30_days.since.strftime("%Y-%m-%dT%H:%M")})
    context = {"section": "keys", "key": key, "usage": usage, "calls_query": calls_query}
    template = "observability/key_usage.html#panel" if request.htmx else "observability/key_usage.html"
    return render(request, template, context)
