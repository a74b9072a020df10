"""The OpenAI SDK through a real gateway to the fake Anthropic upstream: chat, tools, thinking, errors."""

from __future__ import annotations

import json

import pytest

from observability.models import CallLog
from tests.fakes.anthropic_upstream import API_KEY, DEFAULT_TEXT
from tests.helpers import wait_for

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

TOOL_USE = {"type": "tool_use", "id": "toolu_01Paris", "name": "get_weather", "input": {"city": "Paris", "unit": "C"}}

THOUGHT = {"type": "thinking", "thinking": "Paris is in France. I should check the weather."}


def test_alice_uses_claude_through_the_gateway_with_the_openai_sdk(
    gateway_factory, fake_anthropic, mint, monkeypatch, django_db_blocker
):
    import openai

    from tenants.config import apply_config

    fake_anthropic.reset()
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", API_KEY)
    yaml = "\n".join(
        [
            "tenant: acme",
            "name: Acme Corp",
            "providers:",
            f"  - {{name: claude, kind: anthropic, base_url: '{fake_anthropic.base_url}', api_key: env:ANTHROPIC_TEST_KEY}}",
            "models:",
            "  - name: claude",
            "    deployments:",
            "      - {provider: claude, model: claude-sonnet-4-5}",
        ]
    )
    acme, _changes = apply_config(yaml + "\n")
    secret = mint(acme, name="alice-app")
    gateway = gateway_factory()
    client = openai.OpenAI(api_key=secret, base_url=f"{gateway.url}/v1", max_retries=0)

    answer = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == DEFAULT_TEXT
    assert answer.usage.prompt_tokens > 0

    fake_anthropic.script("claude-sonnet-4-5", {"content": [TOOL_USE]})
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris", "unit": "C"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # Thinking through the real gateway: the SDK keeps reasoning_content and thinking_blocks on the message,
    # Alice sends the turn back as she got it, and the log records Anthropic's own stop reason.
    fake_anthropic.script("claude-sonnet-4-5", {"content": [THOUGHT, TOOL_USE]})
    ask = [{"role": "user", "content": "Paris?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=ask, tools=[WEATHER_TOOL], reasoning_effort="low"
    )
    message = raw.parse().choices[0].message
    assert message.model_extra["reasoning_content"] == THOUGHT["thinking"]
    turn = message.model_dump(exclude_none=True)
    tool = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18C"}
    again = client.chat.completions.create(
        model="claude", messages=[*ask, turn, tool], tools=[WEATHER_TOOL], reasoning_effort="low"
    )
    assert again.choices[0].message.content == DEFAULT_TEXT
    assert fake_anthropic.requests[-1].body["messages"][1]["content"][0]["type"] == "thinking"
    with django_db_blocker.unblock():
        assert wait_for(lambda: CallLog.objects.filter(request_id=raw.headers["x-request-id"]).exists())
        row = CallLog.objects.get(request_id=raw.headers["x-request-id"])
    assert row.attempts[-1]["finish_reason"] == "tool_use"

    with pytest.raises(openai.RateLimitError):
        fake_anthropic.script("claude-sonnet-4-5", {"status": 429}, {"status": 429}, {"status": 429})
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert all(r.headers["x-api-key"] == API_KEY for r in fake_anthropic.requests)
