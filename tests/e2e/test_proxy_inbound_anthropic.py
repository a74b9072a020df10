"""The Anthropic SDK against a real gateway: /v1/messages on OpenAI and Anthropic upstreams."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from observability.models import CallLog
from tests.helpers import wait_for

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def logs_for(request_id: str) -> list[CallLog]:
    return list(CallLog.objects.filter(request_id=request_id))


@pytest.mark.django_db(transaction=True)
def test_the_anthropic_sdk_chats_streams_and_calls_tools_through_an_openai_upstream(
    gateway, make_tenant, mint, upstream
):
    acme = make_tenant("acme", {"claude-for-alice": "gpt-4o-mini", "tools": "tool-call"})
    alice = anthropic.Anthropic(base_url=gateway.url, api_key=mint(acme), max_retries=0)
    ask = [{"role": "user", "content": "Say hello"}]

    raw = alice.messages.with_raw_response.create(
        model="claude-for-alice", max_tokens=64, system="Be brief.", messages=ask, metadata={"user_id": "alice"}
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == "claude-for-alice"
    assert message.content[0].text == "Hello from the fake upstream."
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 6 and message.usage.input_tokens > 0
    sent = upstream.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 64
    request_id = raw.headers["x-request-id"]
    assert message._request_id == request_id  # the anthropic SDK reads Anthropic's own `request-id` header
    assert wait_for(lambda: len(logs_for(request_id)) == 1)
    log = logs_for(request_id)[0]
    assert log.tenant_id == acme.id and log.status_code == 200 and log.endpoint == "messages"
    assert log.completion_tokens == 6 and log.end_user == "alice"

    # The SDK's stream helper collects the text and the usage from message_delta.
    with alice.messages.stream(model="claude-for-alice", max_tokens=64, messages=ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 6 and final.usage.input_tokens > 0

    # Tools round trip: tool_use out, tool_result back in, then the answer.
    weather = {**WEATHER_TOOL}
    called = alice.messages.create(model="tools", max_tokens=64, messages=ask, tools=[weather])
    assert called.stop_reason == "tool_use"
    use = called.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris", "unit": "celsius"}
    with alice.messages.stream(model="tools", max_tokens=64, messages=ask, tools=[weather]) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use" and streamed.content[0].input == use.input
    assert streamed.content[0].id == use.id
    follow_up = [
        *ask,
        {"role": "assistant", "content": called.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21C and sunny"}]},
    ]
    answer = alice.messages.create(model="tools", max_tokens=64, messages=follow_up, tools=[weather])
    assert answer.content[0].text == "Hello from the fake upstream."
    sent = upstream.requests[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "21C and sunny"}

    counted = alice.messages.count_tokens(model="claude-for-alice", messages=ask, system="Be brief.")
    assert counted.input_tokens > 0
    calls_before = len(upstream.requests)
    assert (
        alice.messages.count_tokens(
            model="claude-for-alice", messages=[{"role": "user", "content": "x" * 4000}]
        ).input_tokens
        > counted.input_tokens + 900
    )
    assert len(upstream.requests) == calls_before  # counting never calls a provider


@pytest.mark.django_db(transaction=True)
def test_the_anthropic_sdk_gets_errors_in_anthropics_shape(gateway, make_tenant, mint, upstream):
    acme = make_tenant("acme", {"claude-for-alice": "gpt-4o-mini", "limited": "fail-429"})
    key = mint(acme)
    ask = [{"role": "user", "content": "hi"}]

    stranger = anthropic.Anthropic(base_url=gateway.url, api_key="sk-gw-not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        stranger.messages.create(model="claude-for-alice", max_tokens=5, messages=ask)
    assert caught.value.status_code == 401 and caught.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.count_tokens(model="claude-for-alice", messages=ask)

    # Authorization: Bearer works as well as x-api-key (the SDK's auth_token).
    alice = anthropic.Anthropic(base_url=gateway.url, auth_token=key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        alice.messages.create(model="claude-of-bob", max_tokens=5, messages=ask)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(anthropic.RateLimitError) as caught:
        alice.messages.create(model="limited", max_tokens=5, messages=ask)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["error"] == {"type": "rate_limit_error", "message": "Rate limit reached for requests"}
    assert caught.value.body["request_id"] == caught.value.response.headers["x-request-id"]

    missing = httpx.post(
        f"{gateway.url}/v1/messages", headers={"x-api-key": key}, json={"model": "claude-for-alice", "messages": ask}
    )
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


@pytest.mark.django_db(transaction=True)
def test_the_anthropic_sdk_reaches_an_anthropic_upstream_through_the_translation(gateway_factory, mint, monkeypatch):
    from tenants.config import apply_config
    from tests.fakes.anthropic_upstream import API_KEY, DEFAULT_TEXT, FakeAnthropic

    claude = FakeAnthropic().start()
    try:
        monkeypatch.setenv("ANTHROPIC_TEST_KEY", API_KEY)
        yaml = "\n".join(
            [
                "tenant: acme",
                "name: Acme Corp",
                "providers:",
                f"  - {{name: claude, kind: anthropic, base_url: '{claude.base_url}', api_key: env:ANTHROPIC_TEST_KEY}}",
                "models:",
                "  - name: claude",
                "    deployments:",
                "      - {provider: claude, model: claude-sonnet-4-5}",
            ]
        )
        acme, _changes = apply_config(yaml + "\n")
        alice = anthropic.Anthropic(base_url=gateway_factory().url, api_key=mint(acme), max_retries=0)
        system = [{"type": "text", "text": "Long shared context.", "cache_control": {"type": "ephemeral"}}]
        ask = [{"role": "user", "content": "Hi"}]

        message = alice.messages.create(model="claude", max_tokens=50, system=system, messages=ask)
        # Anthropic to Anthropic is a relay (tests/e2e/test_proxy_relay_anthropic.py): the answer is Claude's own.
        assert message.content[0].text == DEFAULT_TEXT and message.model == "claude-sonnet-4-5"
        sent = claude.requests[-1]
        assert sent.headers["x-api-key"] == API_KEY and sent.body["model"] == "claude-sonnet-4-5"
        # The cache breakpoint survives the trip through the OpenAI-format pipeline.
        assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}

        with alice.messages.stream(model="claude", max_tokens=50, messages=ask) as stream:
            assert "".join(stream.text_stream) == DEFAULT_TEXT
            assert stream.get_final_message().usage.output_tokens > 0

        tool_use = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
        claude.script("claude-sonnet-4-5", {"content": [tool_use]})
        with alice.messages.stream(model="claude", max_tokens=50, messages=ask, tools=[WEATHER_TOOL]) as stream:
            called = stream.get_final_message()
        assert called.stop_reason == "tool_use"
        assert (called.content[0].id, called.content[0].input) == ("toolu_01A", {"city": "Paris"})
        follow_up = [
            *ask,
            {"role": "assistant", "content": called.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "21C"}]},
        ]
        alice.messages.create(model="claude", max_tokens=50, messages=follow_up, tools=[WEATHER_TOOL])
        turns = claude.requests[-1].body["messages"]
        assert turns[-2]["content"][-1]["type"] == "tool_use" and turns[-2]["content"][-1]["id"] == "toolu_01A"
        assert (
            turns[-1]["content"][0]["type"] == "tool_result" and turns[-1]["content"][0]["tool_use_id"] == "toolu_01A"
        )
    finally:
        claude.stop()
