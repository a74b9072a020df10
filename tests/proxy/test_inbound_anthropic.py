"""Anthropic's Messages API in front of the gateway: the translation in process, then the official
`anthropic` SDK against a real gateway server and the fake OpenAI upstream."""

from __future__ import annotations

import json

import orjson
import pytest

from proxy.errors import ProxyError
from proxy.inbound.anthropic import ANTHROPIC, StreamTranslator, to_chat, to_message

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class FakeCall:
    model = "claude-for-alice"
    request_id = "req_test1"


def events(raw: bytes) -> list[tuple[str, dict]]:
    """Anthropic SSE bytes as (event name, data) pairs, checking the framing of each event."""
    out = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        name_line, data_line = block.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == name_line[7:].decode()
        out.append((data["type"], data))
    assert raw.endswith(b"\n\n")
    return out


def chunk(choices: list, usage: dict | None = None) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "up", "choices": choices, "usage": usage}
    return b"data: " + orjson.dumps(body) + b"\n\n"


# --- request translation ------------------------------------------------------------------------------


def test_a_messages_request_becomes_the_equivalent_openai_chat_payload():
    chat = to_chat(
        {
            "model": "claude-for-alice",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather in Paris? See:"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 5,
            "metadata": {"user_id": "alice-7"},
            "stream": True,
        }
    )
    assert chat["messages"] == [
        {
            "role": "system",
            "content": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris? See:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        # The tool result comes straight after the assistant's call, before the user's new text.
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["max_tokens"] == 300 and chat["stop"] == ["\n\nHuman:"] and chat["user"] == "alice-7"
    assert chat["temperature"] == 0.2 and chat["top_p"] == 0.9 and "top_k" not in chat
    # Anthropic clients read usage from message_delta: the gateway always asks for it.
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_maps_to_openai(choice, expected):
    messages = [{"role": "user", "content": "hi"}]
    chat = to_chat(
        {"model": "m", "max_tokens": 5, "messages": messages, "tools": [WEATHER_TOOL], "tool_choice": choice}
    )
    assert chat["tool_choice"] == expected and "parallel_tool_calls" not in chat


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens: Field required"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model: Field required"),
        ({"model": "m", "max_tokens": 5}, "messages: Field required"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]}, "top-level `system`"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "server tool",
        ),
    ],
)
def test_invalid_requests_are_refused_with_anthropic_400s(body, says):
    with pytest.raises(ProxyError) as caught:
        to_chat(body)
    response = ANTHROPIC.error_response(caught.value)
    assert response.status_code == 400
    error = json.loads(response.content)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert says in error["error"]["message"]


# --- answers and errors -------------------------------------------------------------------------------


def test_a_chat_completion_renders_as_an_anthropic_message_with_tool_use_and_cache_usage():
    completion = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "upstream-id",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 12,
            "total_tokens": 112,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
        },
    }
    message = json.loads(ANTHROPIC.render(FakeCall(), orjson.dumps(completion)))
    assert message == {
        "id": "msg_chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": "claude-for-alice",  # the model the client asked for, not the upstream id
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # Anthropic counts cache reads and writes apart from input_tokens.
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": 60,
            "output_tokens": 12,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_finish_reasons_map_to_stop_reasons(finish, stop_reason):
    completion = {"id": "x", "choices": [{"message": {"content": "a"}, "finish_reason": finish}]}
    assert to_message(completion, "m")["stop_reason"] == stop_reason


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_errors_take_anthropics_shape_and_type_for_their_status(status, error_type):
    upstream = orjson.dumps({"error": {"message": "Slow down, Alice.", "type": "requests", "code": "x"}})
    body = json.loads(ANTHROPIC.render_upstream_error(FakeCall(), status, upstream))
    assert body == {
        "type": "error",
        "error": {"type": error_type, "message": "Slow down, Alice."},
        "request_id": "req_test1",
    }
    response = ANTHROPIC.error_response(ProxyError(status, "No.", headers={"retry-after": "3"}))
    assert response.status_code == status and response["retry-after"] == "3"
    assert json.loads(response.content) == {"type": "error", "error": {"type": error_type, "message": "No."}}


# --- streams ------------------------------------------------------------------------------------------


def test_a_stream_of_text_then_a_tool_call_becomes_anthropics_event_sequence():
    translate = ANTHROPIC.stream_filter(FakeCall())
    tool_start = {"index": 0, "id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    upstream = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        b": keep-alive comment\n\n",
        chunk([{"index": 0, "delta": {"content": "Let me "}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"content": "check."}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"tool_calls": [tool_start]}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        chunk([], {"prompt_tokens": 50, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 20}}),
        b"data: [DONE]\n\n",
    ]
    raw = b"".join(out for event in upstream if (out := translate(event)) is not None)
    seq = events(raw)
    assert [name for name, _ in seq] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = seq[0][1]["message"]
    assert start["model"] == "claude-for-alice" and start["role"] == "assistant" and start["content"] == []
    assert seq[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert seq[3][1]["delta"] == {"type": "text_delta", "text": "Let me "}
    assert seq[6][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "call_7", "name": "get_weather", "input": {}},
    }
    assert [seq[i][1]["delta"]["partial_json"] for i in (7, 8)] == ['{"city":', '"Oslo"}']
    assert seq[9][1] == {"type": "content_block_stop", "index": 1}
    assert seq[10][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 30,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 20,
            "output_tokens": 9,
        },
    }


