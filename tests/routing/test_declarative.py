"""The routing part of the tenant YAML: strategies, weights, fallbacks, splits,
cooldowns and rules; refused with line and field path, changing nothing; export applies back unchanged."""

from __future__ import annotations

import pytest

from routing.models import ModelDeployment, ModelRoute, RouteRule
from tenants.config import ConfigError, apply_config, export_config
from tenants.models import AuditLog, Tenant
from tests.helpers.routing import ACME

pytestmark = pytest.mark.django_db


def test_alice_applies_the_documented_routing_contract():
    tenant, changes = apply_config(ACME)
    assert changes == [
        "+ tenant acme",
        "+ provider main",
        "+ provider backup",
        "+ model smart",
        "+ model smart-v2",
        "+ model cheap",
        "+ model long",
        "~ rules",
    ]
    route = ModelRoute.objects.get(tenant=tenant, model_name="smart")
    assert route.settings() == {
        "strategy": "weighted",
        "retries": 2,
        "timeout_s": 60.0,
        "fallbacks": ["cheap"],
        "context_window_fallbacks": ["long"],
        "split": {"model": "smart-v2", "percent": 10.0, "sticky": "user"},
        "cooldown": {"failures": 5, "window_s": 60.0, "cooldown_s": 12.5},
    }
    weights = list(
        ModelDeployment.objects.filter(tenant=tenant, model_name="smart").values_list("provider__name", "weight")
    )
    assert weights == [("main", 3), ("backup", 1)]
    # Models that use only defaults get no row at all.
    assert not ModelRoute.objects.filter(tenant=tenant, model_name="cheap").exists()
    assert [(r.match, r.route) for r in RouteRule.objects.filter(tenant=tenant)] == [
        ({"tags": ["batch"]}, "cheap"),
        ({"prompt_bytes_over": 200000}, "long"),
        ({"key": ["ci"], "user": ["u1", "u2"], "metadata": {"team": "ml"}}, "cheap"),
    ]


def test_applying_the_same_routing_twice_changes_nothing():
    apply_config(ACME)
    rows = AuditLog.objects.count()
    _tenant, changes = apply_config(ACME)
    assert changes == []
    assert AuditLog.objects.count() == rows


def test_export_applies_back_unchanged_and_keeps_the_contract_shape():
    tenant, _ = apply_config(ACME)
    exported = export_config(tenant)
    assert "    weight: 3\n" in exported
    assert "weight: 1" not in exported  # defaults are left out
    assert "timeout_s: 60\n" in exported
    assert "rules:\n- if:\n    tags:\n    - batch\n  route: cheap\n" in exported
    _tenant, changes = apply_config(exported)
    assert changes == []
    assert export_config(tenant) == exported


def test_a_tenant_without_routing_exports_exactly_as_before():
    plain = "tenant: acme\nproviders:\n  - name: main\n    kind: mock\nmodels:\n  - name: m\n    deployments:\n"
    plain += "      - {provider: main, model: mock-chat}\n"
    tenant, _ = apply_config(plain)
    assert export_config(tenant) == (
        "tenant: acme\nname: acme\nproviders:\n- name: main\n  kind: mock\nmodels:\n- name: m\n  deployments:\n"
        "  - provider: main\n    model: mock-chat\n"
    )


def test_settings_equal_to_the_defaults_leave_no_trace():
    text = ACME.replace("strategy: weighted", "strategy: priority").replace("retries: 2", "retries: 1")
    text = text.replace("timeout_s: 60", "timeout_s: 600").replace(", weight: 3", ", weight: 1")
    text = text.replace("    fallbacks: [cheap]\n    context_window_fallbacks: [long]\n", "")
    text = text.replace("    split: {model: smart-v2, percent: 10, sticky: user}\n", "")
    text = text.replace("{failures: 5, window_s: 60, cooldown_s: 12.5}", "{failures: 3, window_s: 60, cooldown_s: 30}")
    tenant, _ = apply_config(text)
    assert not ModelRoute.objects.filter(tenant=tenant).exists()
    assert "strategy" not in export_config(tenant)
    assert "cooldown" not in export_config(tenant)


