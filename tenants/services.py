"""Writes for tenants, members and virtual keys. Tenant first, actor as a keyword, one transaction."""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import slugify

from tenants.audit import Actor, audit
from tenants.bounds import MAX_EMAIL_CHARS, check_text
from tenants.changes import record_change
from tenants.models import (
    KEY_PREFIX,
    TOKEN_PREFIX,
    Invitation,
    ManagementToken,
    Membership,
    Role,
    Tenant,
    VirtualKey,
    hash_secret,
    role_at_least,
)

INVITATION_TTL = timedelta(days=7)


def generate_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def tenant_upsert(*, slug: str, name: str, actor: Actor) -> tuple[Tenant, bool]:
    check_text(name, "name", what="tenant name")
    tenant, created = Tenant.objects.get_or_create(slug=slug, defaults={"name": name})
    if created:
        tenant.full_clean()
        audit(tenant, actor=actor, action="tenant.create", target=tenant, changes={"name": name})
    elif tenant.name != name:
        old = tenant.name
        tenant.name = name
        tenant.full_clean()
        tenant.save(update_fields=["name"])
        audit(tenant, actor=actor, action="tenant.update", target=tenant, changes={"name": [old, name]})
    return tenant, created


# A key's metadata is copied into every call-log row of the key: bounded, so that one key cannot grow
# the log by megabytes a call.
MAX_METADATA_BYTES = 4096


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise ValidationError({"metadata": "Metadata must be an object."})
    try:
        # JSON has no NaN or Infinity (1e400 parses as infinity); the database would refuse them.
        encoded = json.dumps(metadata, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ValidationError({"metadata": "Metadata numbers must be finite (no NaN, Infinity or 1e400)."}) from None
    except RecursionError:
        raise ValidationError({"metadata": "Metadata is nested too deeply."}) from None
    size = len(encoded.encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            {"metadata": f"Metadata may hold at most {MAX_METADATA_BYTES:,} bytes of JSON (this has {size:,})."}
        )


# A key's model list is read on every call and shown in every key listing.
MAX_KEY_MODELS = 200


def _clean_models(models: list[str] | None) -> list[str]:
    out: list[str] = []
    for i, m in enumerate(models or []):
        m = check_text(m, f"models[{i}]", what="model name").strip()
        if m and m not in out:
            out.append(m)
    if len(out) > MAX_KEY_MODELS:
        raise ValidationError({"models": f"A key may name at most {MAX_KEY_MODELS} models (this names {len(out)})."})
    return out


# A key's MCP access is read on every tool call: a bounded number of servers and tools.
MAX_KEY_MCP_SERVERS = 100
MAX_KEY_MCP_TOOLS = 500
_MCP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


def _mcp_entries(entries: list) -> dict[str, Any]:
    """["github/search_issues", "docs/*"] as {"github": ["search_issues"], "docs": "*"}."""
    merged: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or "/" not in entry:
            raise ValidationError({"mcp": f"mcp[{i}] is written server/tool or server/*."})
        server, _, tool = entry.partition("/")
        if tool == "*":
            merged[server] = "*"
        elif merged.get(server) != "*":
            merged.setdefault(server, []).append(tool)
    return merged


def mcp_access_clean(value: object) -> dict[str, str | list[str]] | None:
    """A key's `mcp` field, normalized: {server: "*" | [tool names]}; None (no MCP access) stays None.

    Written as {"github": ["search_issues"], "docs": "*"}, or as a list of "server/tool" and
    "server/*" entries. An empty list of tools gives the server with nothing callable (its resources
    and prompts only)."""
    if value is None:
        return None
    if isinstance(value, list):
        value = _mcp_entries(value)
    if not isinstance(value, dict):
        raise ValidationError({"mcp": 'mcp is an object of servers, e.g. {"github": ["search_issues"], "docs": "*"}.'})
    if len(value) > MAX_KEY_MCP_SERVERS:
        raise ValidationError({"mcp": f"A key may name at most {MAX_KEY_MCP_SERVERS} MCP servers."})
    out: dict[str, str | list[str]] = {}
    count = 0
    for server, tools in value.items():
        if not isinstance(server, str) or not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", server):
            raise ValidationError({"mcp": f"{server!r} is not an MCP server name."})
        if tools == "*" or tools == f"{server}/*":
            out[server] = "*"
            continue
        if not isinstance(tools, list):
            raise ValidationError({"mcp": f'mcp.{server} is "*" or a list of tool names.'})
        names: list[str] = []
        for tool in tools:
            if isinstance(tool, str) and tool.startswith(f"{server}/"):
                tool = tool[len(server) + 1 :]
            if tool == "*":
                names = ["*"]
                break
            if not isinstance(tool, str) or not _MCP_NAME.match(tool):
                raise ValidationError({"mcp": f"mcp.{server}: {tool!r} is not a tool name."})
            if tool not in names:
                names.append(tool)
        count += len(names)
        out[server] = "*" if names == ["*"] else sorted(names)
    if count > MAX_KEY_MCP_TOOLS:
        raise ValidationError({"mcp": f"A key may name at most {MAX_KEY_MCP_TOOLS} MCP tools."})
    return out


@transaction.atomic
def virtual_key_create(
    tenant: Tenant,
    *,
    name: str,
    actor: Actor,
    models: list[str] | None = None,
    expires_at: datetime | None = None,
    metadata: dict | None = None,
    mcp: object = None,
    admin: bool = False,
) -> tuple[VirtualKey, str]:
    """Mint a key. Returns the row and the secret, which is never stored nor shown again."""
    name = check_text((name or "").strip(), "name", what="key name")
    if not name:
        raise ValidationError({"name": "A key needs a name."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    if metadata is not None:
        _check_metadata(metadata)
    secret = generate_key_secret()
    key = VirtualKey(
        tenant=tenant,
        name=name,
        key_hash=hash_secret(secret),
        prefix=secret[: len(KEY_PREFIX) + 4],
        allowed_models=_clean_models(models),
        expires_at=expires_at,
        metadata=metadata or {},
        mcp=mcp_access_clean(mcp),
        admin=bool(admin),
        created_by=actor.user,
    )
    key.full_clean()
    key.save()
    audit(
        tenant,
        actor=actor,
        action="key.create",
        target=key,
        changes={
            "name": key.name,
            "models": key.allowed_models,
            "expires_at": str(expires_at or ""),
            **({"mcp": key.mcp} if key.mcp is not None else {}),
            **({"admin": True} if key.admin else {}),
        },
    )
    # A process may have cached "unknown key" for this hash; tell them all.
    record_change("key", key.key_hash)
    return key, secret


@transaction.atomic
def virtual_key_revoke(tenant: Tenant, *, key: VirtualKey, actor: Actor) -> VirtualKey:
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    if not key.revoked:
        key.revoked = True
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked", "revoked_at"])
        audit(tenant, actor=actor, action="key.revoke", target=key)
        record_change("key", key.key_hash)
    return key


@transaction.atomic
def virtual_key_update(
    tenant: Tenant,
    *,
    key: VirtualKey,
    actor: Actor,
    name: str | None = None,
    models: list[str] | None = None,
    expires_at: datetime | str | None = "unchanged",
    metadata: dict | None = None,
    mcp: object = "unchanged",
    admin: bool | None = None,
) -> VirtualKey:
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    changes: dict = {}
    fields: list[str] = []
    if name is not None and name.strip() and name.strip() != key.name:
        check_text(name.strip(), "name", what="key name")
        changes["name"] = [key.name, name.strip()]
        key.name = name.strip()
        fields.append("name")
    if models is not None:
        cleaned = _clean_models(models)
        if cleaned != key.allowed_models:
            changes["models"] = [key.allowed_models, cleaned]
            key.allowed_models = cleaned
            fields.append("allowed_models")
    if expires_at != "unchanged":
        changes["expires_at"] = [str(key.expires_at or ""), str(expires_at or "")]
        key.expires_at = expires_at  # type: ignore[assignment]
        fields.append("expires_at")
    if metadata is not None and metadata != key.metadata:
        _check_metadata(metadata)
        changes["metadata"] = "changed"
        key.metadata = metadata
        fields.append("metadata")
    if mcp != "unchanged":
        cleaned_mcp = mcp_access_clean(mcp)
        if cleaned_mcp != key.mcp:
            changes["mcp"] = [key.mcp, cleaned_mcp]
            key.mcp = cleaned_mcp
            fields.append("mcp")
    if admin is not None and bool(admin) != key.admin:
        changes["admin"] = [key.admin, bool(admin)]
        key.admin = bool(admin)
        fields.append("admin")
    if fields:
        key.full_clean()
        key.save(update_fields=fields)
        audit(tenant, actor=actor, action="key.update", target=key, changes=changes)
        record_change("key", key.key_hash)
    return key


@transaction.atomic
def virtual_key_rotate(tenant: Tenant, *, key: VirtualKey, actor: Actor) -> tuple[VirtualKey, str]:
    """Give the key a new secret; the old one stops working at once. Returns the row and the new secret."""
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    if key.revoked:
        raise ValidationError("A revoked key cannot be rotated; create a new key instead.")
    old_hash = key.key_hash
    secret = generate_key_secret()
    key.key_hash = hash_secret(secret)
    key.prefix = secret[: len(KEY_PREFIX) + 4]
    key.save(update_fields=["key_hash", "prefix"])
    audit(tenant, actor=actor, action="key.rotate", target=key)
    # Processes cache keys by hash: drop the old secret's entry, and any cached miss for the new one.
    record_change("key", old_hash)
    record_change("key", key.key_hash)
    return key, secret


# --- Tenants ---------------------------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name).replace("_", "-")[:50].strip("-") or "tenant"
    slug = base
    while Tenant.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(2)}"
    return slug


@transaction.atomic
def tenant_create(*, name: str, owner: AbstractBaseUser, actor: Actor, slug: str = "") -> Tenant:
    """A new tenant with `owner` as its first owner. Without a slug, one is derived from the name."""
    name = check_text((name or "").strip(), "name", what="tenant name")
    if not name:
        raise ValidationError({"name": "A tenant needs a name."})
    slug = slug.strip().lower() or _unique_slug(name)
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"The slug {slug!r} is taken."})
    tenant = Tenant(slug=slug, name=name)
    tenant.full_clean()
    tenant.save()
    Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    audit(tenant, actor=actor, action="tenant.create", target=tenant, changes={"name": tenant.name})
    return tenant


