"""Deadlines bound everything: the route's `timeout_s` covers a stream to its last byte, and a
deployment that hangs cannot use up the deadline before the model's fallback is tried.

Driven in process through pipeline.handle against the fake OpenAI upstream (a real HTTP server on
loopback). Alice's tenant has a model whose stream stalls after its first chunk, and a model whose
only deployment hangs, with a fallback."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from observability.models import CallLog
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tenants.config import apply_config

pytestmark = pytest.mark.django_db(transaction=True)


def _yaml(base_url: str) -> str:
    return f"""
tenant: acme
name: Acme Corp
providers:
  - name: main
    kind: openai-compatible
    base_url: {base_url}
    api_key: env:FAKE_UPSTREAM_KEY
  - {{name: mock, kind: mock}}
models:
  - name: stalls
    timeout_s: 1
    retries: 0
    deployments: [{{provider: main, model: stall-stream}}]
  - name: stalls-long
    timeout_s: 30
    retries: 0
    deployments: [{{provider: main, model: stall-stream}}]
  - name: hangs
    timeout_s: 4
    retries: 0
    deployments: [{{provider: main, model: hanging}}]
    fallbacks: [local]
  - name: local
    deployments: [{{provider: mock, model: mock-chat}}]
  - name: drip
    timeout_s: 30
    deployments: [{{provider: main, model: drip-stream}}]
"""


@pytest.fixture
def alice_key(upstream, mint, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-test-0001")
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    state.clear()
    tenant, _ = apply_config(_yaml(upstream.base_url))
    yield mint(tenant, name="alice-app")
    buffer.flush_sync()
    state.clear()


def _call(secret: str, model: str, stream: bool) -> tuple[object, bytes, float]:
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    async def go():
        started = time.perf_counter()
        response = await pipeline.handle(request, "chat/completions")
        if stream and response.status_code == 200:
            body = b"".join([chunk async for chunk in response.events])
        else:
            body = response.content
        return response, body, time.perf_counter() - started

    return asyncio.run(go())


def _events(body: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n\n") if line.startswith(b"data: {")]


def test_a_stream_that_stalls_after_its_first_chunk_ends_at_the_deadline_with_an_error_event(alice_key):
    response, body, elapsed = _call(alice_key, "stalls", stream=True)
    assert response.status_code == 200  # the first chunk had gone out: the error comes as an event
    events = _events(body)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert "timeout (1 s)" in events[-1]["error"]["message"]
    assert b"[DONE]" not in body
    assert 0.9 < elapsed < 10  # the model's 1 s, not the transport's 600 s read timeout
    buffer.flush_sync()
    row = CallLog.objects.get(request_id=response["x-request-id"])
    assert (row.status_code, row.error_type) == (504, "upstream_timeout")


def test_a_stream_that_goes_quiet_ends_at_the_idle_timeout_long_before_the_deadline(alice_key, settings):
    settings.GATEWAY_STREAM_IDLE_TIMEOUT = 0.5
    response, body, elapsed = _call(alice_key, "stalls-long", stream=True)
    events = _events(body)
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert "sent nothing for 0.5 s" in events[-1]["error"]["message"]
    assert 0.4 < elapsed < 5  # the idle 0.5 s, not the model's 30 s
    buffer.flush_sync()
    row = CallLog.objects.get(request_id=response["x-request-id"])
    assert (row.status_code, row.error_type) == (504, "upstream_timeout")


def test_a_stream_that_keeps_sending_is_not_cut_by_the_idle_timeout(alice_key, settings):
    settings.GATEWAY_STREAM_IDLE_TIMEOUT = 0.2
    # A chunk every 100 ms for about a second, five times the idle timeout in all: it finishes cleanly.
    _response, body, elapsed = _call(alice_key, "drip", stream=True)
    assert b"[DONE]" in body and b'"error"' not in body
    assert elapsed > 0.4


def test_a_hanging_deployment_leaves_time_for_the_fallback(alice_key, upstream):
    upstream.script("hanging", {"hang": True})
    response, body, elapsed = _call(alice_key, "hangs", stream=False)
    assert response.status_code == 200, body
    assert response["x-gateway-fallback"] == "local"
    assert "mock model" in orjson.loads(body)["choices"][0]["message"]["content"]
    assert 1.5 < elapsed < 4  # half of the 4 s deadline for the hanging one, then the fallback
    buffer.flush_sync()
    row = CallLog.objects.get(request_id=response["x-request-id"])
    assert row.status_code == 200
    assert [a["error"] for a in row.attempts] == ["upstream_timeout", ""]


def test_the_last_candidate_gets_the_whole_deadline(alice_key, upstream):
    upstream.script("stall-stream", {"delay": 0.6})  # slow to its first byte, but within 1 s
    response, body, _elapsed = _call(alice_key, "stalls", stream=False)
    # Alone on its model, the deployment is not cut at half the deadline (0.5 s).
    assert response.status_code == 200, body


def test_a_connection_the_upstream_closes_is_named_as_such_not_as_a_timeout(alice_key, upstream):
    upstream.script("stall-stream", {"reset": True})  # the upstream drops the connection, no answer
    response, body, _elapsed = _call(alice_key, "stalls", stream=False)
    error = orjson.loads(body)["error"]
    assert response.status_code == 502 and error["code"] == "upstream_unreachable"
    assert "ConnectTimeout" not in error["message"] and "Disconnected" in error["message"]
