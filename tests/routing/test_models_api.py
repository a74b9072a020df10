"""The models API carries every routing field the YAML and the console's model page have: strategy, retries,
timeout, fallbacks, context-window fallbacks, split, cooldown, and the deployments' weights, base models and
order. Writes go through the console's services, so the YAML export shows what the API set."""

from __future__ import annotations

import json

import pytest
import yaml

from routing.models import ModelDeployment, ModelRoute
from routing.services import provider_upsert
from tenants.audit import Actor
from tenants.config import export_config
from tenants.models import AuditLog, Role

pytestmark = pytest.mark.usefixtures("console_defaults")

EVERYTHING = {
    "name": "team/smart",
    "deployments": [
        {"provider": "backup", "model": "smart-b", "weight": 3, "base_model": "gpt-4o"},
        {"provider": "mock", "model": "smart-a", "weight": 1, "base_model": ""},
    ],
    "strategy": "weighted",
    "retries": 3,
    "timeout_s": 42.5,
    "fallbacks": ["gpt-4o-mini"],
    "context_window_fallbacks": ["acme-secret-model"],
    "split": {
        "model": "acme-secret-model",
        "percent": 12.5,
        "sticky": "key",
        "stop_when": {"score": "thumbs", "min_calls": 200, "significant": False},
    },
    "cooldown": {"failures": 5, "window_s": 90.0, "cooldown_s": 15.0},
}


def send(client, url: str, data: dict, method: str = "POST"):
    return client.generic(method, url, data=json.dumps(data), content_type="application/json")


@pytest.fixture
def admin(world, api_as):
    provider_upsert(world.acme, name="backup", kind="mock", actor=Actor(user=world.alice))
    return api_as(Role.ADMIN)


def test_every_routing_field_round_trips_through_post_and_get(world, admin):
    response = send(admin, "/api/v1/models/", EVERYTHING)
    assert response.status_code == 201, response.content
    assert response.json() == EVERYTHING
    assert admin.get("/api/v1/models/team/smart/").json() == EVERYTHING
    listed = {m["name"]: m for m in admin.get("/api/v1/models/").json()}
    assert listed["team/smart"] == EVERYTHING
    # A model that never had routing shows the defaults.
    assert listed["gpt-4o-mini"]["strategy"] == "priority" and listed["gpt-4o-mini"]["split"] is None
    assert listed["gpt-4o-mini"]["cooldown"] == {"failures": 3, "window_s": 60.0, "cooldown_s": 30.0}


def test_the_yaml_export_shows_what_the_api_set(world, admin):
    assert send(admin, "/api/v1/models/", EVERYTHING).status_code == 201
    exported = yaml.safe_load(export_config(world.acme))
    (model,) = [m for m in exported["models"] if m["name"] == "team/smart"]
    assert model == {
        "name": "team/smart",
        "strategy": "weighted",
        "retries": 3,
        "timeout_s": 42.5,
        "deployments": [
            {"provider": "backup", "model": "smart-b", "weight": 3, "base_model": "gpt-4o"},
            {"provider": "mock", "model": "smart-a"},
        ],
        "fallbacks": ["gpt-4o-mini"],
        "context_window_fallbacks": ["acme-secret-model"],
        "split": {
            "model": "acme-secret-model",
            "percent": 12.5,
            "sticky": "key",
            "stop_when": {"score": "thumbs", "min_calls": 200, "significant": False},
        },
        "cooldown": {"failures": 5, "window_s": 90, "cooldown_s": 15},
    }


def test_put_replaces_the_deployments_and_sets_the_routing_fields_given(world, admin):
    assert send(admin, "/api/v1/models/", EVERYTHING).status_code == 201
    url = "/api/v1/models/team/smart/"
    reordered = [
        {"provider": "mock", "model": "smart-a", "weight": 7},
        {"provider": "backup", "model": "smart-b", "base_model": ""},
    ]
    response = send(
        admin, url, {"deployments": reordered, "retries": 0, "split": None, "cooldown": {"failures": 2}}, "PUT"
    )
    assert response.status_code == 200, response.content
    body = admin.get(url).json()
    # Order is priority; a weight left out is kept, a base_model of "" clears it.
    assert body["deployments"] == [
        {"provider": "mock", "model": "smart-a", "weight": 7, "base_model": ""},
        {"provider": "backup", "model": "smart-b", "weight": 3, "base_model": ""},
    ]
    assert [d.upstream_model for d in ModelDeployment.objects.filter(tenant=world.acme, model_name="team/smart")] == [
        "smart-a",
        "smart-b",
    ]
    assert body["retries"] == 0 and body["split"] is None
    # A cooldown is replaced whole: the sub-fields left out take their defaults, as in the YAML.
    assert body["cooldown"] == {"failures": 2, "window_s": 60.0, "cooldown_s": 30.0}
    # Fields left out keep their values; null sets the default.
    assert (body["strategy"], body["timeout_s"], body["fallbacks"]) == ("weighted", 42.5, ["gpt-4o-mini"])
    send(admin, url, {"deployments": reordered, "strategy": None, "timeout_s": None}, "PUT")
    assert (admin.get(url).json()["strategy"], admin.get(url).json()["timeout_s"]) == ("priority", 600.0)
    assert AuditLog.objects.filter(action="model.routing", target_label="team/smart").count() == 3