@transaction.atomic
def tenant_create_for_new_user(*, user: AbstractBaseUser, actor: Actor) -> Tenant:
    """Every new account starts with a tenant of its own, so the console is usable right away."""
    local = (getattr(user, "email", "") or "my").split("@")[0]
    return tenant_create(name=f"{local}'s workspace", owner=user, actor=actor, slug=_unique_slug(local))


@transaction.atomic
def tenant_rename(tenant: Tenant, *, name: str, actor: Actor) -> Tenant:
    name = check_text((name or "").strip(), "name", what="tenant name")
    if not name:
        raise ValidationError({"name": "A tenant needs a name."})
    if name != tenant.name:
        old = tenant.name
        tenant.name = name
        tenant.full_clean()
        tenant.save(update_fields=["name"])
        audit(tenant, actor=actor, action="tenant.update", target=tenant, changes={"name": [old, tenant.name]})
    return tenant


@transaction.atomic
def tenant_log_settings_set(tenant: Tenant, *, log_bodies: bool, log_retention_days: int, actor: Actor) -> Tenant:
    """Body logging and log retention. The proxy reloads the tenant (it decides whether bodies are kept)."""
    if not 1 <= log_retention_days <= 3650:
        raise ValidationError({"log_retention_days": "Keep call logs between 1 and 3650 days."})
    changes = {}
    if tenant.log_bodies != log_bodies:
        changes["log_bodies"] = [tenant.log_bodies, log_bodies]
    if tenant.log_retention_days != log_retention_days:
        changes["log_retention_days"] = [tenant.log_retention_days, log_retention_days]
    if changes:
        tenant.log_bodies, tenant.log_retention_days = log_bodies, log_retention_days
        tenant.save(update_fields=["log_bodies", "log_retention_days"])
        audit(tenant, actor=actor, action="tenant.update", target=tenant, changes=changes)
        record_change("tenant", tenant.id)
    return tenant


