"""The `pii:`, `cache:` and `guardrails:` sections of the tenant YAML, registered with the YAML engine
(tenants.config.EXTENSIONS) from RoutingConfig.ready(), after routing's providers, models and rules.

An absent section leaves the stored policy as it is and an empty one removes it (like the money
sections). The grammar is routing.policies.spec's; the YAML checker adds the line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from routing.policies.guardrails import GuardrailSpecError, export_guardrails, normalize_guardrails
from routing.policies.services import tenant_cache_policy_set, tenant_guardrails_set, tenant_pii_policy_set
from routing.policies.spec import export_cache, export_pii, parse_cache, parse_pii
from tenants.config import EXTENSIONS


@dataclass(frozen=True)
class PolicySection:
    """A section that is present in the file; `policy` None when it is written empty (`pii:`), which
    removes the tenant's policy. An absent section leaves the stored policy as it is."""

    policy: dict | None


def parse_pii_section(value: Any, path: str, c: Any) -> PolicySection:
    return PolicySection(None if value is None or value == {} else parse_pii(value, path, c))


def parse_cache_section(value: Any, path: str, c: Any) -> PolicySection:
    return PolicySection(None if value is None or value == {} else parse_cache(value, path, c))


def apply_pii_section(tenant: Any, section: PolicySection | None, *, actor: Any) -> list[str]:
    if section is None:
        return []
    return ["~ pii"] if tenant_pii_policy_set(tenant, policy=section.policy, actor=actor) else []


def apply_cache_section(tenant: Any, section: PolicySection | None, *, actor: Any) -> list[str]:
    if section is None:
        return []
    return ["~ cache"] if tenant_cache_policy_set(tenant, policy=section.policy, actor=actor) else []


def _stored(tenant: Any, field: str) -> dict | None:
    # Read afresh: the instance handed to export may predate the apply that changed it.
    return type(tenant).objects.filter(pk=tenant.pk).values_list(field, flat=True).first()


apply_pii_section.export = lambda tenant: export_pii(_stored(tenant, "pii_policy"))  # type: ignore[attr-defined]
apply_cache_section.export = lambda tenant: export_cache(_stored(tenant, "cache_policy"))  # type: ignore[attr-defined]


def parse_guardrails_section(value: Any, path: str, c: Any) -> PolicySection:
    if value is None or value == []:
        return PolicySection(None)
    try:
        normalize_guardrails(value, path)  # checked here for the line numbers; the service stores it
    except GuardrailSpecError as exc:
        raise c.fail(exc.message, exc.path) from None
    return PolicySection({"checks": value})


def apply_guardrails_section(tenant: Any, section: PolicySection | None, *, actor: Any) -> list[str]:
    if section is None:
        return []
    checks = section.policy["checks"] if section.policy else None
    return ["~ guardrails"] if tenant_guardrails_set(tenant, guardrails=checks, actor=actor) else []


apply_guardrails_section.export = lambda tenant: export_guardrails(_stored(tenant, "guardrails"))  # type: ignore[attr-defined, arg-type]


def register() -> None:
    EXTENSIONS["pii"] = (parse_pii_section, apply_pii_section)
    EXTENSIONS["cache"] = (parse_cache_section, apply_cache_section)
    EXTENSIONS["guardrails"] = (parse_guardrails_section, apply_guardrails_section)
