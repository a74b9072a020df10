"""Anthropic in, Anthropic out is a relay: Alice's `anthropic` SDK through a real gateway to the fake
Anthropic upstream. Her own request body goes up with only `model` swapped, the answer, stream events
and errors come back as Anthropic sent them, and the gateway still logs tokens and cost from the usage.
A fallback to an OpenAI deployment in the same plan is translated as before."""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import httpx
import pytest

from gateway_project.common.money import to_pico
from observability.models import CallLog
from tenants.config import apply_config
from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic
from tests.helpers import UPSTREAM_KEY, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "Hi"}]
FUTURE = {"some_future_field": {"mode": "deep", "levels": [1, 2, 3]}}
# claude-sonnet-4-5's shipped prices, dollars per million tokens (billing/data/prices.json).
INPUT, CACHED, CACHE_WRITE, OUTPUT = Decimal("3.00"), Decimal("0.30"), Decimal("3.75"), Decimal("15.00")


def acme_yaml(claude_url: str, openai_url: str) -> str:
    return f"""
tenant: acme
name: Acme Corp
providers:
  - {{name: claude, kind: anthropic, base_url: "{claude_url}", api_key: "env:ANTHROPIC_TEST_KEY"}}
  - {{name: claude-eu, kind: anthropic, base_url: "{claude_url}", api_key: "env:ANTHROPIC_TEST_KEY"}}
  - {{name: main, kind: openai-compatible, base_url: "{openai_url}", api_key: "env:FAKE_UPSTREAM_KEY"}}
models:
  - name: claude
    retries: 1
    deployments:
      - {{provider: claude, model: claude-sonnet-4-5}}
  - name: twin
    retries: 1
    cooldown: {{failures: 50, window_s: 60, cooldown_s: 30}}
    deployments:
      - {{provider: claude, model: claude-a}}
      - {{provider: claude-eu, model: claude-b}}
  - name: mixed
    retries: 0
    cooldown: {{failures: 50, window_s: 60, cooldown_s: 30}}
    deployments:
      - {{provider: claude, model: claude-m}}
      - {{provider: main, model: gpt-4o-mini}}
"""


@pytest.fixture(scope="module")
def fake_claude():
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def world(fake_claude, upstream, monkeypatch, mint, gateway_factory):
    fake_claude.reset()
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", API_KEY)
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    acme, _changes = apply_config(acme_yaml(fake_claude.base_url, upstream.base_url))
    gateway = gateway_factory(extra_env={"GATEWAY_RETRY_BACKOFF": "0.01"})
    key = mint(acme)
    alice = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    return gateway, key, alice, fake_claude


def logged(request_id: str) -> CallLog:
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists())
    return CallLog.objects.get(request_id=request_id)


def dollars_to_pico(plain: int, cached: int, written: int, output: int) -> int:
    return to_pico((plain * INPUT + cached * CACHED + written * CACHE_WRITE + output * OUTPUT) / 1_000_000)


