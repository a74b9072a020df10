"""Writing data policies: the tenant's PII policy, prompt-cache settings and guardrails, a key's own PII
policy and guardrails, stored normalized (routing.policies.spec, routing.policies.guardrails), audited and
announced to proxies; and the preview of what a policy does to a text."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from routing.models import ModelDeployment
from routing.policies.engine import compile_policy
from routing.policies.guardrails import GuardrailSpecError, normalize_guardrails
from routing.policies.spec import cache_policy_clean, pii_policy_clean
from tenants.audit import Actor, audit
from tenants.changes import record_change
from tenants.models import Tenant, VirtualKey


@transaction.atomic
def tenant_pii_policy_set(tenant: Tenant, *, policy: dict | None, actor: Actor) -> bool:
    """Replace the tenant's PII policy (None removes it). Returns whether anything changed."""
    cleaned = pii_policy_clean(policy) if policy is not None else None
    return _tenant_policy_store(tenant, "pii_policy", cleaned, action="policy.pii", label="pii", actor=actor)


@transaction.atomic
def tenant_cache_policy_set(tenant: Tenant, *, policy: dict | None, actor: Actor) -> bool:
    """Replace the tenant's prompt-cache settings (None turns the cache off). Returns whether anything changed."""
    cleaned = cache_policy_clean(policy) if policy is not None else None
    return _tenant_policy_store(tenant, "cache_policy", cleaned, action="policy.cache", label="cache", actor=actor)


def _policy_changes(label: str, before: dict | None, after: dict | None) -> dict:
    """For the audit log: the whole policy when it appears or goes, else [old, new] per changed setting."""
    if before is None or after is None:
        return {label: [before, after]}
    return {
        k: [before.get(k), after.get(k)]
        for k in (*before, *(k for k in after if k not in before))
        if before.get(k) != after.get(k)
    }


def _tenant_policy_store(
    tenant: Tenant, field: str, value: dict | None, *, action: str, label: str, actor: Actor
) -> bool:
    # Locked, so two admins saving at once both end up in the audit log with the right "before".
    current = Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list(field, flat=True).get()
    if current == value:
        setattr(tenant, field, value)
        return False
    setattr(tenant, field, value)
    tenant.save(update_fields=[field])
    audit(tenant, actor=actor, action=action, target=tenant, changes=_policy_changes(label, current, value))
    # Proxies compile policies into their cached tenant entry: this drops it everywhere.
    record_change("tenant", tenant.id)
    return True


@transaction.atomic
def tenant_guardrails_set(tenant: Tenant, *, guardrails: list | None, actor: Actor) -> bool:
    """Replace the tenant's guardrails (None or [] removes them). Returns whether anything changed."""
    try:
        # Only None and [] mean "none": any other falsy value ({} from an API client) is refused as not a list.
        cleaned = None if guardrails is None or guardrails == [] else normalize_guardrails(guardrails)
    except GuardrailSpecError as exc:
        raise ValidationError({exc.path: exc.message}) from None
    _refuse_unknown_models(tenant, cleaned)
    current = Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("guardrails", flat=True).get()
    tenant.guardrails = cleaned
    if current == cleaned:
        return False
    tenant.save(update_fields=["guardrails"])
    audit(tenant, actor=actor, action="policy.guardrails", target=tenant, changes={"guardrails": [current, cleaned]})
    record_change("tenant", tenant.id)  # proxies compile guardrails into their cached tenant entry
    return True


@transaction.atomic
def virtual_key_pii_policy_set(tenant: Tenant, *, key: VirtualKey, policy: dict | None, actor: Actor) -> bool:
    """Give a key its own PII policy, replacing the tenant's for its calls (None: inherit the tenant's)."""
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    cleaned = pii_policy_clean(policy) if policy is not None else None
    current = VirtualKey.objects.select_for_update().filter(pk=key.pk).values_list("pii_policy", flat=True).get()
    key.pii_policy = cleaned
    if current == cleaned:
        return False
    key.save(update_fields=["pii_policy"])
    audit(tenant, actor=actor, action="key.pii", target=key, changes=_policy_changes("pii", current, cleaned))
    # Proxies compile the override into the key's cached entry (proxy.loader.load_key): this drops it.
    record_change("key", key.key_hash)
    return True


def tenant_guardrails_locked(tenant: Tenant) -> None:
    """Lock the tenant's row and read its guardrails afresh into `tenant`, inside the caller's transaction:
    an editor that changes one check of the list then writes the whole list (tenant_guardrails_set) without
    losing a change another admin saved in between."""
    tenant.guardrails = (
        Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("guardrails", flat=True).get()
    )


def _refuse_unknown_models(tenant: Tenant, checks: list[dict] | None) -> None:
    """A check that calls a model (moderation's, the injection classifier's) must name one of the tenant's
    models; the YAML applies models before guardrails, so a file may add both at once."""
    wanted = [(i, f, c[f]) for i, c in enumerate(checks or ()) for f in ("model", "embedding_model") if c.get(f)]
    if not wanted:
        return
    known = set(ModelDeployment.objects.filter(tenant=tenant).values_list("model_name", flat=True))
    for i, field, name in wanted:
        if name not in known:
            raise ValidationError({f"guardrails[{i}].{field}": f"{name!r} is not one of this tenant's models"})


def key_guardrails_clean(guardrails: object) -> list[dict]:
    """A key's own checks, normalized; [] stays [] (the key runs none). ValidationError names the field."""
    try:
        return normalize_guardrails(guardrails)
    except GuardrailSpecError as exc:
        raise ValidationError({exc.path: exc.message}) from None


@transaction.atomic
def virtual_key_guardrails_set(tenant: Tenant, *, key: VirtualKey, guardrails: list | None, actor: Actor) -> bool:
    """Give a key its own checks, replacing the tenant's for its calls ([]: none; None: inherit the tenant's)."""
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    cleaned = key_guardrails_clean(guardrails) if guardrails is not None else None
    _refuse_unknown_models(tenant, cleaned)
    current = VirtualKey.objects.select_for_update().filter(pk=key.pk).values_list("guardrails", flat=True).get()
    key.guardrails = cleaned
    if current == cleaned:
        return False
    key.save(update_fields=["guardrails"])
    audit(tenant, actor=actor, action="key.guardrails", target=key, changes={"guardrails": [current, cleaned]})
    # Proxies compile the key's checks into its cached entry (proxy.loader.load_key): this drops it.
    record_change("key", key.key_hash)
    return True


def preview(policy: dict, text: str, answer: str | None = None) -> dict:
    """What the proxy would send upstream for `text` under `policy` (normalized: pii_policy_clean), and
    what the client would see of `answer` (the sent text when None) after restore."""
    try:
        return compile_policy(policy).preview(text, answer)
    except ValueError as exc:
        # A custom pattern ran out of its time budget: the proxy would refuse such a request too.
        raise ValidationError(f"The scan failed, so the proxy would refuse this request: {exc}") from None
