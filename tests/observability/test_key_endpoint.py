"""GET /v1/gateway/key: a key's holder sees its own name, models, limits, spend and budgets, and
nothing of another key's or another tenant's."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest
from django.test import RequestFactory
from django.urls import resolve

from billing.models import LimitScope
from billing.services import budget_upsert, rate_limit_set
from observability.logbuffer import buffer
from proxy import keyinfo, lifecycle, pipeline
from proxy.background import drain
from proxy.configcache import state
from tenants.audit import Actor
from tenants.models import VirtualKey

pytestmark = pytest.mark.django_db(transaction=True)


def _key_info(secret: str | None, method: str = "get"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    request = getattr(RequestFactory(), method)("/v1/gateway/key", **headers)
    response = asyncio.run(keyinfo.key_info(request))
    return response, orjson.loads(response.content)


def _chat(secret: str) -> int:
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    async def go() -> int:
        response = await pipeline.handle(request, "chat/completions")
        await drain()  # the budget settles after the answer
        return response.status_code

    return asyncio.run(go())


@pytest.fixture
def world(acme, globex, mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    state.clear()
    actor = Actor.cli()
    alice_key = mint(acme, name="alice-app", models=["gpt-4o-mini", "embed"])
    alice_row = VirtualKey.objects.get(tenant=acme, name="alice-app")
    rate_limit_set(acme, scope=LimitScope.KEY, ref=str(alice_row.id), rpm=60, tpm=10_000, max_parallel=3, actor=actor)
    budget_upsert(acme, scope="key:alice-app", limit_usd=Decimal("10"), period="month", mode="hard", actor=actor)
    budget_upsert(acme, scope="tenant", limit_usd=Decimal("100"), period="day", mode="soft", actor=actor)
    mint(acme, name="someone-else")
    budget_upsert(acme, scope="key:someone-else", limit_usd=Decimal("5"), period="month", mode="hard", actor=actor)
    bob_key = mint(globex, name="bob-app")
    budget_upsert(globex, scope="tenant", limit_usd=Decimal("7"), period="month", mode="hard", actor=actor)
    state.clear()
    yield {"alice": alice_key, "bob": bob_key}
    buffer.flush_sync()
    state.clear()


@pytest.mark.django_db  # no thread reads the database here: a rolled-back transaction will do
def test_the_route_is_served_by_the_proxy():
    assert resolve("/v1/gateway/key").func is keyinfo.key_info


def test_alice_sees_her_key_its_limits_and_acme_budgets_with_this_periods_spend(world, upstream):
    assert _chat(world["alice"]) == 200
    response, body = _key_info(world["alice"])
    assert response.status_code == 200, body
    assert float(response["x-gateway-overhead-ms"]) >= 0
    assert body["object"] == "gateway.key"
    assert (body["name"], body["tenant"]) == ("alice-app", "acme")
    assert body["models"] == ["embed", "gpt-4o-mini"]
    assert body["limits"]["rpm"] == 60 and body["limits"]["tpm"] == 10_000 and body["limits"]["max_parallel"] == 3
    budgets = {b["scope"]: b for b in body["budgets"]}
    assert set(budgets) == {"key:alice-app", "tenant"}  # not another key's budget, nothing of globex
    own = budgets["key:alice-app"]
    spent = Decimal(own["spent_usd"])
    assert spent > 0  # the call above, settled at its exact cost
    assert Decimal(own["remaining_usd"]) == Decimal("10") - spent
    assert (own["period"], own["hard"], Decimal(own["limit_usd"])) == ("month", True, Decimal("10"))
    assert body["spend"] == {"period": "month", "period_key": own["period_key"], "usd": own["spent_usd"]}
    assert Decimal(budgets["tenant"]["spent_usd"]) == spent
    text = response.content.decode()
    assert "globex" not in text and "bob-app" not in text


def test_bob_sees_only_globex(world):
    _response, body = _key_info(world["bob"])
    assert (body["name"], body["tenant"]) == ("bob-app", "globex")
    assert "gpt-4o-mini" in body["models"] and "embed" not in body["models"]
    assert [(b["scope"], Decimal(b["spent_usd"])) for b in body["budgets"]] == [("tenant", Decimal(0))]
    assert body["spend"] is None  # no budget of its own
    assert body["limits"]["rpm"] is None


def test_bad_keys_get_openai_errors(world):
    response, body = _key_info("sk-gw-not-a-real-key")
    assert response.status_code == 401 and body["error"]["code"] == "invalid_api_key"
    response, body = _key_info(None)
    assert response.status_code == 401 and body["error"]["code"] == "missing_api_key"
    response, body = _key_info(world["alice"], method="post")
    assert response.status_code == 405 and body["error"]["type"] == "invalid_request_error"


@pytest.mark.django_db  # no thread reads the database here: a rolled-back transaction will do
def test_the_api_docs_describe_the_endpoint_and_the_overhead_header(client):
    response = client.get("/api/schema/", headers={"Accept": "application/json"})
    schema = orjson.loads(response.content)
    operation = schema["paths"]["/v1/gateway/key"]["get"]
    assert operation["operationId"] == "gateway_key_retrieve"
    assert "x-gateway-overhead-ms" in operation["responses"]["200"]["headers"]
