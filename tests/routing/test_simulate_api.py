"""POST /api/v1/routing/simulate/: the router's decision for a request, without calling a provider.

Alice's tenant acme has models smart (two deployments, falls back to cheap, A/B split to smart-v2),
cheap and long; Bob's globex must never learn any of it.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from proxy.breakers import health
from proxy.snapshot import CooldownSpec
from routing.models import ModelDeployment, ProviderKind
from routing.services import model_deployments_set, model_routes_set, provider_upsert, route_rules_set
from tenants.audit import Actor
from tenants.models import Role
from tenants.services import virtual_key_create

pytestmark = pytest.mark.usefixtures("console_defaults")

URL = "/api/v1/routing/simulate/"


@pytest.fixture
def routed(world):
    actor = Actor(user=world.alice)
    acme = world.acme
    mock = world.objects["provider"]
    backup, _ = provider_upsert(acme, name="backup", kind=ProviderKind.MOCK, actor=actor)
    model_deployments_set(acme, model_name="smart", deployments=[(mock, "smart-a"), (backup, "smart-b")], actor=actor)
    for name in ("smart-v2", "cheap", "long"):
        model_deployments_set(acme, model_name=name, deployments=[(mock, f"{name}-up")], actor=actor)
    model_routes_set(acme, routes={"smart": {"fallbacks": ["cheap", "long"]}}, actor=actor)
    route_rules_set(
        acme,
        rules=[
            {"if": {"tags": ["batch"]}, "route": "cheap"},
            {"if": {"key": "nightly-jobs"}, "route": "long"},
            {"if": {"prompt_bytes_over": 1000}, "route": "long"},
        ],
        actor=actor,
    )
    virtual_key_create(acme, name="nightly-jobs", actor=actor)
    return world


def simulate(client, **body):
    return client.post(URL, body, content_type="application/json")


def test_the_url_is_the_documented_one():
    assert reverse("api-routing-simulate") == URL


def test_alice_sees_the_deployments_in_order_and_the_fallbacks(routed, api_as):
    response = simulate(api_as(Role.VIEWER), model="smart")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "model": "smart",
        "rule": None,
        "variant": None,
        "deployments": [
            {"provider": "mock", "model": "smart-a", "breaker": "closed"},
            {"provider": "backup", "model": "smart-b", "breaker": "closed"},
        ],
        "fallbacks": ["cheap", "long"],
    }


@pytest.mark.parametrize(
    ("body", "model", "rule"),
    [
        ({"tags": ["batch"]}, "cheap", 0),
        ({"key": "nightly-jobs"}, "long", 1),
        ({"prompt_bytes": 1001}, "long", 2),
        ({"prompt_bytes": 1000}, "smart", None),
        ({"tags": ["interactive"], "user": "u1"}, "smart", None),
    ],
)
def test_rules_are_applied_in_order(routed, api_as, body, model, rule):
    data = simulate(api_as(Role.VIEWER), model="smart", **body).json()
    assert (data["model"], data["rule"]) == (model, rule)


def test_a_split_sends_the_variant_and_says_so(routed, api_as):
    model_routes_set(
        routed.acme,
        routes={"smart": {"split": {"model": "smart-v2", "percent": 100, "sticky": "user"}}},
        actor=Actor(user=routed.alice),
    )
    data = simulate(api_as(Role.VIEWER), model="smart", user="carol").json()
    assert data["model"] == "smart-v2"
    assert data["variant"] == "smart-v2"
    assert data["deployments"] == [{"provider": "mock", "model": "smart-v2-up", "breaker": "closed"}]

    model_routes_set(
        routed.acme,
        routes={"smart": {"split": {"model": "smart-v2", "percent": 0, "sticky": "user"}}},
        actor=Actor(user=routed.alice),
    )
    data = simulate(api_as(Role.VIEWER), model="smart", user="carol").json()
    assert (data["model"], data["variant"]) == ("smart", None)


def test_an_open_breaker_shows_as_open(routed, api_as):
    dep = ModelDeployment.objects.get(tenant=routed.acme, model_name="smart", upstream_model="smart-a")
    health.failure(dep.id, CooldownSpec(failures=1, window_s=60, cooldown_s=300))
    try:
        data = simulate(api_as(Role.VIEWER), model="smart").json()
    finally:
        health._deps.pop(dep.id, None)
    assert [d["breaker"] for d in data["deployments"]] == ["open", "closed"]


def test_unknown_model_and_key_are_404_in_the_api_format(routed, api_as):
    client = api_as(Role.VIEWER)
    response = simulate(client, model="nope")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "No model named 'nope' in this tenant."}}
    response = simulate(client, model="smart", key="nobody")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_body_without_model_is_400(routed, api_as):
    response = simulate(api_as(Role.VIEWER), user="x")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"model": ["This field is required."]}


def test_bob_cannot_simulate_alices_models_or_keys(routed, api_as):
    bob = api_as(Role.OWNER, routed.globex)
    response = simulate(bob, model="smart")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "No model named 'smart' in this tenant."}}
    # Bob's own model with Alice's key name: the key does not exist for him either.
    response = simulate(bob, model="gpt-4o-mini", key="nightly-jobs")
    assert response.status_code == 404
    assert b"smart" not in response.content and b"mock" not in response.content


def test_a_member_token_cannot_simulate_with_someone_elses_key(routed, api_as):
    # The member token is minted by Alice, so Alice's keys are its own; Erin's key is not.
    response = simulate(api_as(Role.MEMBER), model="smart", key="erin-notebook")
    assert response.status_code == 404


def test_it_is_in_the_api_schema(routed, client):
    schema = client.get("/api/schema/?format=json").json()
    assert "post" in schema["paths"][URL]
    assert "get" in schema["paths"]["/api/v1/routing/ab/"]


def test_the_ab_api_compares_the_split(routed, api_as):
    from observability.models import CallLog

    model_routes_set(
        routed.acme, routes={"smart": {"split": {"model": "smart-v2", "percent": 10}}}, actor=Actor(user=routed.alice)
    )
    for variant, status in (("", 200), ("", 500), ("smart-v2", 200)):
        CallLog.objects.create(
            tenant=routed.acme,
            request_id="r",
            endpoint="chat",
            requested_model="smart",
            variant=variant,
            status_code=status,
            latency_ms=100,
            total_tokens=5,
        )
    data = api_as(Role.VIEWER).get("/api/v1/routing/ab/?model=smart&days=1").json()
    assert (data["model"], data["variant"], data["days"]) == ("smart", "smart-v2", 1)
    assert [(g["group"], g["requests"], g["errors"], g["tokens"]) for g in data["groups"]] == [
        ("control", 2, 1, 10),
        ("smart-v2", 1, 0, 5),
    ]
    assert api_as(Role.VIEWER).get("/api/v1/routing/ab/?model=smart&days=2").status_code == 400
    bob = api_as(Role.OWNER, routed.globex).get("/api/v1/routing/ab/?model=smart")
    assert bob.status_code == 404
