"""Writes for tenants, members and virtual keys. Tenant first, actor as a keyword, one transaction."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from tenants.audit import Actor, audit
from tenants.changes import record_change
from tenants.models import KEY_PREFIX, Tenant, VirtualKey, hash_secret


def generate_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def tenant_upsert(*, slug: str, name: str, actor: Actor) -> tuple[Tenant, bool]:
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


def _clean_models(models: list[str] | None) -> list[str]:
    out: list[str] = []
    for m in models or []:
        m = m.strip()
        if m and m not in out:
            out.append(m)
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
) -> tuple[VirtualKey, str]:
    """Mint a key. Returns the row and the secret, which is never stored nor shown again."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A key needs a name."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationError({"metadata": "Metadata must be an object."})
    secret = generate_key_secret()
    key = VirtualKey(
        tenant=tenant,
        name=name[:200],
        key_hash=hash_secret(secret),
        prefix=secret[: len(KEY_PREFIX) + 4],
        allowed_models=_clean_models(models),
        expires_at=expires_at,
        metadata=metadata or {},
        created_by=actor.user,
    )
    key.full_clean()
    key.save()
    audit(
        tenant,
        actor=actor,
        action="key.create",
        target=key,
        changes={"name": key.name, "models": key.allowed_models, "expires_at": str(expires_at or "")},
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
) -> VirtualKey:
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    changes: dict = {}
    fields: list[str] = []
    if name is not None and name.strip() and name.strip() != key.name:
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
        if not isinstance(metadata, dict):
            raise ValidationError({"metadata": "Metadata must be an object."})
        changes["metadata"] = "changed"
        key.metadata = metadata
        fields.append("metadata")
    if fields:
        key.full_clean()
        key.save(update_fields=fields)
        audit(tenant, actor=actor, action="key.update", target=key, changes=changes)
        record_change("key", key.key_hash)
    return key
