"""Route settings and rules written through routing.services: checked, audited, and announced to proxies."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from routing.models import ModelDeployment, ModelRoute, ProviderKind, RouteRule
from routing.services import (
    model_delete,
    model_deployments_set,
    model_routes_set,
    provider_upsert,
    route_rules_set,
)
from tenants.audit import Actor
from tenants.models import AuditLog, ConfigChange, Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    """Alice's tenant with three models on the mock provider."""
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    provider, _ = provider_upsert(tenant, name="main", kind=ProviderKind.MOCK, actor=Actor(label="alice"))
    for name in ("smart", "cheap", "long"):
        model_deployments_set(tenant, model_name=name, deployments=[(provider, f"{name}-up")], actor=Actor.cli())
    return tenant


@pytest.fixture
def globex():
    """Bob's tenant, with a model of its own."""
    tenant = Tenant.objects.create(slug="globex", name="Globex")
    provider, _ = provider_upsert(tenant, name="main", kind=ProviderKind.MOCK, actor=Actor(label="bob"))
    model_deployments_set(tenant, model_name="bobs-model", deployments=[(provider, "x")], actor=Actor.cli())
    return tenant


ALICE = Actor(label="alice@acme.test")


def test_alice_sets_routing_and_it_is_audited_and_announced(acme):
    changes_before = ConfigChange.objects.count()
    changed = model_routes_set(
        acme,
        routes={
            "smart": {"strategy": "least-latency", "fallbacks": ["cheap"], "split": {"model": "long", "percent": 5}}
        },
        actor=ALICE,
    )
    assert changed == ["smart"]
    entry = AuditLog.objects.filter(tenant=acme, action="model.routing").get()
    assert entry.actor_label == "alice@acme.test"
    assert entry.target_label == "smart"
    assert entry.changes == {
        "strategy": ["priority", "least-latency"],
        "fallbacks": [[], ["cheap"]],
        "split": [None, {"model": "long", "percent": 5.0, "sticky": "user"}],
    }
    assert ConfigChange.objects.count() == changes_before + 1
    # The same settings again: no row, no audit entry, no event.
    assert (
        model_routes_set(
            acme,
            routes={
                "smart": {"strategy": "least-latency", "fallbacks": ["cheap"], "split": {"model": "long", "percent": 5}}
            },
            actor=ALICE,
        )
        == []
    )
    assert AuditLog.objects.filter(action="model.routing").count() == 1
    assert ConfigChange.objects.count() == changes_before + 1


def test_back_to_defaults_removes_the_row(acme):
    model_routes_set(acme, routes={"smart": {"retries": 3}}, actor=ALICE)
    assert ModelRoute.objects.filter(tenant=acme).count() == 1
    assert model_routes_set(acme, routes={"smart": {}}, actor=ALICE) == ["smart"]
    assert not ModelRoute.objects.filter(tenant=acme).exists()


def test_a_fallback_cycle_with_what_is_stored_is_refused(acme):
    model_routes_set(acme, routes={"smart": {"fallbacks": ["cheap"]}}, actor=ALICE)
    with pytest.raises(ValidationError) as info:
        model_routes_set(acme, routes={"cheap": {"context_window_fallbacks": ["smart"]}}, actor=ALICE)
    assert "fallbacks form a cycle" in str(info.value)
    assert not ModelRoute.objects.filter(tenant=acme, model_name="cheap").exists()
    # Both sides at once is fine: the whole graph is checked after the change.
    assert model_routes_set(acme, routes={"smart": {}, "cheap": {"fallbacks": ["smart"]}}, actor=ALICE) == [
        "cheap",
        "smart",
    ]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"strategy": "round-robin"}, "smart.strategy"),
        ({"retries": 99}, "smart.retries"),
        ({"timeout_s": -1}, "smart.timeout_s"),
        ({"split": {"model": "cheap", "percent": 100.5}}, "smart.split.percent"),
        ({"split": {"model": "smart", "percent": 10}}, "smart.split.model"),
        ({"cooldown": {"failures": 0}}, "smart.cooldown.failures"),
        ({"fallbacks": ["nowhere"]}, "smart.fallbacks[0]"),
        ({"colour": "blue"}, "smart.colour"),
    ],
)
def test_services_refuse_what_the_yaml_refuses(acme, given, field):
    with pytest.raises(ValidationError) as info:
        model_routes_set(acme, routes={"smart": given}, actor=ALICE)
    assert field in info.value.message_dict
    assert not ModelRoute.objects.exists()
    assert not AuditLog.objects.filter(action="model.routing").exists()


