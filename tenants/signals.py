"""Account events from allauth: a first tenant for every new account (or the inviting tenant for
someone who signs up through an invitation link), and logins in the audit log."""

from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed, user_logged_in, user_signed_up
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from tenants.adapters import INVITATION_SESSION_KEY
from tenants.audit import Actor, audit
from tenants.models import Invitation, Membership
from tenants.permissions import client_ip
from tenants.selectors import invitation_by_token
from tenants.services import invitation_accept, tenant_create_for_new_user

# Set at sign-up when the account was made to join an invitation's tenant; cleared once it joined.
INVITED_SIGNUP_SESSION_KEY = "invited_signup"


def _session_invitation(request: HttpRequest | None, email: str) -> Invitation | None:
    """The pending invitation whose link was opened in this browser, if it is for `email`."""
    token = request.session.get(INVITATION_SESSION_KEY) if request is not None else None
    invitation = invitation_by_token(token) if token else None
    if invitation is None or not invitation.is_pending or invitation.email.lower() != (email or "").lower():
        return None
    return invitation


def _join(request: HttpRequest, user: Any, invitation: Invitation) -> bool:
    try:
        invitation_accept(invitation, user=user, actor=Actor(user=user, ip=client_ip(request)))
    except ValidationError:
        return False  # the address is not verified yet: joined on email_confirmed
    request.session.pop(INVITATION_SESSION_KEY, None)
    request.session.pop(INVITED_SIGNUP_SESSION_KEY, None)
    return True


@receiver(user_signed_up, dispatch_uid="tenants.first_tenant")
def create_first_tenant(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    invitation = _session_invitation(request, getattr(user, "email", ""))
    if invitation is None:
        tenant_create_for_new_user(user=user, actor=Actor(user=user, ip=client_ip(request)))
        return
    # The account exists to join the inviting tenant: no personal workspace next to it. The invitation
    # went to this address and its link was opened in this browser: that proves the address as a code
    # mailed to it would, so it is verified now (allauth's verification step, which runs after this
    # signal, then has nothing to ask) and the user joins at once.
    EmailAddress.objects.filter(user=user, email__iexact=invitation.email).update(verified=True)
    request.session[INVITED_SIGNUP_SESSION_KEY] = True
    _join(request, user, invitation)


@receiver(email_confirmed, dispatch_uid="tenants.join_invited_tenant")
def join_invited_tenant(sender: Any, request: HttpRequest | None, email_address: Any, **kwargs: Any) -> None:
    if request is None or not request.session.get(INVITED_SIGNUP_SESSION_KEY):
        return
    user = email_address.user
    invitation = _session_invitation(request, email_address.email)
    if invitation is not None and _join(request, user, invitation):
        return
    # The invitation was cancelled or expired meanwhile: fall back to the usual first tenant.
    request.session.pop(INVITED_SIGNUP_SESSION_KEY, None)
    if not Membership.objects.filter(user=user).exists():
        tenant_create_for_new_user(user=user, actor=Actor(user=user, ip=client_ip(request)))


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="tenants.verify_operator_superuser")
def verify_operator_superuser(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """A superuser made on the server (`createsuperuser`) has its address verified: whoever can run
    commands there is the operator, and allauth would otherwise ask for an e-mailed code before /admin/.
    Accounts made through the web are never superusers at creation."""
    if created and instance.is_superuser and instance.email:
        EmailAddress.objects.get_or_create(
            user=instance, email=instance.email, defaults={"verified": True, "primary": True}
        )


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