@transaction.atomic
def tenant_delete(tenant: Tenant, *, actor: Actor) -> None:
    """Delete the tenant and everything in it. Its keys stop working at once."""
    key_hashes = list(tenant.virtual_keys.values_list("key_hash", flat=True))
    # Recorded without a tenant so the row outlives the cascade that deletes the tenant's own log.
    audit(None, actor=actor, action="tenant.delete", target_type="Tenant", target_label=tenant.slug)
    tenant_id = tenant.id
    tenant.delete()
    for key_hash in key_hashes:
        record_change("key", key_hash)
    record_change("tenant", tenant_id)


# --- Members and invitations -----------------------------------------------------------------------


def _check_role(role: str) -> str:
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; use one of {', '.join(Role.values)}."})
    return role


def _normalize_email(email: str) -> str:
    email = (email or "").strip()
    if len(email) > MAX_EMAIL_CHARS:
        raise ValidationError({"email": f"An email address has at most {MAX_EMAIL_CHARS} characters."})
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": f"{email!r} is not a valid email address."}) from None
    # allauth stores and looks up addresses in lower case; do the same so the person can log in.
    return email.lower()


def _user_by_email(email: str) -> AbstractBaseUser | None:
    from allauth.account.models import EmailAddress

    address = EmailAddress.objects.filter(email__iexact=email).select_related("user").first()
    if address is not None:
        return address.user
    return get_user_model().objects.filter(email__iexact=email).first()