def test_alices_body_goes_up_untouched_but_for_the_model_and_the_answer_comes_back_as_sent(world):
    _gateway, _key, alice, claude = world
    answer = {
        "id": "msg_01Future",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Deep answer."}, {"type": "future_block", "payload": {"x": 1}}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 50,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
            "service_tier": "standard",
        },
        "some_future_answer_field": {"kept": True},
    }
    raw_answer = json.dumps(answer, indent=1).encode()  # not orjson's spacing: re-encoding would show
    claude.script("claude-sonnet-4-5", {"raw": raw_answer, "status": 200, "content_type": "application/json"})
    system = [{"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]

    raw = alice.messages.with_raw_response.create(
        model="claude", max_tokens=50, system=system, messages=ASK, extra_body=FUTURE
    )

    assert raw.http_response.content == raw_answer
    sent = claude.requests[-1]
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.body == {"model": "claude-sonnet-4-5", "max_tokens": 50, "system": system, "messages": ASK, **FUTURE}
    row = logged(raw.headers["x-request-id"])
    assert row.status_code == 200 and row.endpoint == "messages" and row.upstream_model == "claude-sonnet-4-5"
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (170, 7, 177)
    assert row.cost_picodollars == dollars_to_pico(20, 100, 50, 7) and not row.cost_estimated


def test_a_stream_is_relayed_byte_for_byte_and_billed_from_its_usage(world):
    gateway, key, alice, claude = world
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 300, "output_tokens": 9}
    claude.script("claude-sonnet-4-5", {"usage": usage})
    body = {"model": "claude", "max_tokens": 40, "messages": ASK, "stream": True, **FUTURE}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", headers={"x-api-key": key}, json=body) as response:
        received = b"".join(response.iter_raw())
        request_id = response.headers["x-request-id"]
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert received == b"".join(claude.sent_events) and b"event: message_stop" in received
    assert claude.requests[-1].body == {**body, "model": "claude-sonnet-4-5"}
    row = logged(request_id)
    assert row.stream and row.status_code == 200
    assert (row.prompt_tokens, row.completion_tokens) == (312, 9)
    assert row.cost_picodollars == dollars_to_pico(12, 300, 0, 9) and not row.cost_estimated

    # Event types the gateway has never heard of pass as well, and the SDK reads the relay as usual.
    frames = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                              "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
                                              "stop_sequence": None,
                                              "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "some_future_event", "detail": {"n": 1}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Relayed."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]  # fmt: skip
    sse = b"".join(f"event: {f['type']}\ndata: {json.dumps(f)}\n\n".encode() for f in frames)
    claude.script("claude-sonnet-4-5", {"raw": sse, "status": 200, "content_type": "text/event-stream"})
    with httpx.stream("POST", f"{gateway.url}/v1/messages", headers={"x-api-key": key}, json=body) as response:
        assert b"".join(response.iter_raw()) == sse
        request_id = response.headers["x-request-id"]
    row = logged(request_id)
    assert (row.prompt_tokens, row.completion_tokens) == (5, 3)

    with alice.messages.stream(model="claude", max_tokens=40, messages=ASK) as stream:
        assert "".join(stream.text_stream) == "Hello from the fake Claude."
        final = stream.get_final_message()
    assert final.model == "claude-sonnet-4-5" and final.usage.output_tokens > 1


