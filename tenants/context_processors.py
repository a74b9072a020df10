"""The console chrome: which tenant is open, what the caller may do there, and the tenant switcher."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from tenants.selectors import memberships_for_user


def console(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    context: dict = {"my_memberships": SimpleLazyObject(lambda: list(memberships_for_user(user)))}
    # Set by tenants.permissions.tenant_access on every tenant page.
    access = getattr(request, "tenant_access", None)
    if access is not None:
        context.update(access=access, tenant=access.tenant, can=access.flags)
    return context