def _owner_count(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.OWNER).count()


@transaction.atomic
def member_add(
    tenant: Tenant, *, email: str, role: str, actor: Actor, password: str | None = None
) -> tuple[Membership, list[str]]:
    """Make the person with this email a member with this role, creating their account if needed.

    Used by `gateway add-member`: the operator vouches for the address, so it is marked verified.
    Returns the membership and one line per change.
    """
    from allauth.account.models import EmailAddress
    from allauth.utils import generate_unique_username

    email = _normalize_email(email)
    _check_role(role)
    changes: list[str] = []
    user = _user_by_email(email)
    if user is None:
        username = generate_unique_username([email.split("@")[0], "user"])
        user = get_user_model().objects.create_user(username=username, email=email, password=password or None)
        changes.append(f"+ user {email}")
        audit(tenant, actor=actor, action="user.create", target_type="User", target_label=email)
    elif password:
        user.set_password(password)
        user.save(update_fields=["password"])
        changes.append(f"~ user {email} password")
        audit(tenant, actor=actor, action="user.password", target_type="User", target_label=email)
    address, _ = EmailAddress.objects.get_or_create(
        user=user, email__iexact=email, defaults={"email": email, "verified": True, "primary": True}
    )
    if not address.verified:
        address.verified = True
        address.save(update_fields=["verified"])
    membership = Membership.objects.filter(tenant=tenant, user=user).first()
    if membership is None:
        membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        changes.append(f"+ member {email} in {tenant.slug} as {role}")
        audit(tenant, actor=actor, action="member.add", target=membership, changes={"email": email, "role": role})
    elif membership.role != role:
        membership_set_role(tenant, membership=membership, role=role, actor=actor)
        changes.append(f"~ member {email} in {tenant.slug} as {role}")
    return membership, changes


@transaction.atomic
def membership_set_role(tenant: Tenant, *, membership: Membership, role: str, actor: Actor) -> Membership:
    if membership.tenant_id != tenant.id:
        raise Membership.DoesNotExist
    _check_role(role)
    if membership.role == role:
        return membership
    if membership.role == Role.OWNER and _owner_count(tenant) == 1:
        raise ValidationError({"role": "A tenant needs at least one owner; make someone else owner first."})
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(tenant, actor=actor, action="member.role", target=membership, changes={"role": [old, role]})
    return membership


@transaction.atomic
def membership_remove(tenant: Tenant, *, membership: Membership, actor: Actor) -> None:
    if membership.tenant_id != tenant.id:
        raise Membership.DoesNotExist
    if membership.role == Role.OWNER and _owner_count(tenant) == 1:
        raise ValidationError("A tenant needs at least one owner; make someone else owner first.")
    audit(tenant, actor=actor, action="member.remove", target=membership, changes={"role": membership.role})
    membership.delete()


