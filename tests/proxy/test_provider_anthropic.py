"""The Anthropic adapter against a loopback server speaking Anthropic's Messages API.

Requests are checked on the wire (golden files of the translated bodies, in tests/proxy/golden/anthropic;
regenerate with UPDATE_GOLDEN=1 and review the diff), answers, streams, usage and errors after
translation back to OpenAI's format. One test runs Alice's openai SDK through a real gateway.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from gateway_project.common.money import Price
from proxy.providers import adapter_for
from proxy.providers.anthropic import CLIENT_HEADERS
from proxy.providers.base import CallContext, UpstreamResult, UpstreamStream
from proxy.snapshot import Deployment
from proxy.upstream import close_client
from tests.fakes.anthropic_upstream import API_KEY, DEFAULT_TEXT, FakeAnthropic, signature

GOLDEN = Path(__file__).parent / "golden" / "anthropic"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_USE = {"type": "tool_use", "id": "toolu_01Paris", "name": "get_weather", "input": {"city": "Paris", "unit": "C"}}


def deployment(fake: FakeAnthropic, upstream_model: str = "claude-sonnet-4-5", **extra) -> Deployment:
    dep = Deployment(
        id=1,
        model_name="claude",
        provider_name="claude",
        kind="anthropic",
        base_url=fake.base_url,
        api_key=API_KEY,
        upstream_model=upstream_model,
        **extra,
    )
    adapter_for("anthropic").prepare(dep)
    return dep


def send(dep: Deployment, payload: dict, endpoint: str = "chat/completions") -> UpstreamResult:
    async def go():
        try:
            return await adapter_for("anthropic").send(
                dep, payload, CallContext(request_id="r1", endpoint=endpoint, stream=False)
            )
        finally:
            await close_client()  # the shared client belongs to this event loop

    return asyncio.run(go())


def stream(
    dep: Deployment, payload: dict, *, wants_usage: bool = False
) -> tuple[UpstreamStream | UpstreamResult, list]:
    """Open a stream and read it to the end: (the stream or the error result, [parsed events])."""

    async def go():
        ctx = CallContext(request_id="r1", endpoint="chat/completions", stream=True, client_wants_usage=wants_usage)
        try:
            result = await adapter_for("anthropic").open_stream(dep, {**payload, "stream": True}, ctx)
            if isinstance(result, UpstreamResult):
                return result, []
            events = []
            async for event in result:
                assert event.startswith(b"data: ") and event.endswith(b"\n\n")
                data = event[6:-2]
                events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
            await result.aclose()
            return result, events
        finally:
            await close_client()

    return asyncio.run(go())


def check_golden(name: str, body: dict) -> None:
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    assert body == json.loads(path.read_text()), f"translated request differs from {path}"


def chat(messages: list, **extra) -> dict:
    return {"model": "claude", "messages": messages, **extra}


# --- requests ---------------------------------------------------------------------------------------


def test_alice_gets_a_text_answer_in_openai_format(claude):
    result = send(deployment(claude), chat([{"role": "user", "content": "Hi"}], max_tokens=50))
    assert result.status == 200, result.body
    body = orjson.loads(result.body)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": DEFAULT_TEXT, "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == result.usage
    assert result.usage["prompt_tokens"] > 0 and result.usage["completion_tokens"] > 0
    wire = claude.requests[-1]
    assert wire.path == "/v1/messages"
    assert wire.headers["x-api-key"] == API_KEY
    assert wire.headers["anthropic-version"] == "2023-06-01"
    assert wire.headers["content-type"] == "application/json"
    assert "authorization" not in {k.lower() for k in wire.headers}
    assert wire.body["max_tokens"] == 50 and wire.body["model"] == "claude-sonnet-4-5"


def test_multi_turn_with_system_prompts_is_translated(claude):
    payload = chat(
        [
            {"role": "system", "content": "You are terse."},
            {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        ],
        max_completion_tokens=100,
        stop="END",
        temperature=0.2,
        top_p=0.9,
        user="alice@acme",
        metadata={"team": "web"},  # OpenAI's stored-completion tags: ignored (README), not sent
    )
    before = copy.deepcopy(payload)
    assert send(deployment(claude), payload).status == 200
    assert payload == before  # the attempt loop may send the same payload to another deployment
    check_golden("multi_turn_system", claude.requests[-1].body)


def test_cache_control_on_system_messages_and_tools_passes_through(claude):
    payload = chat(
        [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "A long, stable preamble.", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "user", "content": "First question", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}],
    )
    assert send(deployment(claude), payload).status == 200
    check_golden("cache_control", claude.requests[-1].body)


def test_images_become_base64_and_url_sources(claude):
    payload = chat(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
                ],
            }
        ]
    )
    assert send(deployment(claude), payload).status == 200
    check_golden("images", claude.requests[-1].body)


def test_max_tokens_defaults_to_the_models_known_output_limit(claude):
    price = Price(input=Decimal(3), output=Decimal(15), max_output=64000)
    send(deployment(claude, price=price), chat([{"role": "user", "content": "Hi"}]))
    assert claude.requests[-1].body["max_tokens"] == 64000
    send(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    assert claude.requests[-1].body["max_tokens"] == 4096  # unknown model


def test_a_request_anthropic_cannot_express_is_refused_before_any_call(claude):
    result = send(deployment(claude), chat([{"role": "user", "content": "Hi"}], n=3))
    assert result.status == 400 and b"n must be 1" in result.body
    result = send(deployment(claude), chat([{"role": "user", "content": [{"type": "input_audio"}]}]))
    assert result.status == 400 and b"input_audio" in result.body
    assert claude.requests == []


def test_embeddings_are_refused_with_a_clear_error(claude):
    result = send(deployment(claude), {"model": "claude", "input": "hi"}, endpoint="embeddings")
    assert result.status == 400
    assert "no embeddings endpoint" in orjson.loads(result.body)["error"]["message"]
    assert claude.requests == []


# --- tools ------------------------------------------------------------------------------------------


def test_tools_round_trip_in_json(claude):
    dep = deployment(claude)
    claude.script("claude-sonnet-4-5", {"content": [{"type": "text", "text": "Let me check."}, TOOL_USE]})
    first = chat([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], tool_choice="required")
    result = send(dep, first)
    assert result.status == 200, result.body
    choice = orjson.loads(result.body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01Paris" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "C"}
    check_golden("tools_first_turn", claude.requests[-1].body)

    # The client answers with two tool results: one user turn holds both, after the assistant's tool_use.
    second_call = {"id": "toolu_02Lyon", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    second = chat(
        [
            *first["messages"],
            {"role": "assistant", "content": choice["message"]["content"], "tool_calls": [call, second_call]},
            {"role": "tool", "tool_call_id": "toolu_01Paris", "content": "18C and sunny"},
            {"role": "tool", "tool_call_id": "toolu_02Lyon", "content": [{"type": "text", "text": "unknown"}]},
        ],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert send(dep, second).status == 200
    check_golden("tools_results", claude.requests[-1].body)


def test_tool_calls_stream_with_their_arguments(claude):
    claude.script("claude-sonnet-4-5", {"content": [{"type": "text", "text": "Checking now."}, TOOL_USE]})
    result, events = stream(deployment(claude), chat([{"role": "user", "content": "Paris?"}], tools=[WEATHER_TOOL]))
    assert isinstance(result, UpstreamStream) and not result.error_type
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01FakeAnthropic" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Checking now."
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01Paris",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(calls) > 2  # the arguments arrive in pieces, as Anthropic sent them
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert json.loads(arguments) == {"city": "Paris", "unit": "C"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["tool_calls"]
    # Usage is known but hidden: the client did not ask for it.
    assert result.usage["completion_tokens"] > 0
    assert all("usage" not in c for c in chunks)


# --- streams and usage ------------------------------------------------------------------------------


def test_stream_usage_counts_cache_reads_and_writes(claude):
    usage = {"input_tokens": 20, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 300}
    claude.script("claude-sonnet-4-5", {"usage": {**usage, "output_tokens": 7}})
    result, events = stream(deployment(claude), chat([{"role": "user", "content": "Hi"}]), wants_usage=True)
    assert b"event: ping" in b"".join(claude.sent_events)  # ignored, not relayed
    assert events[-1] == "[DONE]"
    final = events[-2]
    assert final["choices"] == []
    expected = {
        "prompt_tokens": 1320,
        "completion_tokens": 7,
        "total_tokens": 1327,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 300},
    }
    assert final["usage"] == expected == result.usage
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2]) == DEFAULT_TEXT
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_json_usage_counts_cache_tokens_and_prices_them_as_cached(claude):
    usage = {
        "input_tokens": 20,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "output_tokens": 5,
    }
    claude.script("claude-sonnet-4-5", {"usage": usage, "stop_reason": "max_tokens"})
    result = send(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    body = orjson.loads(result.body)
    assert body["choices"][0]["finish_reason"] == "length"
    assert result.usage["prompt_tokens"] == 1320
    assert result.usage["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 300}
    price = Price(
        input=Decimal(3), output=Decimal(15), cached_input=Decimal("0.3"), cache_write=Decimal("3.75"), max_output=8192
    )
    cost = price.cost(1320, 5, 1000, 300)
    # 20 fresh input tokens at $3/M, 1000 reads at $0.30/M, 300 writes at $3.75/M, 5 output at $15/M.
    assert cost == (20 * 3 + 1000 * Decimal("0.3") + 300 * Decimal("3.75") + 5 * 15) / 1_000_000


def test_an_error_event_mid_stream_ends_the_stream_without_done(claude):
    claude.script("claude-sonnet-4-5", {"stream_error": "overloaded_error"})
    result, events = stream(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    assert "[DONE]" not in events
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[1]["choices"][0]["delta"]["content"] == "Hello"
    assert events[-1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert result.error_type == "overloaded_error" and result.error_message == "Overloaded"


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "seen_status", "openai_type", "code"),
    [
        (400, 400, "invalid_request_error", "invalid_request_error"),
        (401, 401, "authentication_error", "authentication_error"),
        (403, 403, "permission_error", "permission_error"),
        (404, 404, "not_found_error", "not_found_error"),
        (413, 413, "invalid_request_error", "request_too_large"),
        (429, 429, "rate_limit_error", "rate_limit_error"),
        (500, 500, "server_error", "api_error"),
        (529, 503, "server_error", "overloaded_error"),  # OpenAI clients retry a 503; a 529 means nothing to them
    ],
)
def test_each_anthropic_error_maps_to_an_openai_error(claude, status, seen_status, openai_type, code):
    for is_stream in (False, True):
        claude.script("claude-sonnet-4-5", {"status": status})
        payload = chat([{"role": "user", "content": "Hi"}])
        result = stream(deployment(claude), payload)[0] if is_stream else send(deployment(claude), payload)
        assert isinstance(result, UpstreamResult)
        assert result.status == seen_status
        error = orjson.loads(result.body)["error"]
        assert (error["type"], error["code"]) == (openai_type, code)
        assert error["message"] and error["message"] == result.error_message
        assert result.headers["x-upstream-request-id"] == "req_fake_error"


def test_a_rate_limit_passes_retry_after_on(claude):
    claude.script("claude-sonnet-4-5", {"status": 429, "headers": {"retry-after": "7"}})
    result = send(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    assert result.status == 429 and result.headers["retry-after"] == "7"


def test_cloudflares_html_413_still_maps_to_request_too_large(claude):
    claude.script("claude-sonnet-4-5", {"raw": b"<html>413 Request Entity Too Large</html>", "status": 413})
    result = send(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    assert result.status == 413
    assert orjson.loads(result.body)["error"]["code"] == "request_too_large"


def test_a_refused_key_is_not_quoted_back(claude):
    dep = deployment(claude)
    claude.script("claude-sonnet-4-5", {"status": 401, "message": f"invalid x-api-key: {API_KEY}"})
    result = send(dep, chat([{"role": "user", "content": "Hi"}]))
    assert API_KEY.encode() not in result.body and API_KEY not in result.error_message


def test_a_too_long_prompt_is_seen_as_a_context_window_error_and_an_overload_as_one(claude):
    from proxy.providers.base import ErrorKind

    adapter = adapter_for("anthropic")
    message = "prompt is too long: 201234 tokens > 200000 maximum"
    claude.script("claude-sonnet-4-5", {"status": 400, "message": message}, {"status": 529})
    too_long = send(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    overloaded = send(deployment(claude), chat([{"role": "user", "content": "Hi"}]))
    # The attempt loop falls back to a larger-context model, or retries elsewhere, on these.
    assert adapter.classify(too_long) == ErrorKind.CONTEXT_WINDOW
    assert adapter.classify(overloaded) == ErrorKind.OVERLOADED


# --- extended thinking, stop reasons, client headers ------------------------------------------------

THOUGHT = {"type": "thinking", "thinking": "Paris is in France. I should check the weather."}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"}


def test_thinking_comes_back_as_reasoning_content_with_signed_blocks_that_a_next_turn_sends_back(claude):
    dep = deployment(claude)
    claude.script("claude-sonnet-4-5", {"content": [THOUGHT, REDACTED, TOOL_USE]})
    first = chat([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], reasoning_effort="medium")
    result = send(dep, first)
    assert result.status == 200, result.body
    assert claude.requests[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert result.finish_reason == "tool_use"  # the provider's own words, for the call log
    message = orjson.loads(result.body)["choices"][0]["message"]
    assert message["reasoning_content"] == THOUGHT["thinking"]
    assert message["thinking_blocks"] == [{**THOUGHT, "signature": signature(THOUGHT["thinking"])}, REDACTED]

    # Alice sends the assistant turn back as she got it: the signed blocks lead the turn again, which is
    # what Anthropic demands when thinking and tools meet (the fake checks signature and placement).
    second = chat(
        [
            *first["messages"],
            message,
            {"role": "tool", "tool_call_id": "toolu_01Paris", "content": "18C and sunny"},
        ],
        tools=[WEATHER_TOOL],
        reasoning_effort="medium",
    )
    assert send(dep, second).status == 200
    sent = claude.requests[-1].body["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["thinking", "redacted_thinking", "tool_use"]
    assert sent[0]["signature"] == signature(THOUGHT["thinking"])

    # Without its thinking the same turn is refused by Anthropic: the blocks are what makes it work.
    bare = copy.deepcopy(second)
    del bare["messages"][1]["thinking_blocks"]
    refused = send(dep, bare)
    assert refused.status == 400 and b"must start with a thinking block" in refused.body


def test_reasoning_effort_becomes_a_thinking_budget_within_max_tokens(claude):
    dep = deployment(claude)
    ask = [{"role": "user", "content": "Hi"}]
    assert send(dep, chat(ask, reasoning_effort="high", max_tokens=3000)).status == 200
    assert claude.requests[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    assert send(dep, chat(ask, reasoning_effort="none")).status == 200
    assert "thinking" not in claude.requests[-1].body
    own = {"type": "enabled", "budget_tokens": 1500}
    assert send(dep, chat(ask, thinking=own, reasoning_effort="low")).status == 200
    assert claude.requests[-1].body["thinking"] == own  # LiteLLM's explicit setting wins
    # A thinking block that lost its signature (LiteLLM streams them unsigned at first) is left out, not refused.
    unsigned = {"type": "thinking", "thinking": "Hmm.", "signature": None}
    history = [*ask, {"role": "assistant", "content": "Hello", "thinking_blocks": [unsigned]}, *ask]
    assert send(dep, chat(history)).status == 200
    assert claude.requests[-1].body["messages"][1] == {"role": "assistant", "content": "Hello"}
    calls = len(claude.requests)
    for payload, says in [
        (chat(ask, reasoning_effort="low", max_tokens=500), b"max_tokens above 1024"),
        (chat(ask, reasoning_effort="extreme"), b"reasoning_effort must be one of"),
        (chat([{"role": "assistant", "content": "x", "thinking_blocks": [{"type": "plan"}]}]), b"may only hold"),
    ]:
        result = send(dep, payload)
        assert result.status == 400 and says in result.body and b"invalid_request_error" in result.body
    assert len(claude.requests) == calls  # refused before any upstream call


def test_streamed_thinking_arrives_as_reasoning_deltas_then_one_signed_block(claude):
    dep = deployment(claude)
    claude.script("claude-sonnet-4-5", {"content": [THOUGHT, REDACTED, {"type": "text", "text": "Sunny."}]})
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    result, events = stream(dep, chat(ask, reasoning_effort="low"))
    assert isinstance(result, UpstreamStream) and not result.error_type and events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert len(reasoning) > 1 and "".join(reasoning) == THOUGHT["thinking"]
    blocks = [b for d in deltas for b in d.get("thinking_blocks", [])]
    assert blocks == [{**THOUGHT, "signature": signature(THOUGHT["thinking"])}, REDACTED]
    assert "".join(d.get("content") or "" for d in deltas) == "Sunny."
    assert result.finish_reason == "end_turn"

    # The blocks gathered from the stream are enough for the next turn.
    message = {"role": "assistant", "content": "Sunny.", "thinking_blocks": blocks}
    follow = chat([*ask, message, {"role": "user", "content": "And tomorrow?"}], reasoning_effort="low")
    assert send(dep, follow).status == 200
    assert [b["type"] for b in claude.requests[-1].body["messages"][1]["content"]] == [
        "thinking",
        "redacted_thinking",
        "text",
    ]


def test_the_clients_anthropic_beta_goes_up_unless_the_operator_set_one(claude):
    token = CLIENT_HEADERS.set({"anthropic-beta": "context-1m-2025-08-07", "anthropic-version": "2023-06-01"})
    try:
        assert send(deployment(claude), chat([{"role": "user", "content": "Hi"}])).status == 200
        assert claude.requests[-1].headers["anthropic-beta"] == "context-1m-2025-08-07"
        operator = deployment(claude, extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
        result, _events = stream(operator, chat([{"role": "user", "content": "Hi"}]))
        assert claude.requests[-1].headers["anthropic-beta"] == "prompt-caching-2024-07-31"
        assert result.finish_reason == "end_turn"
    finally:
        CLIENT_HEADERS.reset(token)
    assert send(deployment(claude), chat([{"role": "user", "content": "Hi"}])).status == 200
    assert "anthropic-beta" not in claude.requests[-1].headers


# --- structured outputs -------------------------------------------------------------------------------

PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}


def _structured_answer(value: dict) -> dict:
    block = {"type": "tool_use", "id": "toolu_01Json", "name": "gateway_json_response", "input": value}
    return {"content": [block], "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 9}}


def test_a_json_schema_response_format_is_a_forced_tool_and_comes_back_as_json_content(claude):
    claude.script("claude-sonnet-4-5", _structured_answer({"name": "Ada", "age": 36}))
    result = send(deployment(claude), chat([{"role": "user", "content": "Who?"}], response_format=PERSON))
    assert result.status == 200, result.body
    sent = claude.requests[-1].body
    assert sent["tools"] == [
        {
            "name": "gateway_json_response",
            "description": sent["tools"][0]["description"],
            "input_schema": PERSON["json_schema"]["schema"],
        }
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "gateway_json_response"}
    choice = orjson.loads(result.body)["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"name": "Ada", "age": 36}
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


def test_a_streamed_structured_answer_streams_as_content(claude):
    claude.script("claude-sonnet-4-5", _structured_answer({"name": "Ada", "age": 36}))
    _result, events = stream(deployment(claude), chat([{"role": "user", "content": "Who?"}], response_format=PERSON))
    chunks = [e for e in events if e != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert orjson.loads(text) == {"name": "Ada", "age": 36}
    assert not any(c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        ({"response_format": PERSON, "tools": [WEATHER_TOOL]}, "together with tools"),
        ({"response_format": {"type": "xml"}}, "must be text, json_object or json_schema"),
        ({"response_format": {"type": "json_object"}, "reasoning_effort": "low", "max_tokens": 4000}, "thinking"),
    ],
)
def test_a_format_this_provider_cannot_honour_is_a_400_never_a_silent_drop(claude, extra, phrase):
    sent = len(claude.requests)
    result = send(deployment(claude), chat([{"role": "user", "content": "Who?"}], **extra))
    assert result.status == 400 and phrase in orjson.loads(result.body)["error"]["message"]
    assert len(claude.requests) == sent
