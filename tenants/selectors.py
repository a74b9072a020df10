"""Reads for the console and the API. Everything is scoped to a tenant passed in by an access helper."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from tenants.models import AuditLog, Invitation, ManagementToken, Membership, Tenant, VirtualKey, hash_secret


def memberships_for_user(user) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")


def members_for(tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__email")


def pending_invitations_for(tenant: Tenant) -> QuerySet[Invitation]:
    return Invitation.objects.filter(tenant=tenant, accepted_at=None).order_by("-created_at")


def invitation_by_token(token: str) -> Invitation | None:
    return Invitation.objects.filter(token_hash=hash_secret(token)).select_related("tenant", "invited_by").first()


def management_tokens_for(tenant: Tenant) -> QuerySet[ManagementToken]:
    return (
        ManagementToken.objects.filter(tenant=tenant).select_related("created_by").order_by("revoked_at", "-created_at")
    )


def management_token_by_secret(secret: str) -> ManagementToken | None:
    return (
        ManagementToken.objects.filter(token_hash=hash_secret(secret), revoked_at=None)
        .select_related("tenant", "created_by")
        .first()
    )


def audit_entries_for(tenant: Tenant) -> QuerySet[AuditLog]:
    """The tenant's own log, plus console logins of its current members (recorded once per login)."""
    member_ids = Membership.objects.filter(tenant=tenant).values("user_id")
    return AuditLog.objects.filter(Q(tenant=tenant) | Q(tenant=None, action="user.login", actor_id__in=member_ids))


def tenant_overview(tenant: Tenant) -> dict:
    from observability.models import CallLog
    from routing.models import ModelDeployment, ProviderCredential

    now = timezone.now()
    keys = VirtualKey.objects.filter(tenant=tenant)
    calls = CallLog.objects.filter(tenant=tenant, created_at__gte=now - timedelta(hours=24))
    return {
        "active_keys": keys.filter(revoked=False).filter(Q(expires_at=None) | Q(expires_at__gt=now)).count(),
        "providers": ProviderCredential.objects.filter(tenant=tenant).count(),
        "models": ModelDeployment.objects.filter(tenant=tenant).values("model_name").distinct().count(),
        "members": Membership.objects.filter(tenant=tenant).count(),
        "calls_24h": calls.count(),
        "errors_24h": calls.filter(status_code__gte=400).count(),
    }
