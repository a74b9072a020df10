"""Account events from allauth: a first tenant for every new account, and logins in the audit log."""

from __future__ import annotations

from typing import Any

from allauth.account.signals import user_logged_in, user_signed_up
from django.dispatch import receiver
from django.http import HttpRequest

from tenants.audit import Actor, audit
from tenants.permissions import client_ip
from tenants.services import tenant_create_for_new_user


@receiver(user_signed_up, dispatch_uid="tenants.first_tenant")
def create_first_tenant(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    tenant_create_for_new_user(user=user, actor=Actor(user=user, ip=client_ip(request)))


@receiver(user_logged_in, dispatch_uid="tenants.audit_login")
def audit_login(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    # One row without a tenant; each tenant's audit page shows the logins of its current members.
    audit(
        None,
        actor=Actor(user=user, ip=client_ip(request)),
        action="user.login",
        target_type="User",
        target_label=user.email,
    )