def test_dropping_settings_from_the_file_resets_them():
    tenant, _ = apply_config(ACME)
    text = ACME.replace("    strategy: weighted\n    retries: 2\n    timeout_s: 60\n", "").split("rules:")[0]
    _tenant, changes = apply_config(text)
    assert changes == ["~ model smart", "~ rules"]
    assert ModelRoute.objects.get(tenant=tenant, model_name="smart").strategy == "priority"
    assert not RouteRule.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    retries: 2\n",
            "    retries: 2\n    retry_on: [500]\n",
            "line 12, models[0].retry_on: unknown field 'retry_on'",
        ),
        ("strategy: weighted", "strategy: fastest", "line 10, models[0].strategy: unknown strategy 'fastest'"),
        ("retries: 2", "retries: 11", "line 11, models[0].retries: must be from 0 to 10"),
        ("retries: 2", "retries: -1", "line 11, models[0].retries: must be from 0 to 10"),
        ("retries: 2", "retries: 1.5", "line 11, models[0].retries: must be a whole number"),
        ("timeout_s: 60", "timeout_s: 0", "line 12, models[0].timeout_s: must be more than 0 and at most 3600"),
        ("timeout_s: 60", "timeout_s: 1.0e+9", "line 12, models[0].timeout_s: must be more than 0"),
        ("timeout_s: 60", "timeout_s: soon", "line 12, models[0].timeout_s: must be a number"),
        ("weight: 3", "weight: 0", "line 14, models[0].deployments[0].weight: must be a whole number from 1 to 1000"),
        ("weight: 3", "weight: 5000", "line 14, models[0].deployments[0].weight"),
        ("weight: 3", "weight: '3'", "line 14, models[0].deployments[0].weight"),
        ("weight: 3}", "weight: 3, region: eu}", "line 14, models[0].deployments[0].region: unknown field"),
        ("backup, model: gpt-4o}", "main, model: gpt-4o}", "line 15, models[0].deployments[1]: main/gpt-4o is listed"),
        ("fallbacks: [cheap]", "fallbacks: [chep]", "line 16, models[0].fallbacks[0]: unknown model 'chep'"),
        ("fallbacks: [cheap]", "fallbacks: [smart]", "line 16, models[0].fallbacks[0]: 'smart' cannot fall back to"),
        ("fallbacks: [cheap]", "fallbacks: [cheap, cheap]", "line 16, models[0].fallbacks[1]: 'cheap' is listed twice"),
        ("fallbacks: [cheap]", "fallbacks: cheap", "line 16, models[0].fallbacks: expected a list"),
        ("context_window_fallbacks: [long]", "context_window_fallbacks: [longer]", "line 17, models[0].context_"),
        ("model: smart-v2, percent", "model: smart-v3, percent", "line 18, models[0].split.model: unknown model"),
        ("model: smart-v2, percent", "model: smart, percent", "line 18, models[0].split.model: 'smart' cannot split"),
        ("percent: 10,", "percent: 101,", "line 18, models[0].split.percent: must be from 0 to 100"),
        ("percent: 10,", "percent: -0.5,", "line 18, models[0].split.percent: must be from 0 to 100"),
        ("percent: 10, ", "", "line 18, models[0].split: missing required field 'percent'"),
        ("sticky: user}", "sticky: session}", "line 18, models[0].split.sticky: unknown sticky 'session'"),
        ("sticky: user}", "sticky: user, salt: x}", "line 18, models[0].split.salt: unknown field 'salt'"),
        ("failures: 5,", "failures: 0,", "line 19, models[0].cooldown.failures: must be from 1 to 1000"),
        ("failures: 5,", "failures: -3,", "line 19, models[0].cooldown.failures: must be from 1 to 1000"),
        ("window_s: 60,", "window_s: 100000,", "line 19, models[0].cooldown.window_s: must be more than 0 and at"),
        ("cooldown_s: 12.5}", "cooldown_s: -1}", "line 19, models[0].cooldown.cooldown_s: must be more than 0"),
        ("cooldown_s: 12.5}", "cooldown_s: 1, probes: 2}", "line 19, models[0].cooldown.probes: unknown field"),
        # A cycle through fallbacks: smart -> cheap -> smart.
        (
            "      - {provider: backup, model: gpt-4o-mini}\n",
            "      - {provider: backup, model: gpt-4o-mini}\n    fallbacks: [smart]\n",
            "line 16, models[0].fallbacks[0]: fallbacks form a cycle: cheap -> smart -> cheap",
        ),
        # ... and one through a context-window fallback: smart -(context)-> long -> smart.
        (
            "      - {provider: main, model: gpt-4.1-long}\n",
            "      - {provider: main, model: gpt-4.1-long}\n    fallbacks: [smart]\n",
            "line 17, models[0].context_window_fallbacks[0]: fallbacks form a cycle: long -> smart -> long",
        ),
        (
            "route: cheap\n  - if: {prompt",
            "route: cheep\n  - if: {prompt",
            "line 31, rules[0].route: unknown model 'cheep'",
        ),
        ("if: {tags: [batch]}", "if: {team: [batch]}", "line 30, rules[0].if.team: unknown field 'team'"),
        ("if: {tags: [batch]}", "if: {}", "line 30, rules[0].if: a rule needs at least one condition"),
        ("if: {tags: [batch]}", "if: {tags: batch}", "line 30, rules[0].if.tags: must be a list of tags"),
        ("if: {tags: [batch]}", "when: {tags: [batch]}", "line 30, rules[0].when: unknown field 'when'"),
        (
            "prompt_bytes_over: 200000",
            "prompt_bytes_over: -5",
            "line 32, rules[1].if.prompt_bytes_over: must be from 0",
        ),
        (
            "prompt_bytes_over: 200000",
            "prompt_bytes_over: 1000000000000",
            "line 32, rules[1].if.prompt_bytes_over: must be from 0 to 2147483647",
        ),
        ("metadata: {team: ml}", "metadata: [ml]", "line 34, rules[2].if.metadata: must be a non-empty mapping"),
        ("user: [u1, u2]", "user: []", "line 34, rules[2].if.user: must be a name or a non-empty list"),
    ],
)
def test_bad_routing_is_refused_with_line_and_path_and_changes_nothing(old, new, expected):
    assert old in ACME
    with pytest.raises(ConfigError) as info:
        apply_config(ACME.replace(old, new, 1))
    assert expected in str(info.value)
    assert not Tenant.objects.exists()


def test_a_refused_file_leaves_the_previous_routing_in_place():
    tenant, _ = apply_config(ACME)
    before = export_config(tenant)
    bad = ACME.replace("strategy: weighted", "strategy: least-busy").replace("percent: 10,", "percent: 140,")
    with pytest.raises(ConfigError, match=r"line 18, models\[0\]\.split\.percent"):
        apply_config(bad)
    assert export_config(tenant) == before


def test_a_file_may_reverse_a_fallback_in_one_apply():
    # smart -> cheap becomes cheap -> smart: checked as a whole, not model by model.
    tenant, _ = apply_config(ACME)
    text = ACME.replace("    fallbacks: [cheap]\n", "").replace(
        "      - {provider: backup, model: gpt-4o-mini}\n",
        "      - {provider: backup, model: gpt-4o-mini}\n    fallbacks: [smart]\n",
    )
    _tenant, changes = apply_config(text)
    assert changes == ["~ model smart", "~ model cheap"]
    assert ModelRoute.objects.get(tenant=tenant, model_name="cheap").fallbacks == ["smart"]
