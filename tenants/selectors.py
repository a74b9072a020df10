"""Reads for the console and the API. Everything is scoped to a tenant passed in by an access helper."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Q, QuerySet
from django.utils import timezone

from tenants.models import AuditLog, Invitation, ManagementToken, Membership, Tenant, VirtualKey, hash_secret

# What the tenant pages show of other apps' data, registered from those apps' AppConfig.ready() so that
# tenants imports none of them: counts for the overview page (routing: providers and models; the
# project: calls of the last day), and the tenant's model names, which the key form offers (routing).
OVERVIEW_COUNTS: dict[str, Callable[[Tenant], dict[str, int]]] = {}
MODEL_NAMES: dict[str, Callable[[Tenant], list[str]]] = {}


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
    now = timezone.now()
    keys = VirtualKey.objects.filter(tenant=tenant)
    stats = {
        "active_keys": keys.filter(revoked=False).filter(Q(expires_at=None) | Q(expires_at__gt=now)).count(),
        "members": Membership.objects.filter(tenant=tenant).count(),
    }
    for counts in OVERVIEW_COUNTS.values():
        stats.update(counts(tenant))
    return stats


def model_names_for(tenant: Tenant) -> list[str]:
    return [name for names in MODEL_NAMES.values() for name in names(tenant)]
