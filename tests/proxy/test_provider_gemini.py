"""The Gemini adapter against a loopback server that speaks the Gemini API's wire format.

Requests are translated to generateContent / streamGenerateContent / batchEmbedContents, and answers,
stream chunks, usage (cumulative on every streamed chunk: counted once), finish reasons, Google's error
statuses and RetryInfo hints come back in OpenAI's format.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import struct
from pathlib import Path

import orjson
import pytest

from proxy.attempts import retry_after
from proxy.providers import adapter_for
from proxy.providers.base import CallContext, UpstreamResult
from proxy.providers.gemini import GeminiAdapter, to_gemini
from proxy.snapshot import Deployment
from proxy.upstream import close_client
from tests.fakes.gemini_upstream import API_KEY, SIGNATURE, FakeGemini

GOLDEN = Path(__file__).parent / "golden" / "gemini"
ADAPTER = GeminiAdapter()
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


def deployment(fake: FakeGemini, model: str = "gemini-2.0-flash", key: str = API_KEY) -> Deployment:
    dep = Deployment(
        id=1,
        model_name="flash",
        provider_name="gemini",
        kind="gemini",
        base_url=fake.base_url,
        api_key=key,
        upstream_model=model,
    )
    ADAPTER.prepare(dep)
    return dep


def ctx(endpoint: str = "chat/completions", *, stream: bool = False, usage: bool = False) -> CallContext:
    return CallContext(request_id="req-1", endpoint=endpoint, stream=stream, client_wants_usage=usage)


def send(dep: Deployment, payload: dict, context: CallContext | None = None) -> UpstreamResult:
    async def go():
        try:
            return await ADAPTER.send(dep, payload, context or ctx())
        finally:
            await close_client()  # the shared client belongs to this test's event loop

    return asyncio.run(go())


def stream(dep: Deployment, payload: dict, *, usage: bool = False):
    """(events as parsed JSON or "[DONE]", the stream object) of one streamed call."""

    async def go():
        try:
            opened = await ADAPTER.open_stream(dep, payload, ctx(stream=True, usage=usage))
            if isinstance(opened, UpstreamResult):
                return opened, []
            events = [event async for event in opened]
            await opened.aclose()
            return opened, events
        finally:
            await close_client()

    opened, raw = asyncio.run(go())
    events = []
    for event in raw:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n"), event
        data = event[6:-2]
        events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return opened, events


def chat(text: str = "Hi there", **extra) -> dict:
    return {"model": "flash", "messages": [{"role": "user", "content": text}], **extra}


def check_golden(name: str, value: dict) -> None:
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert value == orjson.loads(path.read_bytes())


def full_conversation() -> dict:
    return {
        "model": "flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these pictures, and the weather in Paris and Rome?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 21}'},
            {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            WEATHER_TOOL,
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
    }


# --- request translation --------------------------------------------------------------------------


def test_a_full_conversation_translates_to_the_golden_generate_content_request():
    payload = full_conversation()
    before = copy.deepcopy(payload)
    body = to_gemini(payload)
    assert payload == before  # the attempt loop may send the same payload elsewhere next
    check_golden("chat_full_conversation", body)
    # The spots where a naive translation goes wrong, asserted outright as well:
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse.\n\nAnswer in English."}]}
    # Both tool results (and the user's next words) form the one user turn after the model's calls.
    responses = [p["functionResponse"] for p in body["contents"][2]["parts"][:2]]
    assert responses == [
        {"name": "get_weather", "response": {"temp_c": 21}},
        {"name": "get_time", "response": {"result": "14:05"}},
    ]
    params = body["tools"][0]["functionDeclarations"][0]["parameters"]
    assert "additionalProperties" not in params and "$schema" not in params
    assert params["properties"]["days"] == {"type": "integer", "nullable": True, "minimum": 1}
    assert body["contents"][2]["parts"][2] == {"text": "Thanks"}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


def test_the_request_sent_upstream_is_the_golden_one(gemini):
    result = send(deployment(gemini), full_conversation())
    assert result.status == 200
    recorded = gemini.requests[-1]
    assert recorded.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert recorded.headers["x-goog-api-key"] == API_KEY
    assert "authorization" not in {h.lower() for h in recorded.headers}
    assert recorded.body == orjson.loads((GOLDEN / "chat_full_conversation.json").read_bytes())


def test_a_tool_result_without_an_earlier_call_is_refused_before_calling_gemini(gemini):
    payload = chat()
    payload["messages"].append({"role": "tool", "tool_call_id": "call_nowhere", "content": "42"})
    result = send(deployment(gemini), payload)
    assert result.status == 400
    assert b"call_nowhere" in result.body
    assert gemini.requests == []


# --- answers --------------------------------------------------------------------------------------


def test_alice_gets_an_openai_chat_completion_with_usage(gemini):
    result = send(deployment(gemini), chat("Hello Gemini, how are you doing today?"))
    assert result.status == 200
    body = orjson.loads(result.body)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from the fake Gemini.",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    prompt = 5 + len("Hello Gemini, how are you doing today?") // 4
    assert result.usage["prompt_tokens"] == prompt
    assert result.usage["completion_tokens"] == 6
    assert result.usage["total_tokens"] == prompt + 6
    assert body["usage"] == result.usage


def test_cached_tokens_are_reported_as_openai_cached_tokens(gemini):
    result = send(deployment(gemini, "cached"), chat("A long shared prefix that was cached"))
    prompt = 5 + len("A long shared prefix that was cached") // 4
    assert result.usage["prompt_tokens"] == prompt
    assert result.usage["prompt_tokens_details"]["cached_tokens"] == prompt - 2


def test_thinking_tokens_are_billed_as_output_and_thoughts_are_not_answer_text(gemini):
    result = send(deployment(gemini, "thinking"), chat())
    body = orjson.loads(result.body)
    assert body["choices"][0]["message"]["content"] == "Hello from the fake Gemini."
    assert result.usage["completion_tokens"] == 7 + 7  # 7 parts produced + 7 thought tokens
    assert result.usage["completion_tokens_details"]["reasoning_tokens"] == 7
    # The thought summary reaches the client as reasoning_content, JSON or streamed.
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think."
    _opened, events = stream(deployment(gemini, "thinking"), chat(stream=True))
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == ["Let me think."]
    assert "".join(d.get("content") or "" for d in deltas) == "Hello from the fake Gemini."


@pytest.mark.parametrize(("model", "finish"), [("safety", "content_filter"), ("max-tokens", "length")])
def test_finish_reasons_are_mapped(gemini, model, finish):
    body = orjson.loads(send(deployment(gemini, model), chat()).body)
    assert body["choices"][0]["finish_reason"] == finish


def test_a_blocked_prompt_is_a_400_content_filter(gemini):
    result = send(deployment(gemini, "blocked-prompt"), chat())
    assert result.status == 400
    assert orjson.loads(result.body)["error"]["code"] == "content_filter"
    assert adapter_for("gemini") is not None and result.error_type == "content_filter"


def test_tools_round_trip_through_function_call_and_function_response(gemini):
    dep = deployment(gemini, "tools")
    payload = chat("Weather in Paris?", tools=[WEATHER_TOOL])
    first = orjson.loads(send(dep, payload).body)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}

    payload["messages"] += [
        choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 21}'},
    ]
    second = orjson.loads(send(dep, payload).body)
    sent = gemini.requests[-1].body["contents"]
    assert sent[1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": 2}}}],
    }
    assert sent[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}],
    }
    assert second["choices"][0]["message"]["content"] == 'The tool get_weather said {"temp_c": 21}'


# --- streams --------------------------------------------------------------------------------------


def test_a_stream_becomes_openai_chunks_and_cumulative_usage_is_counted_once(gemini):
    opened, events = stream(deployment(gemini), chat("Tell me"), usage=True)
    assert gemini.requests[-1].path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert gemini.requests[-1].query == {"alt": "sse"}
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello from the fake Gemini."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    # Six chunks each repeat the running total (1, 2, ... 6 tokens): 6 is right, 21 would be a sum.
    prompt = 5 + len("Tell me") // 4
    assert opened.usage["completion_tokens"] == 6
    assert opened.usage["total_tokens"] == prompt + 6
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
    assert usage_chunks[0]["usage"] == opened.usage


def test_the_usage_chunk_is_hidden_when_the_client_did_not_ask_for_it(gemini):
    opened, events = stream(deployment(gemini), chat())
    assert events[-1] == "[DONE]"
    assert not any(e.get("usage") for e in events[:-1])
    assert opened.usage["completion_tokens"] == 6  # the gateway still counts it


def test_a_streamed_tool_call_arrives_as_one_openai_tool_call_delta(gemini):
    _opened, events = stream(deployment(gemini, "tools"), chat("Weather?", tools=[WEATHER_TOOL]))
    deltas = [c["choices"][0] for c in events[:-1] if c["choices"]]
    calls = [d["delta"]["tool_calls"] for d in deltas if "tool_calls" in d["delta"]]
    assert len(calls) == 1
    assert calls[0][0]["index"] == 0 and calls[0][0]["function"]["name"] == "get_weather"
    assert orjson.loads(calls[0][0]["function"]["arguments"]) == {"city": "Paris", "days": 2}
    assert deltas[-1]["finish_reason"] == "tool_calls"


def test_an_error_mid_stream_ends_the_stream_with_an_error_event_and_no_done(gemini):
    opened, events = stream(deployment(gemini, "stream-error"), chat())
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "unavailable"
    assert opened.error_type == "unavailable"


def test_a_stream_without_a_finish_reason_is_reported_incomplete(gemini):
    opened, events = stream(deployment(gemini, "stream-cut"), chat())
    assert "[DONE]" not in events
    assert opened.error_type == "upstream_stream_incomplete"


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (400, "invalid_request_error", "invalid_argument"),
        (403, "permission_error", "permission_denied"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", "internal"),
        (503, "server_error", "unavailable"),
    ],
)
def test_google_error_statuses_map_to_openai_errors(gemini, status, type_, code):
    gemini.script("gemini-2.0-flash", {"status": status}, {"status": status})
    for result in (send(deployment(gemini), chat()), stream(deployment(gemini), chat())[0]):
        assert result.status == status
        error = orjson.loads(result.body)["error"]
        assert error["type"] == type_ and error["code"] == code
        assert error["message"]  # Google's own message, not a generic one
        assert result.error_type == code


def test_retry_info_becomes_a_retry_after_the_attempt_loop_honours(gemini):
    gemini.script("gemini-2.0-flash", {"status": 429, "retry_delay": "12s"}, {"status": 503, "retry_delay": "0.4s"})
    limited = send(deployment(gemini), chat())
    assert limited.headers["retry-after"] == "12"
    assert retry_after(limited) == 12.0
    overloaded = stream(deployment(gemini), chat())[0]
    assert overloaded.status == 503 and overloaded.headers["retry-after"] == "1"


def test_a_wrong_api_key_is_a_401_for_this_deployment(gemini):
    result = send(deployment(gemini, key="gm-wrong-key-123456"), chat())
    assert result.status == 401
    assert orjson.loads(result.body)["error"]["code"] == "invalid_api_key"


# --- embeddings -----------------------------------------------------------------------------------


def test_embeddings_use_batch_embed_contents_and_come_back_as_an_openai_list(gemini):
    dep = deployment(gemini, "text-embedding-004")
    payload = {"model": "embed", "input": ["hello", "a longer sentence"], "dimensions": 3}
    result = send(dep, payload, ctx("embeddings"))
    recorded = gemini.requests[-1]
    assert recorded.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    check_golden("embeddings", recorded.body)
    body = orjson.loads(result.body)
    assert body["object"] == "list"
    assert [row["embedding"] for row in body["data"]] == [[0.5, -0.25, 0.5], [1.7, -0.25, 0.5]]
    assert result.usage is None  # Gemini counts no embedding tokens: the gateway estimates the cost


def test_embeddings_in_base64_are_little_endian_float32(gemini):
    payload = {"model": "embed", "input": "hello", "encoding_format": "base64"}
    body = orjson.loads(send(deployment(gemini, "text-embedding-004"), payload, ctx("embeddings")).body)
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == pytest.approx((0.5, -0.25, 0.5))


# --- thought signatures and stop reasons -------------------------------------------------------------

SIMPLE_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def _next_turn(first: dict, calls: list[dict]) -> dict:
    return {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": None, "tool_calls": calls},
            *({"role": "tool", "tool_call_id": c["id"], "content": '{"temp": 18}'} for c in calls),
        ],
    }


def test_gemini_3s_signed_function_calls_go_back_with_their_signature_and_the_next_turn_works(gemini):
    dep = deployment(gemini, "signed-tools")
    first = chat("Weather in Paris and Lyon?", tools=[SIMPLE_TOOL])
    result = send(dep, first)
    assert result.status == 200 and result.finish_reason == "STOP"
    paris, lyon = orjson.loads(result.body)["choices"][0]["message"]["tool_calls"]
    assert paris["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert "__thought__" in paris["id"] and set(paris["id"]) <= set(
        "abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    )
    assert "extra_content" not in lyon and "__thought__" not in lyon["id"]  # Gemini signs the first call only

    answered = send(dep, _next_turn(first, [paris, lyon]))
    assert answered.status == 200, answered.body
    model_turn = gemini.requests[-1].body["contents"][1]
    assert [p.get("thoughtSignature") for p in model_turn["parts"]] == [SIGNATURE, None]

    # A client that keeps only id, name and arguments (most frameworks) still sends it back: it is in the id.
    bare = [{"id": c["id"], "type": "function", "function": c["function"]} for c in (paris, lyon)]
    assert send(dep, _next_turn(first, bare)).status == 200
    assert gemini.requests[-1].body["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE

    # Without it Gemini 3 refuses the turn: the signature is what makes multi-turn tool use work.
    fresh = [{**c, "id": f"call_{n}"} for n, c in enumerate(bare)]
    refused = send(dep, _next_turn(first, fresh))
    assert refused.status == 400 and b"thought_signature" in refused.body

    # Calls Gemini never signed (a conversation that began on another provider) get Google's documented
    # skip value on a Gemini 3 model, and go through.
    gemini_3 = deployment(gemini, "gemini-3-pro-preview")
    assert send(gemini_3, _next_turn(first, fresh)).status == 200
    assert [p.get("thoughtSignature") for p in gemini.requests[-1].body["contents"][1]["parts"]] == [
        "skip_thought_signature_validator",
        None,
    ]


def test_streamed_signed_function_calls_carry_their_signature_and_the_stop_reason_is_kept(gemini):
    dep = deployment(gemini, "signed-tools")
    first = chat("Weather in Paris and Lyon?", tools=[SIMPLE_TOOL])
    opened, events = stream(dep, {**first, "stream": True})
    assert events[-1] == "[DONE]" and opened.finish_reason == "STOP"
    calls = [c for e in events[:-1] for c in e["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1]
    assert calls[0]["extra_content"]["google"]["thought_signature"] == SIGNATURE
    sent_back = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    assert send(dep, _next_turn(first, sent_back)).status == 200
    assert gemini.requests[-1].body["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE

    cut_short, _events = stream(deployment(gemini, "max-tokens"), chat(stream=True))
    assert cut_short.finish_reason == "MAX_TOKENS"
