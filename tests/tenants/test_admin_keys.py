"""Admin keys: a key that may score every call of its tenant. Owners and admins grant it, in the key API
(`admin`), with `gateway mint-key --admin` and with the console's key form; Erin (member) gets 403 from
the API and a disabled box in the console; the audit log records the grant; Bob's token cannot touch
acme's keys."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from proxy.loader import load_key
from tenants.models import AuditLog, Role, VirtualKey

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


def send(client, path: str, body: dict, method: str = "POST") -> object:
    return client.generic(method, path, data=json.dumps(body), content_type="application/json")


def url(name: str, slug: str = "acme", **kwargs) -> str:
    return reverse(name, kwargs={"slug": slug, **kwargs})


# --- The key API ---------------------------------------------------------------------------------------


def test_an_admin_makes_an_admin_key_and_the_proxy_reads_the_flag(world, api_as):
    client = api_as(Role.ADMIN)
    response = send(client, "/api/v1/keys/", {"name": "scorer", "admin": True})
    assert response.status_code == 201, response.content
    assert response.json()["admin"] is True
    key = VirtualKey.objects.get(id=response.json()["id"])
    assert key.admin and load_key(key.key_hash).admin
    assert AuditLog.objects.get(action="key.create", target_id=str(key.id)).changes["admin"] is True
    response = send(client, f"/api/v1/keys/{key.id}/", {"admin": False}, "PATCH")
    assert response.status_code == 200 and response.json()["admin"] is False
    assert AuditLog.objects.get(action="key.update", target_id=str(key.id)).changes == {"admin": [True, False]}
    assert not load_key(key.key_hash).admin
    assert client.get(f"/api/v1/keys/{world.objects['key'].id}/").json()["admin"] is False


def test_a_member_cannot_make_an_admin_key(world, api_as):
    client = api_as(Role.MEMBER)
    count = VirtualKey.objects.count()
    response = send(client, "/api/v1/keys/", {"name": "sneaky", "admin": True})
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "permission_denied"
    assert VirtualKey.objects.count() == count
    own = world.objects["key"]  # the member token acts for Alice, so this key is its own
    response = send(client, f"/api/v1/keys/{own.id}/", {"name": "renamed", "admin": True}, "PATCH")
    assert response.status_code == 403
    own.refresh_from_db()
    assert not own.admin and own.name != "renamed"
    # Saying false asks for nothing: members keep working with their keys.
    assert send(client, "/api/v1/keys/", {"name": "plain", "admin": False}).status_code == 201
    assert send(client, f"/api/v1/keys/{own.id}/", {"admin": False}, "PATCH").status_code == 200


def test_bobs_token_cannot_make_acmes_key_an_admin_key(world, api_as):
    key = world.objects["key"]
    response = send(api_as(Role.OWNER, world.globex), f"/api/v1/keys/{key.id}/", {"admin": True}, "PATCH")
    assert response.status_code == 404
    key.refresh_from_db()
    assert not key.admin


# --- gateway mint-key --admin --------------------------------------------------------------------------


def test_mint_key_makes_an_admin_key_only_when_asked(world):
    for name, flags in (("scorer", ["--admin"]), ("plain", [])):
        out = StringIO()
        call_command("gateway", "mint-key", "--tenant", "acme", "--name", name, *flags, stdout=out)
        assert out.getvalue().strip().startswith("sk-gw-")
    assert VirtualKey.objects.get(name="scorer").admin
    assert not VirtualKey.objects.get(name="plain").admin


# --- The console ---------------------------------------------------------------------------------------


def key_form(key: VirtualKey, **changes) -> dict:
    return {"name": key.name, "expires_at": "", "metadata": "", "mcp": "", **changes}


def test_alice_makes_a_key_an_admin_key_and_the_pages_say_so(world, client_as):
    key = world.objects["key"]
    client = client_as(world.alice)
    response = client.post(url("key-detail", key_id=key.id), key_form(key, admin="on"), **HTMX)
    assert "Saved ✓" in response.content.decode()
    key.refresh_from_db()
    assert key.admin
    assert "admin key" in client.get(url("key-detail", key_id=key.id)).content.decode()
    assert ">admin</span>" in client.get(url("keys")).content.decode()
    # Unticking takes it away again.
    client.post(url("key-detail", key_id=key.id), key_form(key), **HTMX)
    key.refresh_from_db()
    assert not key.admin
    client.post(url("keys"), {"name": "scorer", "admin": "on"}, **HTMX)
    assert VirtualKey.objects.get(tenant=world.acme, name="scorer").admin


def test_erins_admin_box_is_disabled_and_what_she_posts_is_ignored(world, client_as):
    erin = client_as(world.erin)
    page = erin.get(url("keys")).content.decode()
    assert 'name="admin" disabled' in page and "Only an owner or admin may make a key an admin key." in page
    assert erin.post(url("keys"), {"name": "erins-scorer", "admin": "on"}, **HTMX).status_code == 200
    assert not VirtualKey.objects.get(tenant=world.acme, name="erins-scorer").admin
    key = world.objects["erin_key"]
    erin.post(url("key-detail", key_id=key.id), key_form(key, admin="on"), **HTMX)
    key.refresh_from_db()
    assert not key.admin
