"""The `pii:` and `cache:` sections of the tenant YAML: the documented contract applies and
exports back unchanged; mistakes are refused naming the line and the field, and change nothing."""

from __future__ import annotations

import pytest

from routing.policies.spec import DEFAULT_TTL_S, MAX_TTL_S, pii_policy_clean
from tenants.config import ConfigError, apply_config, export_config
from tenants.models import AuditLog, ConfigChange, Tenant

pytestmark = pytest.mark.django_db

HEAD = """\
tenant: acme
name: Acme Corp
providers:
  - name: main
    kind: mock
models:
  - name: gpt-4o-mini
    deployments:
      - {provider: main, model: mock-chat}
"""
# The section exactly as the README documents it. Line 10 is `pii:`.
POLICIES = r"""pii:
  mode: enforce                 # enforce | log-only
  detectors: {email: pseudonymize, phone: redact, card: block, iban: redact, us_ssn: redact, ip: mask, secret: block}
  custom:
    - {name: order_id, pattern: 'ORD-\d{6}', action: redact}
  terms: {words: [Project Falcon], action: redact}
  scan_responses: false
cache:
  enabled: true
  ttl_s: 3600
  models: [gpt-4o-mini]         # optional; default every model
"""
DOCUMENTED = HEAD + POLICIES


def test_alice_applies_the_documented_pii_and_cache_sections():
    tenant, changes = apply_config(DOCUMENTED)
    assert changes[-2:] == ["~ pii", "~ cache"]
    tenant.refresh_from_db()
    assert tenant.pii_policy == {
        "mode": "enforce",
        "detectors": {
            "email": "pseudonymize",
            "phone": "redact",
            "card": "block",
            "iban": "redact",
            "us_ssn": "redact",
            "ip": "mask",
            "secret": "block",
        },
        "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
        "terms": {"words": ["Project Falcon"], "action": "redact"},
        "scan_responses": False,
    }
    assert tenant.cache_policy == {"enabled": True, "ttl_s": 3600, "models": ["gpt-4o-mini"]}
    actions = set(AuditLog.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert {"policy.pii", "policy.cache"} <= actions


def test_the_export_applies_back_with_no_change():
    tenant, _ = apply_config(DOCUMENTED)
    exported = export_config(tenant)
    assert "pii:" in exported and "cache:" in exported
    assert r"ORD-\d{6}" in exported
    before = ConfigChange.objects.count()
    _tenant, changes = apply_config(exported)
    assert changes == []
    assert ConfigChange.objects.count() == before
    assert export_config(tenant) == exported


def test_a_file_without_the_sections_leaves_the_policies_and_an_empty_section_removes_one():
    apply_config(DOCUMENTED)
    _tenant, changes = apply_config(HEAD)
    assert changes == []
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.pii_policy is not None and tenant.cache_policy is not None
    _tenant, changes = apply_config(HEAD + "pii:\n")
    assert changes == ["~ pii"]
    tenant.refresh_from_db()
    assert tenant.pii_policy is None and tenant.cache_policy is not None
    assert "pii:" not in export_config(tenant)


def test_defaults_fill_in_what_the_file_leaves_out():
    tenant, _ = apply_config(HEAD + "pii:\n  detectors: {email: redact}\ncache:\n  enabled: true\n")
    tenant.refresh_from_db()
    assert tenant.pii_policy == {
        "mode": "enforce",
        "detectors": {"email": "redact"},
        "custom": [],
        "terms": {"words": [], "action": "redact"},
        "scan_responses": False,
    }
    assert tenant.cache_policy == {"enabled": True, "ttl_s": DEFAULT_TTL_S}


def _broken(old: str, new: str) -> str:
    assert old in POLICIES
    return HEAD + POLICIES.replace(old, new)


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [
        (_broken("mode: enforce", "mode: strict"), 11, "pii.mode", "unknown mode 'strict'"),
        (_broken("email: pseudonymize", "emial: pseudonymize"), 12, "pii.detectors.emial", "unknown detector"),
        (_broken("ip: mask", "ip: hide"), 12, "pii.detectors.ip", "unknown action 'hide'"),
        (_broken(POLICIES.splitlines()[2], "  detectors: [email, phone]"), 12, "pii.detectors", "mapping of"),
        (_broken("pattern: 'ORD-\\d{6}'", "pattern: 'ORD-(\\d{6}'"), 14, "pii.custom[0].pattern", "not a valid"),
        (_broken("pattern: 'ORD-\\d{6}'", "pattern: ''"), 14, "pii.custom[0].pattern", "non-empty"),
        (_broken("pattern: 'ORD-\\d{6}'", "pattern: 'x*'"), 14, "pii.custom[0].pattern", "empty string"),
        (
            _broken("action: redact}\n  terms", "action: redact}\n    - {name: order_id, pattern: 'x'}\n  terms"),
            15,
            "pii.custom[1].name",
            "used twice",
        ),
        (_broken("name: order_id", "name: Order-ID"), 14, "pii.custom[0].name", "not a usable name"),
        (_broken("name: order_id", "name: email"), 14, "pii.custom[0].name", "built-in detector"),
        (_broken("name: order_id, ", ""), 14, "pii.custom[0]", "missing required field 'name'"),
        (_broken("words: [Project Falcon]", "words: Project Falcon"), 15, "pii.terms.words", "expected a list"),
        (_broken("scan_responses: false", "scan_responses: sometimes"), 16, "pii.scan_responses", "true or false"),
        (_broken("scan_responses: false", "scan_response: false"), 16, "pii.scan_response", "unknown field"),
        (_broken("ttl_s: 3600", "ttl_s: 0"), 19, "cache.ttl_s", "from 1 to"),
        (_broken("ttl_s: 3600", f"ttl_s: {MAX_TTL_S + 1}"), 19, "cache.ttl_s", "30 days"),
        (_broken("ttl_s: 3600", "ttl_s: an hour"), 19, "cache.ttl_s", "whole number"),
        (_broken("models: [gpt-4o-mini]", "models: [gpt-4o-mini, 4]"), 20, "cache.models[1]", "expected a string"),
        (_broken("models: [gpt-4o-mini]", "models: []"), 20, "cache.models", "leave models out"),
        (_broken("enabled: true", "enabled: yes please"), 18, "cache.enabled", "true or false"),
    ],
)
def test_mistakes_are_refused_with_line_and_field_and_change_nothing(text, line, path, message):
    with pytest.raises(ConfigError) as info:
        apply_config(text)
    assert info.value.line == line, str(info.value)
    assert info.value.path == path, str(info.value)
    assert message in str(info.value)
    assert not Tenant.objects.filter(slug="acme").exists()


def test_unknown_cache_models_are_allowed_because_a_model_may_come_later():
    tenant, _ = apply_config(_broken("models: [gpt-4o-mini]", "models: [gpt-5-next]"))
    tenant.refresh_from_db()
    assert tenant.cache_policy["models"] == ["gpt-5-next"]


def test_the_same_checks_serve_the_api_and_console_with_field_paths():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        pii_policy_clean(
            {"detectors": {"email": "redact"}, "custom": [{"name": "x", "pattern": "(", "action": "redact"}]}
        )
    assert list(info.value.message_dict) == ["pii.custom[0].pattern"]
