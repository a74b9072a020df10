"""Management API edges: a member token that acts for nobody owns no keys; unknown /api/ paths answer
JSON; responses and pages that show a new secret are never cached."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.models import Budget
from tenants.audit import Actor
from tenants.models import Membership, Role, VirtualKey
from tenants.services import management_token_create, virtual_key_create

pytestmark = pytest.mark.usefixtures("console_defaults")


def post(client, url: str, data: dict | None = None):
    return client.generic("POST", url, data=json.dumps(data or {}), content_type="application/json")


def cli_token(role: str) -> dict:
    out = io.StringIO()
    call_command("gateway", "mint-token", "--tenant", "acme", "--name", f"cli-{role}", "--role", role, stdout=out)
    return {"Authorization": f"Bearer {out.getvalue().strip()}"}


# --- Own keys --------------------------------------------------------------------------------------


def test_a_cli_minted_member_token_owns_no_cli_minted_key(world, client):
    ci_key, _secret = virtual_key_create(world.acme, name="deploy-bot", actor=Actor.cli())
    Budget.objects.create(tenant=world.acme, scope="key:deploy-bot", limit_usd=5, alert_at=[50])
    headers = cli_token(Role.MEMBER)
    # Listing: none of the tenant's keys is its own, least of all the other CLI-minted one.
    assert client.get("/api/v1/keys/", headers=headers).json() == []
    # Reading or changing it: as if it did not exist.
    assert client.get(f"/api/v1/keys/{ci_key.id}/", headers=headers).status_code == 404
    response = client.post(f"/api/v1/keys/{ci_key.id}/revoke/", headers=headers)
    assert response.status_code == 404
    assert client.post(f"/api/v1/keys/{ci_key.id}/rotate/", headers=headers).status_code == 404
    ci_key.refresh_from_db()
    assert not ci_key.revoked
    # Its spend and budgets are not the token's either.
    assert client.get("/api/v1/spend/", headers=headers).json()["by_key"] == {}
    assert [b["scope"] for b in client.get("/api/v1/budgets/", headers=headers).json()] == []


def test_a_cli_minted_member_token_cannot_manage_even_the_keys_it_creates(world, client):
    # It acts for nobody: the key it creates has no owner, so it is nobody's "own key" afterwards.
    headers = cli_token(Role.MEMBER)
    response = post(Client(headers=headers), "/api/v1/keys/", {"name": "made-by-token"})
    assert response.status_code == 201
    key = VirtualKey.objects.get(name="made-by-token")
    assert key.created_by is None
    assert client.post(f"/api/v1/keys/{key.id}/revoke/", headers=headers).status_code == 404


def test_erins_member_token_manages_erins_keys_only(world, client):
    _token, secret = management_token_create(world.acme, name="erin-ci", role=Role.MEMBER, actor=Actor(user=world.erin))
    headers = {"Authorization": f"Bearer {secret}"}
    names = [k["name"] for k in client.get("/api/v1/keys/", headers=headers).json()]
    assert names == ["erin-notebook"]
    assert client.post(f"/api/v1/keys/{world.objects['erin_key'].id}/revoke/", headers=headers).status_code == 200
    assert client.post(f"/api/v1/keys/{world.objects['key'].id}/revoke/", headers=headers).status_code == 404


def test_erins_token_stops_when_she_leaves_acme(world, client):
    _token, secret = management_token_create(world.acme, name="erin-ci", role=Role.MEMBER, actor=Actor(user=world.erin))
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/keys/", headers=headers).status_code == 200
    Membership.objects.filter(tenant=world.acme, user=world.erin).delete()
    response = client.get("/api/v1/keys/", headers=headers)
    assert response.status_code == 401
    assert "no longer a member" in response.json()["error"]["message"]


def test_a_token_never_carries_more_than_its_owners_current_role(world, client):
    _token, secret = management_token_create(world.acme, name="erin-ci", role=Role.MEMBER, actor=Actor(user=world.erin))
    headers = {"Authorization": f"Bearer {secret}"}
    Membership.objects.filter(tenant=world.acme, user=world.erin).update(role=Role.VIEWER)
    # A viewer may read but not create keys: neither may a member token Erin minted before.
    assert client.get("/api/v1/keys/", headers=headers).status_code == 200
    assert post(Client(headers=headers), "/api/v1/keys/", {"name": "after-demotion"}).status_code == 403
    assert not VirtualKey.objects.filter(name="after-demotion").exists()


# --- Unknown API paths -----------------------------------------------------------------------------


def test_an_unknown_api_path_answers_the_api_json_error(world, client, api_as):
    for path in ("/api/v1/nothing-here/", "/api/v1/keys/not-a-number/", "/api/v2/keys/", "/api/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"
    # With a token too: the same JSON, not an HTML page (nor the CSRF failure page for a POST).
    token_client = api_as("admin")
    token_client.handler.enforce_csrf_checks = True
    response = post(token_client, "/api/v1/nothing-here/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_an_api_path_without_its_slash_redirects_keeping_the_method(world, client):
    response = client.post("/api/v1/keys?x=1")
    assert response.status_code == 308
    assert response["Location"] == "/api/v1/keys/?x=1"


def test_the_api_schema_and_console_are_untouched(world, client_as):
    assert client_as(world.alice).get("/api/schema/").status_code == 200
    assert client_as(world.alice).get("/no-such-page/").status_code == 404


# --- Secrets are never cached ----------------------------------------------------------------------


def _no_store(response) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def test_the_api_response_with_a_new_secret_is_not_cached(world, api_as):
    client = api_as("admin")
    created = post(client, "/api/v1/keys/", {"name": "fresh"})
    assert created.status_code == 201 and created.json()["secret"] and _no_store(created)
    rotated = post(client, f"/api/v1/keys/{created.json()['id']}/rotate/")
    assert rotated.status_code == 200 and rotated.json()["secret"] and _no_store(rotated)


def test_the_console_pages_revealing_a_secret_are_not_cached(world, client_as):
    client = client_as(world.alice)
    created = client.post(reverse("keys", args=["acme"]), {"name": "fresh"})
    assert "sk-gw-" in created.content.decode() and _no_store(created)
    htmx = client.post(reverse("keys", args=["acme"]), {"name": "fresh-2"}, headers={"HX-Request": "true"})
    assert "sk-gw-" in htmx.content.decode() and _no_store(htmx)
    key = VirtualKey.objects.get(name="fresh")
    rotated = client.post(reverse("key-rotate", args=["acme", key.id]))
    assert "sk-gw-" in rotated.content.decode() and _no_store(rotated)
    token = client.post(reverse("tokens", args=["acme"]), {"name": "terraform", "role": Role.VIEWER})
    assert "gwm-" in token.content.decode() and _no_store(token)


def test_key_metadata_is_bounded_with_a_400_naming_the_limit(world, api_as):
    client = api_as("admin")
    big = post(client, "/api/v1/keys/", {"name": "fat", "metadata": {"blob": "x" * 5000}})
    assert big.status_code == 400
    assert "4,096 bytes" in json.dumps(big.json())
    assert not VirtualKey.objects.filter(name="fat").exists()
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    nested = client.post(
        "/api/v1/keys/", data=f'{{"name": "deep", "metadata": {deep}}}', content_type="application/json"
    )
    assert nested.status_code == 400  # not a 500 from the recursion
    fits = post(client, "/api/v1/keys/", {"name": "fits", "metadata": {"team": "payments"}})
    assert fits.status_code == 201