def test_a_put_of_deployments_alone_keeps_the_routing_the_console_set(world, admin):
    assert send(admin, "/api/v1/models/", EVERYTHING).status_code == 201
    url = "/api/v1/models/team/smart/"
    assert send(admin, url, {"deployments": [{"provider": "mock", "model": "smart-a"}]}, "PUT").status_code == 200
    body = admin.get(url).json()
    assert {k: body[k] for k in EVERYTHING if k not in ("name", "deployments")} == {
        k: v for k, v in EVERYTHING.items() if k not in ("name", "deployments")
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"strategy": "fastest"}, "strategy", ""),
        ({"retries": 11}, "retries", "must be from 0 to 10"),
        ({"retries": "many"}, "retries", ""),
        ({"timeout_s": 0}, "timeout_s", "must be more than 0"),
        ({"fallbacks": ["nope"]}, "fallbacks[0]", "unknown model 'nope'"),
        ({"fallbacks": ["team/smart"]}, "fallbacks[0]", "cannot fall back to itself"),
        ({"context_window_fallbacks": ["gpt-4o-mini", "gpt-4o-mini"]}, "context_window_fallbacks[1]", "listed twice"),
        ({"split": {"model": "acme-secret-model", "percent": 150}}, "split.percent", "must be from 0 to 100"),
        ({"split": {"model": "nope", "percent": 5}}, "split.model", "unknown model 'nope'"),
        ({"split": {"percent": 5}}, "split", ""),
        ({"cooldown": {"failures": 0}}, "cooldown.failures", "must be from 1 to 1000"),
        ({"cooldown": {"window_s": -1}}, "cooldown.window_s", "must be more than 0"),
        ({"deployments": [{"provider": "mock", "model": "x", "weight": 0}]}, "deployments", ""),
    ],
)
def test_bad_routing_values_are_400s_naming_the_field_and_change_nothing(world, admin, change, field, message):
    before = (ModelDeployment.objects.count(), ModelRoute.objects.count(), AuditLog.objects.count())
    response = send(admin, "/api/v1/models/", {**EVERYTHING, **change})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert message in json.dumps(error["fields"][field])
    assert (ModelDeployment.objects.count(), ModelRoute.objects.count(), AuditLog.objects.count()) == before


def test_a_fallback_cycle_through_the_api_is_refused(world, admin):
    assert send(admin, "/api/v1/models/", {**EVERYTHING, "fallbacks": ["gpt-4o-mini"]}).status_code == 201
    mini = admin.get("/api/v1/models/gpt-4o-mini/").json()
    response = send(
        admin, "/api/v1/models/gpt-4o-mini/", {"deployments": mini["deployments"], "fallbacks": ["team/smart"]}, "PUT"
    )
    assert response.status_code == 400
    assert "cycle" in response.json()["error"]["message"]
    assert admin.get("/api/v1/models/gpt-4o-mini/").json()["fallbacks"] == []


def test_globex_never_sees_or_changes_acmes_routing(world, admin, api_as):
    assert send(admin, "/api/v1/models/", EVERYTHING).status_code == 201
    bob = api_as(Role.OWNER, world.globex)
    assert bob.get("/api/v1/models/team/smart/").status_code == 404
    response = send(bob, "/api/v1/models/team/smart/", {"deployments": [{"provider": "mock", "model": "x"}]}, "PUT")
    assert response.status_code == 404
    # Globex's own model cannot fall back to acme's.
    response = send(
        bob,
        "/api/v1/models/gpt-4o-mini/",
        {"deployments": [{"provider": "mock", "model": "mock-chat"}], "fallbacks": ["team/smart"]},
        "PUT",
    )
    assert response.status_code == 400 and "unknown model 'team/smart'" in response.json()["error"]["message"]