def test_anthropic_errors_are_retried_and_fail_over_then_relayed_in_anthropics_shape(world):
    _gateway, _key, alice, claude = world
    claude.script("claude-a", {"status": 429, "headers": {"retry-after": "0"}})
    raw = alice.messages.with_raw_response.create(model="twin", max_tokens=20, messages=ASK)
    assert raw.parse().content[0].text == "Hello from the fake Claude."
    assert [a["status"] for a in logged(raw.headers["x-request-id"]).attempts] == [429, 200]

    claude.script("claude-a", {"status": 529}, {"status": 529})
    raw = alice.messages.with_raw_response.create(model="twin", max_tokens=20, messages=ASK)
    assert raw.headers["x-gateway-model"] == "claude-eu/claude-b"
    row = logged(raw.headers["x-request-id"])
    assert [(a["model"], a["status"]) for a in row.attempts] == [
        ("claude-a", 529),
        ("claude-a", 529),
        ("claude-b", 200),
    ]

    # Every try overloaded: Anthropic's own 529 and body reach Alice, streamed or not.
    claude.script("claude-a", {"status": 529}, {"status": 529})
    claude.script("claude-b", {"status": 529}, {"status": 529})
    with pytest.raises(anthropic.APIStatusError) as caught:
        alice.messages.create(model="twin", max_tokens=20, messages=ASK)
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_fake_error",
    }
    row = logged(caught.value.response.headers["x-request-id"])
    assert row.status_code == 529 and row.error_type == "overloaded_error" and len(row.attempts) == 4

    # A request error is final, relayed as it came, but never with the deployment's key in it.
    claude.script("claude-a", {"status": 400, "message": f"max_tokens too large for key {API_KEY}"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        alice.messages.stream(model="twin", max_tokens=20, messages=ASK).__enter__()
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("max_tokens too large for key")
    assert API_KEY not in caught.value.response.text
    assert len(claude.requests) == 1 + 1 + 3 + 4 + 1


def test_a_fallback_from_anthropic_to_an_openai_deployment_is_translated(world, upstream):
    _gateway, _key, alice, claude = world
    claude.script("claude-m", {"status": 529})
    raw = alice.messages.with_raw_response.create(model="mixed", max_tokens=20, messages=ASK, extra_body=FUTURE)
    message = raw.parse()
    assert raw.headers["x-gateway-model"] == "main/gpt-4o-mini"
    assert message.content[0].text == "Hello from the fake upstream." and message.model == "mixed"
    # The OpenAI deployment got the translated chat payload, not Alice's Anthropic body.
    sent = upstream.requests[-1].body
    assert sent["model"] == "gpt-4o-mini" and sent["messages"] == [{"role": "user", "content": "Hi"}]
    assert "some_future_field" not in sent
    row = logged(raw.headers["x-request-id"])
    assert [a["status"] for a in row.attempts] == [529, 200] and row.completion_tokens == 6

    # Streamed: the OpenAI chunks become Anthropic's events again.
    claude.script("claude-m", {"status": 529})
    with alice.messages.stream(model="mixed", max_tokens=20, messages=ASK) as stream:
        assert "".join(stream.text_stream) == "Hello from the fake upstream."
        final = stream.get_final_message()
    assert final.model == "mixed" and final.usage.output_tokens == 6

    # And when the OpenAI deployment fails last, its error is rendered in Anthropic's shape.
    claude.script("claude-m", {"status": 529})
    upstream.script("gpt-4o-mini", {"status": 500})
    with pytest.raises(anthropic.InternalServerError) as caught:
        alice.messages.create(model="mixed", max_tokens=20, messages=ASK)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "api_error"


def test_blocks_and_server_tools_the_gateway_does_not_know_are_relayed_with_alices_beta_header(world):
    gateway, key, _alice, claude = world
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    used = {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "paris"}}
    found = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": [{"type": "web_search_result"}]}
    cited = {"type": "search_result", "source": "https://example.org", "title": "T", "content": []}
    body = {
        "model": "claude",
        "max_tokens": 2000,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [search, {"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [used, found, {"type": "text", "text": "Found it."}]},
            {"role": "user", "content": [cited, {"type": "text", "text": "And this?"}]},
        ],
    }
    headers = {"x-api-key": key, "anthropic-beta": "web-search-2025-03-05", "anthropic-version": "2023-06-01"}
    claude.script("claude-sonnet-4-5", {"content": [used, found, {"type": "text", "text": "Sunny."}]})
    response = httpx.post(f"{gateway.url}/v1/messages", headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert [b["type"] for b in response.json()["content"]] == ["server_tool_use", "web_search_tool_result", "text"]
    sent = claude.requests[-1]
    assert sent.body == {**body, "model": "claude-sonnet-4-5"}
    assert sent.headers["anthropic-beta"] == "web-search-2025-03-05"
    row = logged(response.headers["x-request-id"])
    assert row.status_code == 200 and row.attempts[-1]["finish_reason"] == "end_turn"

    # Streamed the same; the stop reason is read from message_delta on the way through.
    claude.script("claude-sonnet-4-5", {"content": [used, found], "stop_reason": "pause_turn"})
    with httpx.stream("POST", f"{gateway.url}/v1/messages", headers=headers, json={**body, "stream": True}) as r:
        assert b"".join(r.iter_raw()) == b"".join(claude.sent_events)
        request_id = r.headers["x-request-id"]
    assert claude.requests[-1].headers["anthropic-beta"] == "web-search-2025-03-05"
    assert logged(request_id).attempts[-1]["finish_reason"] == "pause_turn"

    # What the gateway itself needs is still checked, in Anthropic's shape, before any upstream call.
    calls = len(claude.requests)
    for broken, says in [
        ({**body, "max_tokens": None}, "max_tokens: Field required"),
        ({**body, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({**body, "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
    ]:
        response = httpx.post(f"{gateway.url}/v1/messages", headers=headers, json=broken)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        assert says in response.json()["error"]["message"]
    assert len(claude.requests) == calls
