"""The call log in the management API: GET /api/v1/calls/ with the explorer's filters and keyset pages
(every call exactly once, in order, through its `next` links), GET /api/v1/calls/<id>/ with attempts,
route, policy actions, exact cost and bodies; Erin (member) sees only her own key's calls; Bob's globex
never sees acme's; unknown parameters are a 400 naming them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from observability.logbuffer import DatabaseSink
from observability.models import CallBody
from tenants.audit import Actor
from tenants.models import Role
from tenants.services import management_token_create
from tests.helpers.billing import record

pytestmark = pytest.mark.usefixtures("console_defaults")
START = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _call(tenant, key, n: int, **fields) -> dict:
    row = record(tenant, key, cost=1_234_567_890 * (n + 1))
    row.update(created_at=START + timedelta(minutes=n), request_id=f"req-{n}", **fields)
    return row


@pytest.fixture
def calls(world):
    acme_key, erin_key = world.objects["key"], world.objects["erin_key"]
    rows = [_call(world.acme, acme_key if n % 3 else erin_key, n) for n in range(12)]
    rows[5].update(
        status_code=429,
        error_type="rate_limited",
        end_user="u-42",
        tags=["batch"],
        route="gpt-4o-mini",
        variant="smart-v2",
        attempts=[
            {
                "deployment": 1,
                "provider": "main",
                "model": "gpt-4o",
                "status": 429,
                "latency_ms": 2.0,
                "error": "rate_limited",
            }
        ],
        pii_actions={"email": {"pseudonymize": 2}},
        cache_status="miss",
    )
    rows.append(_call(world.globex, world.objects["g_key"], 20))
    DatabaseSink().write(rows)
    CallBody.objects.create(
        tenant_id=world.acme.id,
        created_at=rows[5]["created_at"],
        request_id="req-5",
        request_body='{"messages": "<EMAIL_1>"}',
        response_body="ok",
    )
    return world


def test_pages_follow_next_links_newest_first_with_every_call_once(calls, api_as):
    client = api_as(Role.ADMIN)
    url, seen = "/api/v1/calls/?limit=5&from=2026-11-25T00:00:00Z", []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [row["request_id"] for row in body["results"]]
        url = body["next"]
    assert seen == [f"req-{n}" for n in range(11, -1, -1)]  # globex's call is not there


def test_the_explorers_filters_and_one_calls_detail(calls, api_as):
    client = api_as(Role.VIEWER)
    rows = client.get("/api/v1/calls/", {"status": "4xx", "user": "u-42", "tag": "batch"}).json()["results"]
    assert [r["request_id"] for r in rows] == ["req-5"]
    assert rows[0]["cost_usd"] == "0.00740740734"  # 1,234,567,890 x 6 picodollars, exact
    assert client.get("/api/v1/calls/", {"request_id": "req-7"}).json()["results"][0]["request_id"] == "req-7"
    assert client.get("/api/v1/calls/", {"key": calls.objects["erin_key"].id}).json()["results"][0]["key_id"] == (
        calls.objects["erin_key"].id
    )
    detail = client.get(f"/api/v1/calls/{rows[0]['id']}/").json()
    assert (
        detail["attempts"][0]["status"] == 429 and detail["variant"] == "smart-v2" and detail["route"] == "gpt-4o-mini"
    )
    assert detail["pii_actions"] == {"email": {"pseudonymize": 2}} and detail["cache_status"] == "miss"
    assert detail["bodies"] == {"request": '{"messages": "<EMAIL_1>"}', "response": "ok", "truncated": False}


def test_erin_sees_her_own_keys_calls_and_bob_none_of_acmes(calls, api_as):
    _token, secret = management_token_create(calls.acme, name="erin-ci", role=Role.MEMBER, actor=Actor(user=calls.erin))
    erin = Client(headers={"Authorization": f"Bearer {secret}"})
    mine = erin.get("/api/v1/calls/").json()["results"]
    assert {r["key_id"] for r in mine} == {calls.objects["erin_key"].id} and len(mine) == 4
    others = api_as(Role.ADMIN).get("/api/v1/calls/", {"request_id": "req-1"}).json()["results"][0]["id"]
    assert erin.get(f"/api/v1/calls/{others}/").status_code == 404
    bob = api_as(Role.OWNER, tenant=calls.globex)
    assert [r["request_id"] for r in bob.get("/api/v1/calls/").json()["results"]] == ["req-20"]
    assert bob.get(f"/api/v1/calls/{others}/").status_code == 404


def test_bad_parameters_are_a_400_naming_them(calls, api_as):
    client = api_as(Role.ADMIN)
    response = client.get("/api/v1/calls/", {"limt": "5"})
    assert response.status_code == 400 and "limt" in response.content.decode()
    assert client.get("/api/v1/calls/", {"status": "teapot"}).status_code == 400
    assert client.get("/api/v1/calls/", {"from": "yesterday"}).status_code == 400