def _send_invitation(invitation_id: int, token: str) -> None:
    invitation = Invitation.objects.select_related("tenant").get(id=invitation_id)
    context = {
        "invitation": invitation,
        "url": f"{settings.PUBLIC_URL}/invitations/{token}/",
        "inviter": invitation.invited_by.email if invitation.invited_by else "",
    }
    send_mail(
        subject=f"You are invited to {invitation.tenant.name} on the LLM gateway",
        message=render_to_string("tenants/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )


@transaction.atomic
def invitation_create(tenant: Tenant, *, email: str, role: str, actor: Actor) -> tuple[Invitation, str]:
    """Invite someone by email. Returns the invitation and the secret token in the emailed link."""
    email = _normalize_email(email)
    _check_role(role)
    if Membership.objects.filter(tenant=tenant, user__emailaddress__email__iexact=email).exists() or (
        Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists()
    ):
        raise ValidationError({"email": f"{email} is already a member of {tenant.name}."})
    # A new invitation replaces a pending or expired one, so "resend" is just inviting again.
    Invitation.objects.filter(tenant=tenant, email__iexact=email, accepted_at=None).delete()
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant,
        email=email,
        role=role,
        token_hash=hash_secret(token),
        invited_by=actor.user,
        expires_at=timezone.now() + INVITATION_TTL,
    )
    audit(tenant, actor=actor, action="invitation.create", target=invitation, changes={"email": email, "role": role})
    transaction.on_commit(lambda: _send_invitation(invitation.id, token))
    return invitation, token


@transaction.atomic
def invitation_revoke(tenant: Tenant, *, invitation: Invitation, actor: Actor) -> None:
    if invitation.tenant_id != tenant.id:
        raise Invitation.DoesNotExist
    audit(tenant, actor=actor, action="invitation.revoke", target=invitation, changes={"email": invitation.email})
    invitation.delete()


def _verified_emails(user: AbstractBaseUser) -> set[str]:
    from allauth.account.models import EmailAddress

    return {e.lower() for e in EmailAddress.objects.filter(user=user, verified=True).values_list("email", flat=True)}


@transaction.atomic
def invitation_accept(invitation: Invitation, *, user: AbstractBaseUser, actor: Actor) -> Membership:
    """Join the tenant. The link alone is not enough: the user must own the invited address."""
    invitation = Invitation.objects.select_for_update().get(id=invitation.id)
    if not invitation.is_pending:
        raise ValidationError("This invitation has expired or was already used; ask for a new one.")
    if invitation.email.lower() not in _verified_emails(user):
        raise ValidationError(
            f"This invitation is for {invitation.email}. Sign in with that address (or add and verify it "
            "under your account's email settings) to accept it."
        )
    tenant = invitation.tenant
    membership, created = Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": invitation.role})
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    if created:
        audit(
            tenant,
            actor=actor,
            action="member.add",
            target=membership,
            changes={"email": invitation.email, "role": invitation.role, "via": "invitation"},
        )
    return membership


# --- Management tokens -----------------------------------------------------------------------------


@transaction.atomic
def management_token_create(
    tenant: Tenant, *, name: str, role: str, actor: Actor, grantor_role: str = Role.OWNER
) -> tuple[ManagementToken, str]:
    """Mint an API token. Nobody can mint a token stronger than their own role (`grantor_role`)."""
    name = check_text((name or "").strip(), "name", what="token name")
    if not name:
        raise ValidationError({"name": "A token needs a name."})
    _check_role(role)
    if not role_at_least(grantor_role, role):
        raise ValidationError({"role": f"You cannot mint a token with a role above your own ({grantor_role})."})
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ManagementToken.objects.create(
        tenant=tenant,
        name=name,
        token_hash=hash_secret(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 4],
        role=role,
        created_by=actor.user,
    )
    audit(tenant, actor=actor, action="token.create", target=token, changes={"name": token.name, "role": role})
    return token, secret


@transaction.atomic
def management_token_revoke(tenant: Tenant, *, token: ManagementToken, actor: Actor) -> ManagementToken:
    if token.tenant_id != tenant.id:
        raise ManagementToken.DoesNotExist
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(tenant, actor=actor, action="token.revoke", target=token)
    return token
