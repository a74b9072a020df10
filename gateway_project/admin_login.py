"""The admin signs in through allauth, never through its own password form.

Django's admin login form has no rate limit and no second factor: thirty wrong passwords and then the
right one would get in. allauth's login has both (ACCOUNT_RATE_LIMITS per IP and per account, TOTP),
so /admin/login/ only sends people there and back.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth import REDIRECT_FIELD_NAME
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    next_url = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME) or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}, require_https=False):
        next_url = ""
    next_url = next_url or reverse("admin:index")
    user = request.user
    if user.is_authenticated:
        if user.is_active and user.is_staff:
            return HttpResponseRedirect(next_url)
        # Signed in, but not staff: sending them to the login page again would loop back here.
        raise PermissionDenied("Your account has no access to the admin site.")
    return HttpResponseRedirect(f"{resolve_url('account_login')}?{urlencode({REDIRECT_FIELD_NAME: next_url})}")
