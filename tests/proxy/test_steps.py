"""Policy steps plug into the pipeline: rewrite the request, answer it themselves, rewrite answers
and stream events. Driven in process through pipeline.handle with the built-in mock provider."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from observability.models import CallLog
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tenants.config import apply_config
from tenants.models import hash_secret

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: acme
name: Acme Corp
providers:
  - {name: mock, kind: mock}
models:
  - name: local
    deployments: [{provider: mock, model: mock-chat}]
"""


class Shout:
    """Rewrites the prompt, answers "ping" itself, and upper-cases answers and stream events."""

    async def on_request(self, call, payload):
        text = payload["messages"][-1]["content"]
        if text == "ping":
            return orjson.dumps({"object": "chat.completion", "choices": [], "answered_by": "step"})
        payload["messages"][-1]["content"] = text + " (rewritten)"
        return None

    def on_response(self, call, body):
        return body.replace(b"mock", b"MOCK")

    def stream_filter(self, call):
        def upper(event: bytes) -> bytes | None:
            return None if b'"role":"assistant"' in event else event.replace(b"mock", b"MOCK")

        return upper


def _send(secret: str, content: str, stream: bool = False):
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": "local", "messages": [{"role": "user", "content": content}], "stream": stream}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    async def go():
        key = await state.key(hash_secret(secret))
        tenant = await state.tenant(key.tenant_id)
        tenant.steps = (Shout(),)
        response = await pipeline.handle(request, "chat/completions")
        if stream:
            chunks = [chunk async for chunk in response.events]
            return response, b"".join(chunks)
        return response, response.content

    return asyncio.run(go())


@pytest.fixture
def secret(mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on this short-lived loop
    state.clear()
    tenant, _ = apply_config(YAML)
    yield mint(tenant)
    buffer.flush_sync()  # this process's call logs, written while their tenant still exists
    state.clear()


def test_a_step_rewrites_the_request_and_the_answer(secret):
    response, body = _send(secret, "hello")
    assert response.status_code == 200
    content = orjson.loads(body)["choices"][0]["message"]["content"]
    assert content.endswith("hello (rewritten)")
    assert "MOCK" in content and "mock" not in content


def test_a_step_can_answer_without_calling_a_provider(secret):
    response, body = _send(secret, "ping")
    assert orjson.loads(body)["answered_by"] == "step"
    assert response["x-gateway-attempts"] == "0"
    buffer.flush_sync()
    row = CallLog.objects.get(request_id=response["x-request-id"])
    assert (row.status_code, row.attempts, row.provider) == (200, [], "")


def test_a_step_filters_each_stream_event(secret):
    _response, body = _send(secret, "hello", stream=True)
    assert b'"role":"assistant"' not in body  # held back by the filter
    assert b"MOCK" in body and b"mock" not in body.replace(b"chatcmpl-mock", b"")
    assert body.rstrip().endswith(b"data: [DONE]")
