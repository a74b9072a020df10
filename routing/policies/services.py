"""Writing data policies: the tenant's PII policy, prompt-cache settings and guardrails, a key's own PII
policy and guardrails, stored normalized (routing.policies.spec, routing.policies.guardrails), audited and
announced to proxies; and the preview of what a policy does to a text."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from routing.policies.engine import compile_policy
from routing.policies.guardrails import GuardrailSpecError, normalize_guardrails
from routing.policies.spec import cache_policy_clean, pii_policy_clean
from routing.selectors import model_names_for
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


def _policy_changes(label: str, before: Any, after: Any) -> dict:
    """For the audit log: the whole policy when it appears or goes (or is a list, as guardrails are), else
    [old, new] per changed setting."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return {label: [before, after]}
    return {
        k: [before.get(k), after.get(k)]
        for k in (*before, *(k for k in after if k not in before))
        if before.get(k) != after.get(k)
    }


def _locked(row: Tenant | VirtualKey, field: str) -> Any:
    """The row's `field` as stored, the row locked until the caller's transaction ends."""
    return type(row).objects.select_for_update().filter(pk=row.pk).values_list(field, flat=True).get()


def _policy_store(
    tenant: Tenant, row: Tenant | VirtualKey, field: str, value: Any, *, action: str, label: str, actor: Actor
) -> bool:
    """Store a policy on the tenant or on one of its keys; whether it changed. Locked, so two admins saving
    at once both end up in the audit log with the right "before"."""
    current = _locked(row, field)
    setattr(row, field, value)
    if current == value:
        return False
    row.save(update_fields=[field])
    audit(tenant, actor=actor, action=action, target=row, changes=_policy_changes(label, current, value))
    # Proxies compile policies into their cached tenant or key entry (proxy.loader): this drops it everywhere.
    if isinstance(row, VirtualKey):
        record_change("key", row.key_hash)
    else:
        record_change("tenant", tenant.id)
    return True


def _tenant_policy_store(tenant: Tenant, field: str, value: Any, *, action: str, label: str, actor: Actor) -> bool:
    return _policy_store(tenant, tenant, field, value, action=action, label=label, actor=actor)


@transaction.atomic
def tenant_guardrails_set(tenant: Tenant, *, guardrails: list | None, actor: Actor) -> bool:
    """Replace the tenant's guardrails (None or [] removes them). Returns whether anything changed."""
    # Only None and [] mean "none": any other falsy value ({} from an API client) is refused as not a list.
    cleaned = None if guardrails is None or guardrails == [] else guardrails_clean(guardrails)
    _refuse_unknown_models(tenant, cleaned)
    return _tenant_policy_store(
        tenant, "guardrails", cleaned, action="policy.guardrails", label="guardrails", actor=actor
    )


@transaction.atomic
def virtual_key_pii_policy_set(tenant: Tenant, *, key: VirtualKey, policy: dict | None, actor: Actor) -> bool:
    """Give a key its own PII policy, replacing the tenant's for its calls (None: inherit the tenant's)."""
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    cleaned = pii_policy_clean(policy) if policy is not None else None
    return _policy_store(tenant, key, "pii_policy", cleaned, action="key.pii", label="pii", actor=actor)


def tenant_guardrails_locked(tenant: Tenant) -> None:
    """Lock the tenant's row and read its guardrails afresh into `tenant`, inside the caller's transaction:
    an editor that changes one check of the list then writes the whole list (tenant_guardrails_set) without
    losing a change another admin saved in between."""
    tenant.guardrails = _locked(tenant, "guardrails")


def _refuse_unknown_models(tenant: Tenant, checks: list[dict] | None) -> None:
    """A check that calls a model (moderation's, the injection classifier's) must name one of the tenant's
    models; the YAML applies models before guardrails, so a file may add both at once."""
    wanted = [(i, f, c[f]) for i, c in enumerate(checks or ()) for f in ("model", "embedding_model") if c.get(f)]
    if not wanted:
        return
    known = set(model_names_for(tenant))
    for i, field, name in wanted:
        if name not in known:
            raise ValidationError({f"guardrails[{i}].{field}": f"{name!r} is not one of this tenant's models"})


def guardrails_clean(guardrails: object) -> list[dict]:
    """Checks, normalized ([] stays []: a key's own that runs none). ValidationError names the field."""
    try:
        return normalize_guardrails(guardrails)
    except GuardrailSpecError as exc:
        raise ValidationError({exc.path: exc.message}) from None


@transaction.atomic
def virtual_key_guardrails_set(tenant: Tenant, *, key: VirtualKey, guardrails: list | None, actor: Actor) -> bool:
    """Give a key its own checks, replacing the tenant's for its calls ([]: none; None: inherit the tenant's)."""
    if key.tenant_id != tenant.id:
        raise VirtualKey.DoesNotExist
    cleaned = guardrails_clean(guardrails) if guardrails is not None else None
    _refuse_unknown_models(tenant, cleaned)
    return _policy_store(tenant, key, "guardrails", cleaned, action="key.guardrails", label="guardrails", actor=actor)


def preview(policy: dict, text: str, answer: str | None = None) -> dict:
    """What the proxy would send upstream for `text` under `policy` (normalized: pii_policy_clean), and
    what the client would see of `answer` (the sent text when None) after restore."""
    try:
        return compile_policy(policy).preview(text, answer)
    except ValueError as exc:
        # A custom pattern ran out of its time budget: the proxy would refuse such a request too.
        raise ValidationError(f"The scan failed, so the proxy would refuse this request: {exc}") from None
