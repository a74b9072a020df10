"""The management API for data policies: GET/PUT /api/v1/policies/pii/ and /policies/cache/,
and the `pii` field of the key API. Admins write, everyone in the tenant reads; Bob's token sees only
globex; a refused policy changes nothing; a saved one reaches the proxies' config cache."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings

from proxy.configcache import EXPIRED, ConfigState
from proxy.loader import load_key, load_tenant
from routing.policies.services import tenant_pii_policy_set
from tenants.audit import Actor
from tenants.changes import channel
from tenants.models import AuditLog, Role, VirtualKey

pytestmark = pytest.mark.usefixtures("console_defaults")

PII = {
    "mode": "enforce",
    "detectors": {"email": "pseudonymize", "card": "block"},
    "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
    "terms": {"words": ["Project Falcon"], "action": "redact"},
}
NORMALIZED = {**PII, "scan_responses": False}


def put(client, path: str, body) -> object:
    return client.put(path, data=json.dumps(body), content_type="application/json")


def patch(client, path: str, body) -> object:
    return client.patch(path, data=json.dumps(body), content_type="application/json")


def post(client, path: str, body) -> object:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_an_admin_puts_the_pii_policy_and_everyone_reads_it_normalized(world, api_as):
    assert api_as(Role.VIEWER).get("/api/v1/policies/pii/").json() == {"pii": None}
    response = put(api_as(Role.ADMIN), "/api/v1/policies/pii/", {"pii": PII})
    assert response.status_code == 200, response.content
    assert response.json() == {"pii": NORMALIZED}
    assert api_as(Role.VIEWER).get("/api/v1/policies/pii/").json() == {"pii": NORMALIZED}
    world.acme.refresh_from_db()
    assert world.acme.pii_policy == NORMALIZED
    entry = AuditLog.objects.get(tenant=world.acme, action="policy.pii")
    assert entry.changes == {"pii": [None, NORMALIZED]}
    assert entry.actor_label == "api-token:test-admin"
    # A change records only the settings that changed, old and new.
    put(api_as(Role.ADMIN), "/api/v1/policies/pii/", {"pii": {**PII, "mode": "log-only"}})
    entry = AuditLog.objects.filter(tenant=world.acme, action="policy.pii").order_by("-id").first()
    assert entry.changes == {"mode": ["enforce", "log-only"]}
    # Bob's token reads globex, which has no policy.
    assert api_as(Role.OWNER, world.globex).get("/api/v1/policies/pii/").json() == {"pii": None}
    # null removes the policy.
    assert put(api_as(Role.ADMIN), "/api/v1/policies/pii/", {"pii": None}).json() == {"pii": None}
    world.acme.refresh_from_db()
    assert world.acme.pii_policy is None


BAD_PII = [
    ({"pii": {**PII, "detectors": {"passport": "redact"}}}, "pii.detectors.passport", "unknown detector"),
    ({"pii": {**PII, "detectors": {"email": "shred"}}}, "pii.detectors.email", "unknown action 'shred'"),
    ({"pii": {**PII, "mode": "audit"}}, "pii.mode", "unknown mode"),
    ({"pii": {**PII, "custom": [{"name": "x", "pattern": "[a-"}]}}, "pii.custom[0].pattern", "not a valid"),
    ({"pii": {**PII, "custom": [{"name": "x", "pattern": " "}]}}, "pii.custom[0].pattern", "non-empty"),
    ({"pii": {**PII, "colour": "red"}}, "pii.colour", "unknown field"),
    ({"pii": "redact everything"}, "pii", "expected a mapping"),
    ({}, "pii", "required"),
]


def test_a_bad_pii_policy_is_refused_naming_the_field_and_changes_nothing(world, api_as):
    tenant_pii_policy_set(world.acme, policy=PII, actor=Actor.cli())
    client = api_as(Role.ADMIN)
    # One world for every case: each is a single request that must change nothing.
    for body, field, message in BAD_PII:
        response = put(client, "/api/v1/policies/pii/", body)
        assert response.status_code == 400, (body, response.content)
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert field in error["fields"], (body, error)
        assert message in error["message"], (body, error)
    world.acme.refresh_from_db()
    assert world.acme.pii_policy == NORMALIZED


def test_members_and_viewers_cannot_change_policies(world, api_as):
    for role in (Role.MEMBER, Role.VIEWER):
        for path, body in (("/api/v1/policies/pii/", {"pii": PII}), ("/api/v1/policies/cache/", {"cache": None})):
            response = put(api_as(role), path, body)
            assert response.status_code == 403, response.content
            assert response.json()["error"]["code"] == "permission_denied"
    world.acme.refresh_from_db()
    assert world.acme.pii_policy is None


def test_an_admin_sets_the_cache_and_bad_settings_are_refused(world, api_as):
    client = api_as(Role.ADMIN)
    response = put(client, "/api/v1/policies/cache/", {"cache": {"enabled": True, "ttl_s": 600, "models": ["later"]}})
    assert response.status_code == 200, response.content
    assert response.json() == {"cache": {"enabled": True, "ttl_s": 600, "models": ["later"]}}
    for bad, field in (
        ({"ttl_s": 0}, "cache.ttl_s"),
        ({"ttl_s": 31 * 86400}, "cache.ttl_s"),
        ({"ttl_s": "1h"}, "cache.ttl_s"),
        ({"models": [1]}, "cache.models[0]"),
        ({"enabled": "yes"}, "cache.enabled"),
        ({"size": 3}, "cache.size"),
    ):
        response = put(client, "/api/v1/policies/cache/", {"cache": bad})
        assert response.status_code == 400, (bad, response.content)
        assert field in response.json()["error"]["fields"]
    assert api_as(Role.VIEWER).get("/api/v1/policies/cache/").json()["cache"]["ttl_s"] == 600
    assert api_as(Role.OWNER, world.globex).get("/api/v1/policies/cache/").json() == {"cache": None}


# --- The key API's `pii` field ---------------------------------------------------------------------


def test_an_admin_creates_and_changes_a_key_with_its_own_pii_policy(world, api_as):
    client = api_as(Role.ADMIN)
    response = post(client, "/api/v1/keys/", {"name": "support-bot", "pii": PII})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["pii"] == NORMALIZED
    key = VirtualKey.objects.get(id=created["id"])
    assert key.pii_policy == NORMALIZED
    assert client.get(f"/api/v1/keys/{key.id}/").json()["pii"] == NORMALIZED
    response = patch(client, f"/api/v1/keys/{key.id}/", {"pii": {"mode": "log-only", "detectors": {"ip": "mask"}}})
    assert response.status_code == 200, response.content
    assert response.json()["pii"]["mode"] == "log-only"
    # null goes back to the tenant's policy; leaving the field out changes nothing.
    assert patch(client, f"/api/v1/keys/{key.id}/", {"pii": None}).json()["pii"] is None
    assert patch(client, f"/api/v1/keys/{key.id}/", {"name": "support-bot-2"}).json()["pii"] is None
    assert AuditLog.objects.filter(tenant=world.acme, action="key.pii").count() == 3


def test_a_member_cannot_switch_the_policy_off_for_their_own_key(world, api_as):
    client = api_as(Role.MEMBER)
    count = VirtualKey.objects.count()
    response = post(client, "/api/v1/keys/", {"name": "no-rules", "pii": {"detectors": {}}})
    assert response.status_code == 403, response.content
    assert VirtualKey.objects.count() == count
    own = world.objects["key"]  # the member token acts for Alice, so this key is its own
    response = patch(client, f"/api/v1/keys/{own.id}/", {"name": "renamed", "pii": None})
    assert response.status_code == 403
    own.refresh_from_db()
    assert own.name != "renamed"
    # Without the field, members keep working with their keys as before.
    assert post(client, "/api/v1/keys/", {"name": "plain"}).status_code == 201


def test_a_bad_key_policy_creates_no_key(world, api_as):
    count = VirtualKey.objects.count()
    response = post(api_as(Role.ADMIN), "/api/v1/keys/", {"name": "bad", "pii": {"detectors": {"email": "x"}}})
    assert response.status_code == 400
    assert "pii.detectors.email" in response.json()["error"]["fields"]
    assert VirtualKey.objects.count() == count


def test_bobs_token_cannot_set_a_policy_on_acmes_key(world, api_as):
    key = world.objects["key"]
    response = patch(api_as(Role.OWNER, world.globex), f"/api/v1/keys/{key.id}/", {"pii": PII})
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.pii_policy is None


# --- Reaching the proxies ---------------------------------------------------------------------------


def _published(pubsub, wanted: str) -> list[str]:
    events: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and wanted not in events:
        message = pubsub.get_message(timeout=0.5)
        if message:
            events.append(message["data"].decode())
    return events


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL for pub/sub")
def test_a_saved_policy_reaches_the_proxy_config_cache(world, api_as, django_capture_on_commit_callbacks):
    import redis

    key = world.objects["key"]
    state = ConfigState()
    for tenant in (world.acme, world.globex):
        state.tenants[tenant.id] = load_tenant(tenant.id)
    state.keys[key.key_hash] = load_key(key.key_hash)
    assert not state.tenants[world.acme.id].steps and not state.keys[key.key_hash].pii_override
    pubsub = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel())
    try:
        pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        client = api_as(Role.ADMIN)
        with django_capture_on_commit_callbacks(execute=True):
            assert put(client, "/api/v1/policies/pii/", {"pii": PII}).status_code == 200
        events = _published(pubsub, f"tenant:{world.acme.id}")
        with django_capture_on_commit_callbacks(execute=True):
            assert patch(client, f"/api/v1/keys/{key.id}/", {"pii": {"detectors": {}}}).status_code == 200
        events += _published(pubsub, f"key:{key.key_hash}")
    finally:
        pubsub.close()
    assert f"tenant:{world.acme.id}" in events and f"key:{key.key_hash}" in events
    # What a proxy's listener does with the events: acme's entries go, globex's stays, and the next
    # load compiles the new policies.
    for event in events:
        kind, _, ref = event.partition(":")
        state.apply_event(kind, ref)
    # (acme's snapshot stays only as the fallback for a database outage: expired, reloaded on next use.)
    assert state.tenants[world.acme.id].loaded_at == EXPIRED and key.key_hash not in state.keys
    assert state.tenants[world.globex.id].loaded_at != EXPIRED
    # acme has no cache and no body logging: the one step is the PII policy's.
    assert len(load_tenant(world.acme.id).steps) == 1
    assert load_key(key.key_hash).pii_override
