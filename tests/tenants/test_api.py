"""The management REST API: token auth, the keys contract, providers, models, members, errors, schema."""

from __future__ import annotations

import json

import pytest
from django.core import mail

from tenants.audit import Actor
from tenants.models import AuditLog, ManagementToken, Membership, Role, VirtualKey, hash_secret
from tenants.services import management_token_create, management_token_revoke

pytestmark = pytest.mark.usefixtures("console_defaults")


def post(client, url: str, data: dict | None = None, method: str = "POST"):
    return client.generic(method, url, data=json.dumps(data or {}), content_type="application/json")


# --- Authentication --------------------------------------------------------------------------------


def test_without_a_token_it_answers_401_with_a_json_error(world, client):
    response = client.get("/api/v1/keys/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token abc", "Authorization: Bearer <token>"),
        ("Bearer gwm-not-a-real-token", "Unknown or revoked management token."),
    ],
)
def test_a_bad_token_is_refused(world, client, header, message):
    response = client.get("/api/v1/keys/", headers={"Authorization": header})
    assert response.status_code == 401
    assert message in response.json()["error"]["message"]


def test_a_virtual_key_is_not_a_management_token(world, client):
    response = client.get("/api/v1/keys/", headers={"Authorization": f"Bearer {world.objects['key_secret']}"})
    assert response.status_code == 401
    assert "virtual key for the proxy" in response.json()["error"]["message"]


def test_a_revoked_token_stops_working(world, client):
    token, secret = management_token_create(world.acme, name="short-lived", role=Role.ADMIN, actor=Actor.cli())
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/keys/", headers=headers).status_code == 200
    management_token_revoke(world.acme, token=token, actor=Actor.cli())
    assert client.get("/api/v1/keys/", headers=headers).status_code == 401


def test_tokens_are_stored_hashed_and_record_their_last_use(world, client):
    token, secret = management_token_create(world.acme, name="ci", role=Role.VIEWER, actor=Actor.cli())
    assert token.token_hash == hash_secret(secret) and secret not in json.dumps(
        list(ManagementToken.objects.values()), default=str
    )
    client.get("/api/v1/keys/", headers={"Authorization": f"Bearer {secret}"})
    token.refresh_from_db()
    assert token.last_used_at is not None


# --- Keys: the exact contract ----------------------------------------------------------------------


def test_list_keys_never_returns_secrets_or_hashes(world, api_as):
    response = api_as(Role.ADMIN).get("/api/v1/keys/")
    assert response.status_code == 200
    names = {k["name"] for k in response.json()}
    assert names == {"acme-service", "erin-notebook"}  # and nothing of globex
    text = response.content.decode()
    assert "secret" not in text and "key_hash" not in text
    assert world.objects["key"].key_hash not in text


