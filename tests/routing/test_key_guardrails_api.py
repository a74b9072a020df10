"""Guardrails in the management API and on a key's policy page: GET/PUT /api/v1/policies/guardrails/ for
the tenant, the `guardrails` field of the key API (null inherits, [] runs none, a list replaces the
tenant's), and the guardrails box of the console's key policy page. Admins write, everyone in acme reads,
a refusal names the field and changes nothing, and Bob (globex) reaches none of acme's."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from routing.policies.services import tenant_guardrails_set
from tenants.audit import Actor
from tenants.models import AuditLog, Role, VirtualKey

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}
CHECKS = [
    {"name": "no-falcon", "check": "keywords", "words": ["Project Falcon"]},
    {"name": "no-legal", "check": "denied_topics", "topics": ["legal advice"], "action": "flag"},
]


def put(client, path: str, body) -> object:
    return client.put(path, data=json.dumps(body), content_type="application/json")


def patch(client, path: str, body) -> object:
    return client.patch(path, data=json.dumps(body), content_type="application/json")


def post(client, path: str, body) -> object:
    return client.post(path, data=json.dumps(body), content_type="application/json")


# --- The tenant's guardrails ---------------------------------------------------------------------------


def test_an_admin_puts_the_tenants_guardrails_and_a_get_reads_back_what_a_put_takes(world, api_as):
    assert api_as(Role.VIEWER).get("/api/v1/policies/guardrails/").json() == {"guardrails": None}
    response = put(api_as(Role.ADMIN), "/api/v1/policies/guardrails/", {"guardrails": CHECKS})
    assert response.status_code == 200, response.content
    assert response.json() == {"guardrails": CHECKS}
    world.acme.refresh_from_db()
    assert [c["name"] for c in world.acme.guardrails] == ["no-falcon", "no-legal"]
    assert world.acme.guardrails[0]["on"] == "both"  # stored normalized, defaults filled in
    shown = api_as(Role.VIEWER).get("/api/v1/policies/guardrails/").json()
    assert shown == {"guardrails": CHECKS}
    # What a GET answers, a PUT takes back unchanged (a denied_topics check keeps its `topics`).
    assert put(api_as(Role.ADMIN), "/api/v1/policies/guardrails/", shown).json() == shown
    assert AuditLog.objects.filter(tenant=world.acme, action="policy.guardrails").count() == 1
    # Bob's token reads globex, which has none; null and [] remove acme's.
    assert api_as(Role.OWNER, world.globex).get("/api/v1/policies/guardrails/").json() == {"guardrails": None}
    assert put(api_as(Role.ADMIN), "/api/v1/policies/guardrails/", {"guardrails": []}).json() == {"guardrails": None}
    world.acme.refresh_from_db()
    assert world.acme.guardrails is None


BAD = [
    ({"guardrails": [{"name": "x", "check": "vibes"}]}, "guardrails[0].check", "one of"),
    ({"guardrails": [{"name": "x", "check": "keywords"}]}, "guardrails[0].words", "needs its words"),
    ({"guardrails": [{"name": "x", "check": "keywords", "words": ["a"], "colour": 1}]}, "guardrails[0].colour", ""),
    ({"guardrails": [CHECKS[0], CHECKS[0]]}, "guardrails[1].name", "used twice"),
    ({"guardrails": {"name": "x"}}, "guardrails", "a list of checks"),
    ({"guardrails": {}}, "guardrails", "a list of checks"),
    ({}, "guardrails", "required"),
]


def test_bad_guardrails_are_a_400_naming_the_field_and_change_nothing(world, api_as):
    tenant_guardrails_set(world.acme, guardrails=CHECKS, actor=Actor.cli())
    client = api_as(Role.ADMIN)
    for body, field, message in BAD:
        response = put(client, "/api/v1/policies/guardrails/", body)
        assert response.status_code == 400, (body, response.content)
        error = response.json()["error"]
        assert error["code"] == "invalid" and field in error["fields"], (body, error)
        assert message in error["message"], (body, error)
    assert client.get("/api/v1/policies/guardrails/").json() == {"guardrails": CHECKS}


def test_members_and_viewers_cannot_change_the_tenants_guardrails(world, api_as):
    for role in (Role.MEMBER, Role.VIEWER):
        response = put(api_as(role), "/api/v1/policies/guardrails/", {"guardrails": None})
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


# --- A key's own guardrails ----------------------------------------------------------------------------


def test_an_admin_gives_a_key_its_own_checks_none_or_the_tenants(world, api_as):
    client = api_as(Role.ADMIN)
    response = post(client, "/api/v1/keys/", {"name": "support-bot", "guardrails": CHECKS[:1]})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["guardrails"] == CHECKS[:1]
    key = VirtualKey.objects.get(id=created["id"])
    assert key.guardrails[0]["name"] == "no-falcon" and key.guardrails[0]["action"] == "block"
    # What a GET answers, a PATCH takes back.
    shown = client.get(f"/api/v1/keys/{key.id}/").json()["guardrails"]
    assert patch(client, f"/api/v1/keys/{key.id}/", {"guardrails": shown}).status_code == 200
    # [] runs no checks; null goes back to the tenant's; leaving the field out changes nothing.
    assert patch(client, f"/api/v1/keys/{key.id}/", {"guardrails": []}).json()["guardrails"] == []
    key.refresh_from_db()
    assert key.guardrails == []
    assert patch(client, f"/api/v1/keys/{key.id}/", {"name": "support-bot-2"}).json()["guardrails"] == []
    assert patch(client, f"/api/v1/keys/{key.id}/", {"guardrails": None}).json()["guardrails"] is None
    key.refresh_from_db()
    assert key.guardrails is None
    entries = AuditLog.objects.filter(tenant=world.acme, action="key.guardrails").order_by("id")
    assert [e.changes["guardrails"][1] is not None for e in entries] == [True, True, False]
    assert client.get("/api/v1/keys/").json()[0]["guardrails"] is None


def test_bad_key_guardrails_are_a_400_naming_the_field_and_create_no_key(world, api_as):
    client = api_as(Role.ADMIN)
    count = VirtualKey.objects.count()
    response = post(client, "/api/v1/keys/", {"name": "bad", "guardrails": [{"name": "x", "check": "vibes"}]})
    assert response.status_code == 400
    assert "guardrails[0].check" in response.json()["error"]["fields"]
    assert VirtualKey.objects.count() == count
    key = world.objects["key"]
    response = patch(client, f"/api/v1/keys/{key.id}/", {"name": "renamed", "guardrails": [{"check": "keywords"}]})
    assert response.status_code == 400 and "guardrails[0].name" in response.json()["error"]["fields"]
    key.refresh_from_db()
    assert key.name != "renamed" and key.guardrails is None


def test_a_member_cannot_switch_the_checks_off_for_their_own_key(world, api_as):
    client = api_as(Role.MEMBER)
    response = post(client, "/api/v1/keys/", {"name": "no-checks", "guardrails": []})
    assert response.status_code == 403, response.content
    own = world.objects["key"]  # the member token acts for Alice, so this key is its own
    assert patch(client, f"/api/v1/keys/{own.id}/", {"guardrails": []}).status_code == 403
    own.refresh_from_db()
    assert own.guardrails is None


def test_bobs_token_cannot_set_checks_on_acmes_key(world, api_as):
    key = world.objects["key"]
    response = patch(api_as(Role.OWNER, world.globex), f"/api/v1/keys/{key.id}/", {"guardrails": []})
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.guardrails is None


# --- The console: the key's policy page ----------------------------------------------------------------


def url(name: str, slug: str = "acme", **kwargs) -> str:
    return reverse(name, kwargs={"slug": slug, **kwargs})


def guardrails_form(source: str = "own", checks: str = "") -> dict:
    return {"part": "guardrails", "guardrails-source": source, "guardrails-checks": checks}


def test_alice_writes_a_keys_own_checks_in_yaml_and_goes_back_to_the_tenants(world, client_as):
    tenant_guardrails_set(world.acme, guardrails=CHECKS, actor=Actor.cli())
    key = world.objects["key"]
    client = client_as(world.alice)
    page = client.get(url("key-policy", key_id=key.id)).content.decode()
    # While the key inherits, the tenant's checks fill the box as a start.
    assert "Guardrails" in page and "Project Falcon" in page
    assert 'value="inherit" required id="id_guardrails-source_0" checked' in page
    own = "- {name: no-eagle, check: keywords, words: [eagle]}\n"
    response = client.post(url("key-policy", key_id=key.id), guardrails_form(checks=own), **HTMX)
    assert "Saved ✓" in response.content.decode()
    key.refresh_from_db()
    assert [c["name"] for c in key.guardrails] == ["no-eagle"]
    assert key.pii_policy is None  # the PII form was not touched
    assert "its own (1)" in client.get(url("key-detail", key_id=key.id)).content.decode()
    # JSON is YAML too; an empty box runs no checks; "the tenant's" inherits again.
    client.post(url("key-policy", key_id=key.id), guardrails_form(checks=json.dumps(CHECKS[:1])), **HTMX)
    key.refresh_from_db()
    assert key.guardrails[0]["words"] == ["Project Falcon"]
    client.post(url("key-policy", key_id=key.id), guardrails_form(checks="  "), **HTMX)
    key.refresh_from_db()
    assert key.guardrails == []
    # Without htmx: a redirect to the page, which says it is saved.
    response = client.post(url("key-policy", key_id=key.id), guardrails_form(source="inherit", checks="junk: ["))
    assert response.status_code == 302 and response["Location"] == url("key-policy", key_id=key.id)
    key.refresh_from_db()
    assert key.guardrails is None
    assert "Saved the guardrails of" in client.get(response["Location"]).content.decode()


def test_a_refused_check_names_its_line_and_field_and_saves_nothing(world, client_as):
    key = world.objects["key"]
    client = client_as(world.alice)
    typed = "- name: ok\n  check: keywords\n  words: [a]\n- name: bad\n  check: vibes\n"
    response = client.post(url("key-policy", key_id=key.id), guardrails_form(checks=typed), **HTMX)
    html = response.content.decode()
    assert "line 5, guardrails[1].check: one of" in html
    assert "check: vibes" in html  # what Alice typed stays in the box
    # Without htmx, the whole page comes back with the error on the box.
    response = client.post(url("key-policy", key_id=key.id), guardrails_form(checks="- {name: x"))
    assert response.status_code == 200 and "invalid YAML" in response.content.decode()
    assert "PII policy" in response.content.decode()
    key.refresh_from_db()
    assert key.guardrails is None


def test_erin_cannot_set_checks_charlie_reads_them_and_bob_gets_404(world, client_as):
    erin_key = world.objects["erin_key"]
    erin = client_as(world.erin)
    assert erin.get(url("key-policy", key_id=erin_key.id)).status_code == 200
    assert erin.post(url("key-policy", key_id=erin_key.id), guardrails_form()).status_code == 403
    erin_key.refresh_from_db()
    assert erin_key.guardrails is None
    key = world.objects["key"]
    page = client_as(world.charlie).get(url("key-policy", key_id=key.id)).content.decode()
    assert "Save guardrails" not in page
    bob = client_as(world.bob)
    for slug in ("acme", "globex"):
        assert bob.post(url("key-policy", slug=slug, key_id=key.id), guardrails_form()).status_code == 404
    key.refresh_from_db()
    assert key.guardrails is None
