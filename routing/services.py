"""Writes for provider credentials and model deployments."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from routing import crypto
from routing.models import DEFAULT_BASE_URLS, ModelDeployment, ProviderCredential, ProviderKind
from routing.netguard import UnsafeUpstreamError, validate_base_url
from tenants.audit import Actor, audit
from tenants.changes import record_change
from tenants.models import Tenant

KEEP = object()  # "leave the stored API key as it is"


def _check_base_url(kind: str, base_url: str) -> str:
    if kind == ProviderKind.MOCK:
        return ""
    base_url = (base_url or DEFAULT_BASE_URLS.get(kind, "")).strip().rstrip("/")
    if not base_url:
        raise ValidationError({"base_url": f"A {kind} provider needs a base_url."})
    try:
        validate_base_url(base_url)
    except UnsafeUpstreamError as exc:
        raise ValidationError({"base_url": str(exc)}) from None
    return base_url


@transaction.atomic
def provider_upsert(
    tenant: Tenant,
    *,
    name: str,
    kind: str,
    actor: Actor,
    base_url: str = "",
    api_key: str | object = KEEP,
    api_key_source: str = "",
) -> tuple[ProviderCredential, bool]:
    """Create or update a provider. Returns (provider, changed)."""
    if kind not in ProviderKind.values:
        raise ValidationError({"kind": f"Unknown provider kind {kind!r}; use one of {', '.join(ProviderKind.values)}."})
    base_url = _check_base_url(kind, base_url)
    provider = ProviderCredential.objects.filter(tenant=tenant, name=name).first()
    created = provider is None
    if provider is None:
        provider = ProviderCredential(tenant=tenant, name=name)
    changes: dict = {}
    if provider.kind != kind:
        changes["kind"] = [provider.kind, kind]
        provider.kind = kind
    if provider.base_url != base_url:
        changes["base_url"] = [provider.base_url, base_url]
        provider.base_url = base_url
    if api_key is not KEEP:
        assert isinstance(api_key, str)
        current = crypto.decrypt(provider.api_key_encrypted) if provider.api_key_encrypted else ""
        if current != api_key:
            provider.api_key_encrypted = crypto.encrypt(api_key)
            provider.api_key_last4 = api_key[-4:] if len(api_key) >= 12 else ""
            changes["api_key"] = "changed"
    if provider.api_key_source != api_key_source and api_key is not KEEP:
        changes.setdefault("api_key_source", [provider.api_key_source, api_key_source])
        provider.api_key_source = api_key_source
    if not created and not changes:
        return provider, False
    provider.full_clean()
    provider.save()
    audit(
        tenant,
        actor=actor,
        action="provider.create" if created else "provider.update",
        target=provider,
        changes=changes,
    )
    record_change("tenant", tenant.id)
    return provider, True


@transaction.atomic
def provider_delete(tenant: Tenant, *, provider: ProviderCredential, actor: Actor) -> None:
    if provider.tenant_id != tenant.id:
        raise ProviderCredential.DoesNotExist
    audit(tenant, actor=actor, action="provider.delete", target=provider)
    provider.delete()
    record_change("tenant", tenant.id)


@transaction.atomic
def model_deployments_set(
    tenant: Tenant, *, model_name: str, deployments: list[tuple[ProviderCredential, str]], actor: Actor
) -> bool:
    """Make `model_name` served by exactly these (provider, upstream model) pairs, in order."""
    model_name = model_name.strip()
    if not model_name:
        raise ValidationError({"name": "A model needs a name."})
    if not deployments:
        raise ValidationError({"deployments": f"Model {model_name!r} needs at least one deployment."})
    existing = list(ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).select_related("provider"))
    want = [(p.id, m) for p, m in deployments]
    have = [(d.provider_id, d.upstream_model) for d in existing]
    if want == have:
        return False
    by_pair = {(d.provider_id, d.upstream_model): d for d in existing}
    keep_ids = set()
    for priority, (provider, upstream) in enumerate(deployments):
        if provider.tenant_id != tenant.id:
            raise ValidationError({"provider": "Unknown provider."})
        dep = by_pair.get((provider.id, upstream))
        if dep is None:
            dep = ModelDeployment.objects.create(
                tenant=tenant,
                model_name=model_name,
                provider=provider,
                upstream_model=upstream,
                priority=priority,
            )
        elif dep.priority != priority:
            dep.priority = priority
            dep.save(update_fields=["priority"])
        keep_ids.add(dep.id)
    ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).exclude(id__in=keep_ids).delete()
    audit(
        tenant,
        actor=actor,
        action="model.update" if existing else "model.create",
        target_type="Model",
        target_label=model_name,
        changes={"before": [f"{p}/{m}" for p, m in have], "after": [f"{p.name}/{m}" for p, m in deployments]},
    )
    record_change("tenant", tenant.id)
    return True


@transaction.atomic
def model_delete(tenant: Tenant, *, model_name: str, actor: Actor) -> int:
    deleted, _ = ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).delete()
    if deleted:
        audit(tenant, actor=actor, action="model.delete", target_type="Model", target_label=model_name)
        record_change("tenant", tenant.id)
    return deleted


@transaction.atomic
def rotate_encryption() -> int:
    """Re-encrypt every provider key under the primary GATEWAY_ENCRYPTION_KEY."""
    count = 0
    for provider in ProviderCredential.objects.select_for_update().exclude(api_key_encrypted=""):
        provider.api_key_encrypted = crypto.rotate(provider.api_key_encrypted)
        provider.save(update_fields=["api_key_encrypted"])
        count += 1
    return count


STARTER_MODEL = "mock-chat"


@transaction.atomic
def starter_setup(tenant: Tenant, *, actor: Actor) -> None:
    """The built-in mock provider and one model it serves, so a new tenant can make a call in a minute."""
    existing = ProviderCredential.objects.filter(tenant=tenant, name="mock").first()
    # Never turn someone's own provider that happens to be called "mock" into the built-in one.
    name = "mock" if existing is None or existing.kind == ProviderKind.MOCK else "builtin-mock"
    provider, _ = provider_upsert(tenant, name=name, kind=ProviderKind.MOCK, actor=actor)
    if not ModelDeployment.objects.filter(tenant=tenant, model_name=STARTER_MODEL).exists():
        model_deployments_set(tenant, model_name=STARTER_MODEL, deployments=[(provider, "mock-chat")], actor=actor)
