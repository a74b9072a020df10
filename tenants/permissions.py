"""Who may do what in a tenant, and the access helpers that every console view and API endpoint uses.

A person (or API token) outside the tenant gets 404 for the tenant and everything in it, so tenants
cannot even learn about each other's objects. Inside the tenant, an action above the caller's role
gets 403. Roles:

- owner: everything, including members, billing and deleting the tenant
- admin: everything else (providers, models, every key, API tokens, settings, audit log)
- member: their own keys; reads the rest (except the audit log)
- viewer: reads only
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from tenants.audit import Actor
from tenants.models import Invitation, ManagementToken, Membership, Role, Tenant, VirtualKey, role_at_least

# Permission name -> the lowest role that has it. Templates read them as `can.keys_write` etc.
VIEW = "view"
KEYS_WRITE = "keys.write"  # create keys, and manage one's own
KEYS_MANAGE_ALL = "keys.manage_all"
CONFIG_WRITE = "config.write"  # providers, models, API tokens, tenant settings
AUDIT_VIEW = "audit.view"
MEMBERS_MANAGE = "members.manage"
BILLING_MANAGE = "billing.manage"
TENANT_DELETE = "tenant.delete"

MIN_ROLE: dict[str, str] = {
    VIEW: Role.VIEWER,
    KEYS_WRITE: Role.MEMBER,
    KEYS_MANAGE_ALL: Role.ADMIN,
    CONFIG_WRITE: Role.ADMIN,
    AUDIT_VIEW: Role.ADMIN,
    MEMBERS_MANAGE: Role.OWNER,
    BILLING_MANAGE: Role.OWNER,
    TENANT_DELETE: Role.OWNER,
}


def has_perm(role: str, perm: str) -> bool:
    return role_at_least(role, MIN_ROLE[perm])


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR is what the ASGI server saw; forwarded headers are client-controlled unless a trusted
    # proxy rewrites them, so they are not read here.
    return request.META.get("REMOTE_ADDR") or None


@dataclass(frozen=True)
class TenantAccess:
    """The caller's standing in one tenant: a console member or a management API token."""

    tenant: Tenant
    role: str
    actor: Actor
    # The person whose keys count as "own keys": the console user, or the user who minted the token.
    user_id: int | None
    token: ManagementToken | None = None

    def can(self, perm: str) -> bool:
        return has_perm(self.role, perm)

    def require(self, perm: str) -> None:
        if not self.can(perm):
            raise PermissionDenied(
                f"Your role ({self.role}) does not allow this; ask an owner or admin of {self.tenant.name}."
            )

    @property
    def flags(self) -> dict[str, bool]:
        """Every permission as a template-friendly flag: {"keys_write": True, ...}."""
        return {perm.replace(".", "_"): self.can(perm) for perm in MIN_ROLE}

    def owns_key(self, key: VirtualKey) -> bool:
        # A token minted from the command line acts for nobody, so it owns no key: without this check
        # None == None would make every CLI-minted key (created_by NULL) its own.
        return self.user_id is not None and key.created_by_id == self.user_id

    def can_edit_key(self, key: VirtualKey) -> bool:
        if self.can(KEYS_MANAGE_ALL):
            return True
        return self.can(KEYS_WRITE) and self.owns_key(key)

    def assignable_roles(self) -> list[tuple[str, str]]:
        """Roles this caller may hand out (to a token or an invitation): never above their own."""
        return [(value, label) for value, label in Role.choices if role_at_least(self.role, value)]


def tenant_access(request: HttpRequest, slug: str, perm: str = VIEW) -> TenantAccess:
    """The signed-in user's access to the tenant `slug`: 404 unless a member, 403 without `perm`."""
    user: Any = request.user
    if not user.is_authenticated:
        raise Http404
    membership = Membership.objects.filter(user=user, tenant__slug=slug).select_related("tenant").first()
    if membership is None:
        raise Http404("No such tenant.")
    access = TenantAccess(
        tenant=membership.tenant,
        role=membership.role,
        actor=Actor(user=user, ip=client_ip(request)),
        user_id=user.id,
    )
    # Read by tenants.context_processors.console to draw the navigation for this tenant.
    request.tenant_access = access  # type: ignore[attr-defined]
    access.require(perm)
    return access


def token_access(request: HttpRequest, token: ManagementToken, perm: str = VIEW) -> TenantAccess:
    access = TenantAccess(
        tenant=token.tenant,
        role=token.role,
        # The token acts for whoever minted it (keys it creates are theirs); the log names the token.
        actor=Actor(user=token.created_by, label=f"api-token:{token.name}", ip=client_ip(request)),
        user_id=token.created_by_id,
        token=token,
    )
    access.require(perm)
    return access


# --- Objects, always through the tenant ------------------------------------------------------------


def own_keys(access: TenantAccess) -> QuerySet[VirtualKey]:
    """The keys the caller's person created. None for a token that acts for nobody (minted on the CLI):
    `created_by_id=None` would match every CLI-minted key."""
    if access.user_id is None:
        return VirtualKey.objects.none()
    return VirtualKey.objects.filter(tenant=access.tenant, created_by_id=access.user_id)


def visible_keys(access: TenantAccess) -> QuerySet[VirtualKey]:
    # Members work with their own keys only; viewers read every key (never a secret) to audit usage.
    if access.role == Role.MEMBER:
        return own_keys(access)
    return VirtualKey.objects.filter(tenant=access.tenant)


def access_key(access: TenantAccess, key_id: int, *, write: bool = False) -> VirtualKey:
    key = visible_keys(access).filter(id=key_id).first()
    if key is None:
        raise Http404("No such key in this tenant.")
    if write and not access.can_edit_key(key):
        raise PermissionDenied("Your role does not allow changing this key.")
    return key


def access_membership(access: TenantAccess, membership_id: int) -> Membership:
    membership = Membership.objects.filter(tenant=access.tenant, id=membership_id).select_related("user").first()
    if membership is None:
        raise Http404("No such member in this tenant.")
    return membership


def access_invitation(access: TenantAccess, invitation_id: int) -> Invitation:
    invitation = Invitation.objects.filter(tenant=access.tenant, id=invitation_id, accepted_at=None).first()
    if invitation is None:
        raise Http404("No such invitation in this tenant.")
    return invitation


def access_token(access: TenantAccess, token_id: int) -> ManagementToken:
    token = ManagementToken.objects.filter(tenant=access.tenant, id=token_id).first()
    if token is None:
        raise Http404("No such token in this tenant.")
    return token
