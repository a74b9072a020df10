"""The OpenAI SDK through a real gateway to the fake Gemini upstream."""

from __future__ import annotations

import pytest

from tests.fakes.gemini_upstream import API_KEY

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "strict": True,
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": ["integer", "null"], "minimum": 1},
                "units": {"type": "string", "enum": ["c", "f"], "const": "c"},
                "tags": {"type": "array", "items": {"type": "string", "additionalProperties": False}},
            },
            "required": ["city"],
        },
    },
}


def test_the_openai_sdk_talks_to_gemini_through_the_gateway(gateway, gemini, mint, monkeypatch):
    import openai

    from observability.models import CallLog
    from tenants.config import apply_config
    from tests.helpers import wait_for

    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    acme, _changes = apply_config(
        "tenant: acme\nname: Acme Corp\nproviders:\n"
        f"  - {{name: gemini, kind: gemini, base_url: '{gemini.base_url}', api_key: env:GEMINI_API_KEY}}\n"
        "models:\n"
        "  - {name: flash, deployments: [{provider: gemini, model: gemini-2.0-flash}]}\n"
        "  - {name: flash-tools, deployments: [{provider: gemini, model: tools}]}\n"
        "  - {name: embed, deployments: [{provider: gemini, model: text-embedding-004}]}\n"
    )
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(acme), max_retries=0)

    completion = client.chat.completions.create(model="flash", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "Hello from the fake Gemini."

    stream = client.chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake Gemini."
    assert chunks[-1].usage.completion_tokens == 6  # cumulative usage counted once, not summed

    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="flash-tools", messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    second = client.chat.completions.create(model="flash-tools", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == 'The tool get_weather said {"temp_c": 21}'

    vectors = client.embeddings.create(model="embed", input=["hello"])  # the SDK asks for base64
    assert vectors.data[0].embedding == pytest.approx([0.5, -0.25, 0.5])

    def stream_log():
        return CallLog.objects.filter(tenant_id=acme.id, requested_model="flash", completion_tokens=6).count() == 2

    assert wait_for(stream_log)
