"""Stored Responses API answers (`store`, `previous_response_id`, GET / DELETE / input_items), in
process through pipeline.handle against the echoing loopback upstream of test_pii_proxy: Alice's acme
has the full data policy, Bob's globex none. What is kept is what the provider saw; a tenant never
reads another's; a continuation that arrives before the log writer has stored the answer waits for it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from observability.models import StoredResponse
from proxy import views
from proxy.inbound import response_store
from tests.openapi import validate
from tests.proxy.test_pii_proxy import echo, send, world  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def _get(secret: str, path: str, method: str = "get", **query):
    request = getattr(RequestFactory(), method)(path, data=query or None, HTTP_AUTHORIZATION=f"Bearer {secret}")
    parts = path.strip("/").split("/")
    if parts[-1] == "input_items":
        response = asyncio.run(views.stored_response_input_items(request, parts[-2]))
    else:
        response = asyncio.run(views.stored_response(request, parts[-1]))
    return response.status_code, orjson.loads(response.content)


def test_a_stored_answer_keeps_what_the_provider_saw_and_continues_it(world, echo):  # noqa: F811
    response, body = send(world["alice"], {"model": "echo-1", "input": "Mail jane.doe@example.com today"}, "responses")
    assert response.status_code == 200, body
    first = orjson.loads(body)
    validate(first, "Response")
    assert first["store"] is True
    assert "jane.doe@example.com" in first["output"][0]["content"][0]["text"]  # restored for Alice
    sent = echo.bodies[-1]["messages"]
    assert sent == [{"role": "user", "content": "Mail <EMAIL_1> today"}]

    # Continued at once, before the log writer stored it: this process remembers its own answers.
    response, body = send(
        world["alice"], {"model": "echo-1", "input": "And again?", "previous_response_id": first["id"]}, "responses"
    )
    assert response.status_code == 200, body
    assert orjson.loads(body)["previous_response_id"] == first["id"]
    assert echo.bodies[-1]["messages"] == [
        {"role": "user", "content": "Mail <EMAIL_1> today"},
        {"role": "assistant", "content": "Mail <EMAIL_1> today"},
        {"role": "user", "content": "And again?"},
    ]

    buffer.flush_sync()
    row = StoredResponse.objects.get(id=first["id"])
    kept = json.dumps([row.response, row.input_items, row.messages])
    assert "jane.doe@example.com" not in kept and "<EMAIL_1>" in kept
    assert row.input_items[0]["content"] == [{"type": "input_text", "text": "Mail <EMAIL_1> today"}]

    status, got = _get(world["alice"], f"/v1/responses/{first['id']}")
    assert (
        status == 200 and got["id"] == first["id"] and got["output"][0]["content"][0]["text"] == "Mail <EMAIL_1> today"
    )
    validate(got, "Response")
    status, items = _get(world["alice"], f"/v1/responses/{first['id']}/input_items")
    assert status == 200 and [i["content"][0]["text"] for i in items["data"]] == ["Mail <EMAIL_1> today"]
    validate(items, "ResponseItemList")


def test_another_tenant_never_reads_or_continues_a_response(world, echo):  # noqa: F811
    _, body = send(world["alice"], {"model": "echo-1", "input": "Acme's plan"}, "responses")
    alices = orjson.loads(body)["id"]
    buffer.flush_sync()
    for path in (f"/v1/responses/{alices}", f"/v1/responses/{alices}/input_items"):
        status, error = _get(world["bob"], path)
        assert status == 404 and error["error"]["code"] == "response_not_found"
    status, _ = _get(world["bob"], f"/v1/responses/{alices}", "delete")
    assert status == 404
    response, body = send(world["bob"], {"model": "echo-1", "input": "x", "previous_response_id": alices}, "responses")
    assert response.status_code == 404 and orjson.loads(body)["error"]["param"] == "previous_response_id"
    assert StoredResponse.objects.filter(id=alices).exists()  # Bob's delete did nothing


def test_store_false_keeps_nothing_and_delete_removes(world, echo):  # noqa: F811
    _, body = send(world["bob"], {"model": "echo-1", "input": "ephemeral", "store": False}, "responses")
    answer = orjson.loads(body)
    assert answer["store"] is False
    _, body = send(world["bob"], {"model": "echo-1", "input": "kept"}, "responses")
    kept = orjson.loads(body)["id"]
    buffer.flush_sync()
    assert not StoredResponse.objects.filter(id=answer["id"]).exists()
    assert StoredResponse.objects.filter(id=kept).exists()
    assert _get(world["bob"], f"/v1/responses/{kept}", "delete") == (
        200,
        {"id": kept, "object": "response.deleted", "deleted": True},
    )
    assert _get(world["bob"], f"/v1/responses/{kept}")[0] == 404
    response, body = send(world["bob"], {"model": "echo-1", "input": "x", "store": "yes"}, "responses")
    assert response.status_code == 400 and orjson.loads(body)["error"]["param"] == "store"


def test_input_items_are_paginated(world, echo):  # noqa: F811
    conversation = [{"role": "user", "content": f"line {n}"} for n in range(5)]
    _, body = send(world["bob"], {"model": "echo-1", "input": conversation}, "responses")
    rid = orjson.loads(body)["id"]
    status, page = _get(world["bob"], f"/v1/responses/{rid}/input_items", limit="2")
    assert status == 200 and page["has_more"] is True
    assert [i["content"][0]["text"] for i in page["data"]] == ["line 4", "line 3"]  # newest first by default
    status, rest = _get(world["bob"], f"/v1/responses/{rid}/input_items", after=page["last_id"], order="desc")
    assert [i["content"][0]["text"] for i in rest["data"]] == ["line 2", "line 1", "line 0"] and not rest["has_more"]
    status, asc = _get(world["bob"], f"/v1/responses/{rid}/input_items", order="asc", limit="1")
    assert asc["data"][0]["content"][0]["text"] == "line 0"
    assert _get(world["bob"], f"/v1/responses/{rid}/input_items", limit="500")[0] == 400


def test_another_process_waits_for_a_young_answer_and_not_for_an_old_or_foreign_id(world, settings):  # noqa: F811
    """A process that did not answer finds a young response once the log writer stores it; an id older
    than GATEWAY_RESPONSE_STORE_WAIT, or not one of ours, is a 404 at once."""
    from tenants.models import VirtualKey

    settings.GATEWAY_RESPONSE_STORE_WAIT = 3.0
    key = VirtualKey.objects.filter(tenant__slug="globex").first()
    young = response_store.new_response_id()

    def store_later() -> None:
        time.sleep(0.5)
        StoredResponse.objects.create(
            id=young,
            tenant_id=key.tenant_id,
            created_at=datetime.now(UTC),
            request_id="r",
            response={"id": young},
            input_items=[],
            messages=[],
        )

    writer = threading.Thread(target=store_later)
    writer.start()
    started = time.perf_counter()
    found = asyncio.run(response_store.load(key.tenant_id, young))
    writer.join()
    assert found is not None and found["id"] == young and time.perf_counter() - started >= 0.4

    old = f"resp_{int((time.time() - 60) * 1000):012x}{'0' * 24}"
    started = time.perf_counter()
    assert asyncio.run(response_store.load(key.tenant_id, old)) is None
    assert asyncio.run(response_store.load(key.tenant_id, "resp_unknown")) is None
    assert time.perf_counter() - started < 0.5
    # Another tenant's id is not found under this one (scoped reads), however long it waits.
    settings.GATEWAY_RESPONSE_STORE_WAIT = 0.3
    assert asyncio.run(response_store.load(key.tenant_id + 10_000, young)) is None
