"""The built-in mock provider answers tool and structured-output code as a real model would: tool calls
built from the tools' schemas (honouring tool_choice), JSON content that satisfies a json_schema
response_format, and `n` choices, in JSON and streamed answers that OpenAI's schema accepts. In process
through pipeline.handle, so the quickstart's `mock` model can run such code without a provider account."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tenants.config import apply_config
from tests.openapi import validate

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

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
PERSON = {
    "name": "person",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"$ref": "#/$defs/address"},
            "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["name", "age", "tags", "address", "nickname"],
        "additionalProperties": False,
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            }
        },
    },
}


@pytest.fixture
def alice(mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)
    state.clear()
    tenant, _ = apply_config(YAML)
    yield mint(tenant, name="alice-app")
    buffer.flush_sync()
    state.clear()


def _call(secret: str, payload: dict) -> tuple[int, bytes]:
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": "local", **payload}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    async def go():
        response = await pipeline.handle(request, "chat/completions")
        if payload.get("stream"):
            return response.status_code, b"".join([chunk async for chunk in response.events])
        return response.status_code, response.content

    return asyncio.run(go())


def _chunks(raw: bytes) -> list[dict]:
    events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    chunks = [orjson.loads(e[6:]) for e in events]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return chunks


ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_a_tool_call_is_built_from_the_tools_schema_and_ends_the_round_trip_after_its_result(alice):
    status, body = _call(alice, {"messages": ASK, "tools": [WEATHER]})
    assert status == 200
    answer = orjson.loads(body)
    validate(answer, "CreateChatCompletionResponse")
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "mock", "unit": "celsius", "days": 1}
    # With the tool's result the model answers in words (tool_choice auto), so agent loops end.
    follow_up = [*ASK, choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"}]
    status, body = _call(alice, {"messages": follow_up, "tools": [WEATHER]})
    assert orjson.loads(body)["choices"][0]["finish_reason"] == "stop"
    # tool_choice none: words; a named function: that one, even after a tool result.
    none = orjson.loads(_call(alice, {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"})[1])
    assert "tool_calls" not in none["choices"][0]["message"]
    named = {"type": "function", "function": {"name": "get_weather"}}
    forced = orjson.loads(_call(alice, {"messages": follow_up, "tools": [WEATHER], "tool_choice": named})[1])
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_a_streamed_tool_call_arrives_as_openai_streams_it(alice):
    status, raw = _call(alice, {"messages": ASK, "tools": [WEATHER], "stream": True})
    assert status == 200
    chunks = _chunks(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    arguments = "".join(d["tool_calls"][0]["function"].get("arguments", "") for d in deltas if d.get("tool_calls"))
    assert orjson.loads(arguments)["unit"] == "celsius"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_structured_outputs_satisfy_the_schema_and_n_gives_n_choices(alice):
    fmt = {"type": "json_schema", "json_schema": PERSON}
    status, body = _call(alice, {"messages": ASK, "response_format": fmt, "n": 3})
    assert status == 200
    answer = orjson.loads(body)
    validate(answer, "CreateChatCompletionResponse")
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    person = orjson.loads(answer["choices"][0]["message"]["content"])
    assert person == {"name": "mock", "age": 0, "tags": ["mock"], "address": {"city": "mock"}, "nickname": "mock"}
    status, raw = _call(alice, {"messages": ASK, "response_format": fmt, "stream": True})
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in _chunks(raw) if c["choices"])
    assert orjson.loads(text) == person
    plain = orjson.loads(_call(alice, {"messages": ASK, "response_format": {"type": "json_object"}})[1])
    assert "answer" in orjson.loads(plain["choices"][0]["message"]["content"])