def test_create_key_returns_201_with_the_secret_once(world, api_as):
    client = api_as(Role.MEMBER)
    response = post(
        client,
        "/api/v1/keys/",
        {"name": "batch", "models": ["gpt-4o-mini"], "expires_at": "2099-01-01T00:00:00Z", "metadata": {"team": "ml"}},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secret"].startswith("sk-gw-")
    assert body["name"] == "batch" and body["models"] == ["gpt-4o-mini"] and body["metadata"] == {"team": "ml"}
    assert body["expires_at"].startswith("2099-01-01") and body["active"] is True and body["revoked"] is False
    key = VirtualKey.objects.get(id=body["id"], tenant=world.acme)
    assert key.key_hash == hash_secret(body["secret"])
    detail = client.get(f"/api/v1/keys/{key.id}/").json()
    assert "secret" not in detail and detail["prefix"] == body["secret"][:10]


def test_create_key_with_only_a_name(world, api_as):
    response = post(api_as(Role.ADMIN), "/api/v1/keys/", {"name": "minimal"})
    assert response.status_code == 201
    assert response.json()["models"] == [] and response.json()["expires_at"] is None


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "name", "name: This field is required."),
        (
            {"name": "x", "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
            "expires_at: The expiry must be in the future.",
        ),
        ({"name": "x", "metadata": [1]}, "metadata", "metadata: "),
        ({"name": "x", "models": "gpt-4o"}, "models", "models: "),
    ],
)
def test_create_key_validation_errors_are_clear_json(world, api_as, payload, field, message):
    response = post(api_as(Role.ADMIN), "/api/v1/keys/", payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert error["message"].startswith(message)


def test_revoke_key(world, api_as):
    key = world.objects["key"]
    response = post(api_as(Role.ADMIN), f"/api/v1/keys/{key.id}/revoke/")
    assert response.status_code == 200
    assert response.json()["revoked"] is True and response.json()["active"] is False
    key.refresh_from_db()
    assert key.revoked
    assert AuditLog.objects.filter(action="key.revoke", actor_label="api-token:test-admin").exists()


def test_rotate_key_returns_a_new_secret(world, api_as):
    key = world.objects["key"]
    response = post(api_as(Role.ADMIN), f"/api/v1/keys/{key.id}/rotate/")
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.key_hash == hash_secret(response.json()["secret"])


def test_patch_key(world, api_as):
    key = world.objects["key"]
    response = post(
        api_as(Role.ADMIN), f"/api/v1/keys/{key.id}/", {"models": ["acme-secret-model"], "expires_at": None}, "PATCH"
    )
    assert response.status_code == 200
    assert response.json()["models"] == ["acme-secret-model"]


def test_a_member_token_works_with_its_creators_keys_only(world):
    from django.test import Client

    _token, secret = management_token_create(
        world.acme, name="erin-bot", role=Role.MEMBER, actor=Actor(user=world.erin)
    )
    client = Client(headers={"Authorization": f"Bearer {secret}"})
    assert [k["name"] for k in client.get("/api/v1/keys/").json()] == ["erin-notebook"]
    alices = world.objects["key"].id
    assert client.get(f"/api/v1/keys/{alices}/").status_code == 404
    assert post(client, f"/api/v1/keys/{alices}/revoke/").status_code == 404
    created = post(client, "/api/v1/keys/", {"name": "erin-bot-key"}).json()
    assert VirtualKey.objects.get(id=created["id"]).created_by == world.erin


def test_globex_token_lists_only_globex_things(world, api_as):
    client = api_as(Role.OWNER, world.globex)
    assert [k["name"] for k in client.get("/api/v1/keys/").json()] == ["globex-service"]
    assert [m["name"] for m in client.get("/api/v1/models/").json()] == ["gpt-4o-mini"]
    assert [m["email"] for m in client.get("/api/v1/members/").json()] == ["bob@globex.example"]
    assert [p["name"] for p in client.get("/api/v1/providers/").json()] == ["mock"]
    assert [i["email"] for i in client.get("/api/v1/invitations/").json()] == ["newcomer@globex.example"]
    audit = client.get("/api/v1/audit/").json()
    assert audit and all("acme" not in json.dumps(e) for e in audit)


def test_wrong_method_is_a_json_405(world, api_as):
    response = post(api_as(Role.ADMIN), "/api/v1/keys/", {}, "PUT")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response["Allow"] and "POST" in response["Allow"]


# --- Providers and models --------------------------------------------------------------------------


def test_provider_lifecycle_never_returns_the_api_key(world, api_as):
    client = api_as(Role.ADMIN)
    response = post(
        client,
        "/api/v1/providers/",
        {"name": "openai-prod", "kind": "openai", "api_key": "sk-live-very-secret-1234"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["api_key_set"] is True and body["api_key_last4"] == "1234"
    assert "very-secret" not in response.content.decode()
    pid = body["id"]
    assert "very-secret" not in client.get(f"/api/v1/providers/{pid}/").content.decode()
    response = post(client, f"/api/v1/providers/{pid}/", {"base_url": "https://example.com/v1"}, "PATCH")
    assert response.json()["base_url"] == "https://example.com/v1" and response.json()["api_key_last4"] == "1234"
    assert post(client, f"/api/v1/providers/{pid}/", method="DELETE").status_code == 204
    assert client.get(f"/api/v1/providers/{pid}/").status_code == 404


def test_provider_name_must_be_unique(world, api_as):
    response = post(api_as(Role.ADMIN), "/api/v1/providers/", {"name": "mock", "kind": "mock"})
    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["message"]


def test_provider_base_url_cannot_point_inside_the_network(world, api_as, settings):
    settings.GATEWAY_PRIVATE_UPSTREAMS = []
    response = post(
        api_as(Role.ADMIN),
        "/api/v1/providers/",
        {"name": "evil", "kind": "openai-compatible", "base_url": "http://169.254.169.254/v1"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("base_url: ")


def test_provider_test_connection_for_the_mock(world, api_as):
    response = post(api_as(Role.VIEWER), f"/api/v1/providers/{world.objects['provider'].id}/test/")
    assert response.json()["ok"] is True


def test_models_create_replace_delete(world, api_as):
    client = api_as(Role.ADMIN)
    payload = {"name": "team/fast", "deployments": [{"provider": "mock", "model": "mock-chat"}]}
    response = post(client, "/api/v1/models/", payload)
    assert response.status_code == 201, response.content
    assert response.json()["name"] == payload["name"]
    assert response.json()["deployments"] == [{"provider": "mock", "model": "mock-chat", "weight": 1, "base_model": ""}]
    assert post(client, "/api/v1/models/", payload).status_code == 400  # exists already
    response = post(
        client, "/api/v1/models/team/fast/", {"deployments": [{"provider": "mock", "model": "mock-2"}]}, "PUT"
    )
    assert response.json()["deployments"] == [{"provider": "mock", "model": "mock-2", "weight": 1, "base_model": ""}]
    assert client.get("/api/v1/models/team/fast/").json()["name"] == "team/fast"
    assert post(client, "/api/v1/models/team/fast/", method="DELETE").status_code == 204
    assert client.get("/api/v1/models/team/fast/").status_code == 404


def test_a_model_cannot_use_another_tenants_provider(world, api_as):
    payload = {"name": "sneaky", "deployments": [{"provider": "globex-only", "model": "x"}]}
    response = post(api_as(Role.ADMIN), "/api/v1/models/", payload)
    assert response.status_code == 400
    assert "no provider named 'globex-only'" in response.json()["error"]["message"]


# --- Members ---------------------------------------------------------------------------------------


def test_owner_token_invites_changes_roles_and_removes(world, api_as, django_capture_on_commit_callbacks):
    client = api_as(Role.OWNER)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "/api/v1/members/", {"email": "frank@acme.example", "role": "admin"})
    assert response.status_code == 201
    assert response.json()["email"] == "frank@acme.example" and response.json()["role"] == "admin"
    assert len(mail.outbox) == 1 and "/invitations/" in mail.outbox[0].body
    charlie = world.objects["memberships"]["charlie"]
    response = post(client, f"/api/v1/members/{charlie.id}/", {"role": "member"}, "PATCH")
    assert response.json()["role"] == "member"
    assert post(client, f"/api/v1/members/{charlie.id}/", method="DELETE").status_code == 204
    assert not Membership.objects.filter(id=charlie.id).exists()


def test_the_last_owner_cannot_be_demoted(world, api_as):
    alice = world.objects["memberships"]["alice"]
    response = post(api_as(Role.OWNER), f"/api/v1/members/{alice.id}/", {"role": "admin"}, "PATCH")
    assert response.status_code == 400
    assert "at least one owner" in response.json()["error"]["message"]


def test_inviting_an_existing_member_is_refused(world, api_as):
    response = post(api_as(Role.OWNER), "/api/v1/members/", {"email": "erin@acme.example", "role": "admin"})
    assert response.status_code == 400
    assert "already a member" in response.json()["error"]["message"]


# --- Schema and docs -------------------------------------------------------------------------------


def test_openapi_schema_describes_the_api(world, client):
    response = client.get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert {
        "/api/v1/keys/",
        "/api/v1/keys/{key_id}/revoke/",
        "/api/v1/providers/",
        "/api/v1/models/",
        "/api/v1/members/",
    } <= set(schema["paths"])
    assert set(schema["paths"]["/api/v1/keys/"]) == {"get", "post"}
    create = schema["paths"]["/api/v1/keys/"]["post"]
    assert "201" in create["responses"]
    assert "managementToken" in schema["components"]["securitySchemes"]


def test_api_docs_are_served_without_a_cdn(world, client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "swagger-ui" in body and "cdn." not in body
