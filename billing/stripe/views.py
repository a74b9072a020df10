"""The console's way into the Stripe customer portal: a link that creates the session on click.

The billing page only links here, so rendering it never waits for Stripe; the owner who clicks waits at
most billing.stripe.sync.PORTAL_TIMEOUT, and an outage sends them back with a message instead of an error.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from billing.stripe import sync as stripe_sync
from tenants.permissions import BILLING_MANAGE, tenant_access


@login_required
@require_GET
def stripe_portal(request: HttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, BILLING_MANAGE)
    if not stripe_sync.enabled():
        raise Http404("Stripe is not configured on this gateway.")
    # Built from PUBLIC_URL, never from the Host header a client chooses.
    back = reverse("billing", args=[access.tenant.slug])
    url = stripe_sync.portal_url(access.tenant, settings.PUBLIC_URL + back)
    if url is None:
        messages.error(request, "Stripe is not reachable right now; please try again in a few minutes.")
        return redirect(back)
    return redirect(url)