def test_bob_cannot_route_to_alices_models(acme, globex):
    with pytest.raises(ValidationError) as info:
        model_routes_set(globex, routes={"bobs-model": {"fallbacks": ["smart"]}}, actor=Actor(label="bob"))
    assert "unknown model 'smart'" in str(info.value)
    with pytest.raises(ValidationError):
        model_routes_set(globex, routes={"smart": {"retries": 2}}, actor=Actor(label="bob"))
    with pytest.raises(ValidationError):
        route_rules_set(globex, rules=[{"if": {"tags": ["x"]}, "route": "smart"}], actor=Actor(label="bob"))
    assert not ModelRoute.objects.exists() and not RouteRule.objects.exists()


def test_rules_are_replaced_in_order_and_audited(acme):
    rules = [
        {"if": {"tags": ["batch"]}, "route": "cheap"},
        {"if": {"key": "ci", "metadata": {"tier": 1}}, "route": "long"},
    ]
    assert route_rules_set(acme, rules=rules, actor=ALICE)
    stored = [(r.position, r.match, r.route) for r in RouteRule.objects.filter(tenant=acme)]
    assert stored == [(0, {"tags": ["batch"]}, "cheap"), (1, {"key": ["ci"], "metadata": {"tier": "1"}}, "long")]
    entry = AuditLog.objects.get(tenant=acme, action="routing.rules")
    assert entry.changes["before"] == [] and len(entry.changes["after"]) == 2
    assert not route_rules_set(acme, rules=rules, actor=ALICE)
    assert AuditLog.objects.filter(action="routing.rules").count() == 1


def test_deleting_a_model_removes_every_reference_to_it(acme):
    model_routes_set(
        acme,
        routes={"smart": {"fallbacks": ["cheap", "long"], "split": {"model": "cheap", "percent": 10}}},
        actor=ALICE,
    )
    route_rules_set(
        acme, rules=[{"if": {"tags": ["b"]}, "route": "cheap"}, {"if": {"user": "u"}, "route": "long"}], actor=ALICE
    )
    model_delete(acme, model_name="cheap", actor=ALICE)
    smart = ModelRoute.objects.get(tenant=acme, model_name="smart").settings()
    assert smart["fallbacks"] == ["long"] and smart["split"] is None
    assert [(r.position, r.route) for r in RouteRule.objects.filter(tenant=acme)] == [(0, "long")]
    entry = AuditLog.objects.get(tenant=acme, action="model.delete", target_label="cheap")
    assert entry.changes == {"references_removed_from": ["smart", "rules"]}


def test_weights_are_stored_and_kept_when_an_editor_leaves_them_out(acme):
    provider = acme.providers.get(name="main")
    assert model_deployments_set(
        acme, model_name="smart", deployments=[(provider, "smart-up", 4), (provider, "other", None)], actor=ALICE
    )
    weights = list(
        ModelDeployment.objects.filter(tenant=acme, model_name="smart").values_list("upstream_model", "weight")
    )
    assert weights == [("smart-up", 4), ("other", 1)]
    entry = AuditLog.objects.filter(tenant=acme, action="model.update", target_label="smart").latest("id")
    assert entry.changes["after"] == ["main/smart-up (weight 4)", "main/other"]
    # The console form sends (provider, model) pairs: weights it does not show must survive.
    assert not model_deployments_set(
        acme, model_name="smart", deployments=[(provider, "smart-up"), (provider, "other")], actor=ALICE
    )
    with pytest.raises(ValidationError):
        model_deployments_set(acme, model_name="smart", deployments=[(provider, "smart-up", 0)], actor=ALICE)