def test_an_upstream_error_mid_stream_becomes_an_anthropic_error_event_and_ends_the_stream():
    translate = StreamTranslator(FakeCall())
    first = translate(chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]))
    error = translate(b'data: {"error": {"message": "upstream fell over", "type": "server_error"}}\n\n')
    assert [name for name, _ in events(first)][-1] == "content_block_delta"
    assert events(error) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream fell over"}})
    ]
    assert translate(b"data: [DONE]\n\n") is None  # nothing after the error, as Anthropic does


# --- relayed bodies, reasoning ------------------------------------------------------------------------


def test_a_relayed_body_keeps_blocks_and_server_tools_the_gateway_cannot_translate():
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    used = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "oslo"}}
    cited = {"type": "search_result", "source": "https://example.org", "title": "Oslo", "content": []}
    body = {
        "model": "claude",
        "max_tokens": 100,
        "temperature": "warm",  # Anthropic's to judge: the body goes to it as it is
        "tools": [search, WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Searching."}, used]},
            {"role": "user", "content": [cited, {"type": "text", "text": "Thanks"}]},
        ],
    }
    chat = to_chat(body, relay=True)
    assert chat["tools"][0] == search and chat["tools"][1]["function"]["name"] == "get_weather"
    assert chat["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Searching."}, used]}
    assert chat["messages"][2]["content"] == [cited, {"type": "text", "text": "Thanks"}]
    assert "temperature" not in chat and chat["max_tokens"] == 100

    # Translated (no relay), the same body is refused with a clear error, as before.
    with pytest.raises(ProxyError) as caught:
        to_chat(body)
    assert caught.value.status == 400
    # What the gateway needs is checked either way.
    for broken, says in [
        ({**body, "max_tokens": 0}, "max_tokens"),
        ({**body, "model": ""}, "model"),
        ({**body, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({**body, "stream": "yes"}, "stream"),
    ]:
        with pytest.raises(ProxyError) as caught:
            to_chat(broken, relay=True)
        assert caught.value.status == 400 and says in caught.value.message


def test_reasoning_from_the_upstream_becomes_thinking_blocks_in_json_and_in_the_stream():
    signed = {"type": "thinking", "thinking": "Oslo is cold.", "signature": "sig_1"}
    redacted = {"type": "redacted_thinking", "data": "EmwKAh"}
    completion = {
        "id": "chatcmpl-9",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Cold.",
                    "reasoning_content": "Oslo is cold.",
                    "thinking_blocks": [signed, redacted],
                },
                "finish_reason": "stop",
            }
        ],
    }
    assert to_message(completion, "m")["content"] == [signed, redacted, {"type": "text", "text": "Cold."}]
    plain = {"choices": [{"message": {"role": "assistant", "content": "Cold.", "reasoning_content": "Hm."}}]}
    assert to_message(plain, "m")["content"][0] == {"type": "thinking", "thinking": "Hm.", "signature": ""}

    translate = StreamTranslator(FakeCall())
    upstream = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"reasoning_content": "Oslo is "}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"reasoning_content": "cold."}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"thinking_blocks": [signed]}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"thinking_blocks": [redacted]}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"content": "Cold."}, "finish_reason": "stop"}]),
        b"data: [DONE]\n\n",
    ]
    seq = events(b"".join(out for event in upstream if (out := translate(event)) is not None))
    blocks = [(name, data.get("content_block", data.get("delta"))) for name, data in seq[2:-2]]
    assert blocks == [
        ("content_block_start", {"type": "thinking", "thinking": "", "signature": ""}),
        ("content_block_delta", {"type": "thinking_delta", "thinking": "Oslo is "}),
        ("content_block_delta", {"type": "thinking_delta", "thinking": "cold."}),
        ("content_block_delta", {"type": "signature_delta", "signature": "sig_1"}),
        ("content_block_stop", None),
        ("content_block_start", redacted),
        ("content_block_stop", None),
        ("content_block_start", {"type": "text", "text": ""}),
        ("content_block_delta", {"type": "text_delta", "text": "Cold."}),
        ("content_block_stop", None),
    ]
    assert [data["index"] for _name, data in seq[2:-2]] == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]


def test_anthropic_structured_outputs_become_openais_response_format():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    base = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Who?"}]}
    expected = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    assert to_chat({**base, "output_format": {"type": "json_schema", "schema": schema}})["response_format"] == expected
    config = {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
    assert to_chat({**base, **config})["response_format"] == expected
    assert "response_format" not in to_chat(base)
    with pytest.raises(ProxyError) as caught:
        to_chat({**base, "output_format": {"type": "xml"}})
    assert caught.value.status == 400 and caught.value.param == "output_format"
