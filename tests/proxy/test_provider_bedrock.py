"""The Bedrock adapter against a fake Bedrock Runtime on loopback that checks every SigV4 signature with
botocore and speaks Converse JSON and ConverseStream's binary event-stream frames.

Alice's deployment signs with a long-term key; Bob's with temporary credentials (session token).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import struct
from pathlib import Path

import orjson
import pytest

from proxy.providers import adapter_for
from proxy.providers.base import CallContext, ErrorKind, UpstreamResult, UpstreamStream
from proxy.providers.bedrock import EMBED_CONCURRENCY, BedrockAdapter, ConverseStreamTranslator, converse_request
from proxy.snapshot import Deployment
from proxy.upstream import close_client
from tests.fakes.bedrock_upstream import CREDENTIALS, REGION, FakeBedrock, event, exception, fake_vector

GOLDEN = Path(__file__).parent / "golden" / "bedrock"
TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
ALICE_KEY, BOB_KEY = "AKIDALICEEXAMPLE01", "ASIABOBTEMPEXAMPLE"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def deployment(fake: FakeBedrock, model: str = "anthropic.claude-3-5-haiku-20241022-v1:0", **creds) -> Deployment:
    secret, _token = CREDENTIALS[ALICE_KEY]
    fields = {"aws_access_key_id": ALICE_KEY, "aws_secret_access_key": secret, **creds}
    dep = Deployment(
        id=7,
        model_name="claude",
        provider_name="aws",
        kind="bedrock",
        base_url=fake.base_url,
        api_key="",
        upstream_model=model,
        region=REGION,
        **fields,
    )
    BedrockAdapter().prepare(dep)
    return dep


def bob_deployment(fake: FakeBedrock, **extra) -> Deployment:
    secret, token = CREDENTIALS[BOB_KEY]
    fields = {"aws_access_key_id": BOB_KEY, "aws_secret_access_key": secret, "aws_session_token": token, **extra}
    return deployment(fake, **fields)


def chat(content: str = "Hi", **extra) -> dict:
    return {"model": "claude", "messages": [{"role": "user", "content": content}], **extra}


def call(
    dep: Deployment, payload: dict, *, stream: bool = False, wants_usage: bool = False, endpoint="chat/completions"
):
    """One adapter call; a stream is read to its end. Returns (result, events or None)."""
    ctx = CallContext(request_id="req-alice-1", endpoint=endpoint, stream=stream, client_wants_usage=wants_usage)

    async def go():
        adapter = adapter_for("bedrock")
        try:
            if not stream:
                return await adapter.send(dep, payload, ctx), None
            result = await adapter.open_stream(dep, payload, ctx)
            if not isinstance(result, UpstreamStream):
                return result, None
            events = [e async for e in result]
            await result.aclose()
            return result, events
        finally:
            await close_client()

    return asyncio.run(go())


def chunks(events: list[bytes]) -> list[dict]:
    return [orjson.loads(e[6:]) for e in events if e != b"data: [DONE]\n\n"]


def streamed_text(events: list[bytes]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks(events) if c.get("choices"))


# --- JSON ---------------------------------------------------------------------------------------


def test_a_chat_is_signed_sent_to_converse_and_answered_as_a_chat_completion(bedrock):
    payload = chat("Hello there", max_tokens=64, temperature=0.2, top_p=0.9, stop="END")
    before = copy.deepcopy(payload)
    result, _ = call(deployment(bedrock), payload)
    assert result.status == 200, result.body
    body = orjson.loads(result.body)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from the fake Bedrock.",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert result.usage == body["usage"]
    assert payload == before  # the attempt loop reuses it for the next deployment
    sent = bedrock.requests[-1]
    assert sent.path == "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ALICE_KEY}/")
    assert "x-amz-security-token" not in sent.headers
    assert sent.body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    assert result.headers["x-upstream-request-id"] == "req-0001"


def test_an_inference_profile_arn_is_quoted_and_still_signed_correctly(bedrock):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    result, _ = call(deployment(bedrock, arn), chat())
    assert result.status == 200, result.body
    assert "inference-profile%2Fus.anthropic" in bedrock.requests[-1].path


def test_cache_reads_and_writes_count_as_prompt_tokens_priced_apart(bedrock):
    result, _ = call(deployment(bedrock, "cached-claude"), chat())
    assert result.usage == {
        "prompt_tokens": 162,
        "completion_tokens": 7,
        "total_tokens": 169,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 50},
    }


# --- signing ------------------------------------------------------------------------------------


def test_a_wrong_secret_fails_the_signature_check_and_maps_to_403(bedrock):
    dep = deployment(bedrock, aws_secret_access_key="not-alices-secret-key-0000000000000000")
    result, _ = call(dep, chat())
    assert result.status == 403
    error = orjson.loads(result.body)["error"]
    assert error["code"] == "InvalidSignatureException"
    assert error["type"] == "authentication_error"
    assert "signature we calculated does not match" in error["message"]
    assert adapter_for("bedrock").classify(result) == ErrorKind.AUTH


def test_bobs_session_token_is_sent_and_signed(bedrock):
    result, _ = call(bob_deployment(bedrock), chat())
    assert result.status == 200, result.body
    sent = bedrock.requests[-1].headers
    assert sent["x-amz-security-token"] == CREDENTIALS[BOB_KEY][1]
    assert "x-amz-security-token" in sent["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


def test_temporary_credentials_without_their_session_token_are_refused(bedrock):
    result, _ = call(bob_deployment(bedrock, aws_session_token=""), chat())
    assert result.status == 403
    assert orjson.loads(result.body)["error"]["code"] == "UnrecognizedClientException"


def test_operator_headers_are_sent_and_covered_by_the_signature(bedrock):
    result, _ = call(deployment(bedrock, extra_headers={"X-Amzn-Bedrock-Trace": "ENABLED"}), chat())
    assert result.status == 200, result.body
    sent = bedrock.requests[-1].headers
    assert sent["x-amzn-bedrock-trace"] == "ENABLED"
    assert "x-amzn-bedrock-trace" in sent["authorization"]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aws_type", "status", "openai_type", "kind"),
    [
        ("ThrottlingException", 429, "rate_limit_error", ErrorKind.RATE_LIMITED),
        ("ValidationException", 400, "invalid_request_error", ErrorKind.BAD_REQUEST),
        ("AccessDeniedException", 403, "permission_error", ErrorKind.AUTH),
        ("ResourceNotFoundException", 404, "invalid_request_error", ErrorKind.NOT_FOUND),
        ("ModelNotReadyException", 503, "server_error", ErrorKind.OVERLOADED),
        ("ServiceUnavailableException", 503, "server_error", ErrorKind.OVERLOADED),
        ("ModelTimeoutException", 408, "timeout_error", ErrorKind.TIMEOUT),
        ("InternalServerException", 500, "server_error", ErrorKind.SERVER),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_each_aws_error_type_maps_to_its_openai_status(bedrock, aws_type, status, openai_type, kind, stream):
    result, events = call(deployment(bedrock, f"error-{aws_type}"), chat(), stream=stream)
    assert events is None
    assert isinstance(result, UpstreamResult)
    assert result.status == status
    error = orjson.loads(result.body)["error"]
    assert (error["type"], error["code"]) == (openai_type, aws_type)
    assert error["message"] == f"{aws_type} from the fake Bedrock for error-{aws_type}"
    assert result.error_type == aws_type
    assert adapter_for("bedrock").classify(result) == kind
    if aws_type == "ThrottlingException":
        assert result.headers["retry-after"] == "3"
    else:
        assert "retry-after" not in result.headers


def test_embeddings_on_a_chat_model_are_refused_with_a_clear_400(bedrock):
    result, _ = call(deployment(bedrock), {"model": "claude", "input": "hi"}, endpoint="embeddings")
    assert result.status == 400
    assert "Titan Text Embeddings and Cohere Embed" in orjson.loads(result.body)["error"]["message"]
    assert bedrock.requests == []


def test_an_image_url_is_refused_and_a_data_url_becomes_bytes(bedrock):
    remote = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    result, _ = call(deployment(bedrock), chat(remote))
    assert result.status == 400
    assert "data: URLs" in orjson.loads(result.body)["error"]["message"]
    inline = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
    ]
    result, _ = call(deployment(bedrock), chat(inline))
    assert result.status == 200, result.body
    assert bedrock.requests[-1].body["messages"][0]["content"] == [
        {"text": "What is this?"},
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQSkZJRg=="}}},
    ]


# --- embeddings ---------------------------------------------------------------------------------


def embed(dep: Deployment, input, **extra):
    return call(dep, {"model": "embed", "input": input, **extra}, endpoint="embeddings")[0]


def test_one_text_goes_to_titan_through_a_signed_invoke_call(bedrock):
    result = embed(deployment(bedrock, TITAN), "Alice writes to Acme")
    assert result.status == 200, result.body
    body = orjson.loads(result.body)
    assert body["object"] == "list" and body["model"] == "embed"
    assert body["data"] == [{"object": "embedding", "index": 0, "embedding": fake_vector("Alice writes to Acme", 1024)}]
    assert body["usage"] == result.usage == {"prompt_tokens": 4, "total_tokens": 4}
    sent = bedrock.requests[-1]
    assert sent.path == "/model/amazon.titan-embed-text-v2:0/invoke"
    assert sent.body == {"inputText": "Alice writes to Acme"}
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ALICE_KEY}/")
    assert sent.headers["accept"] == "application/json"
    assert result.headers["x-upstream-request-id"] == "req-invoke-0001"


def test_a_list_for_titan_is_sent_as_concurrent_bounded_calls_and_answered_in_order(bedrock):
    # Longer texts take longer in the fake: the first texts finish last, yet keep their index.
    texts = [("word " * (12 - i)).strip() for i in range(12)]
    secret, token = CREDENTIALS[BOB_KEY]
    bob = deployment(bedrock, TITAN, aws_access_key_id=BOB_KEY, aws_secret_access_key=secret, aws_session_token=token)
    result = embed(bob, texts)
    assert result.status == 200, result.body
    rows = orjson.loads(result.body)["data"]
    assert [row["index"] for row in rows] == list(range(12))
    assert [row["embedding"] for row in rows] == [fake_vector(t, 1024) for t in texts]
    assert result.usage == {"prompt_tokens": sum(range(1, 13)), "total_tokens": sum(range(1, 13))}
    assert sorted(r.body["inputText"] for r in bedrock.requests) == sorted(texts)
    assert all(r.headers["x-amz-security-token"] == CREDENTIALS[BOB_KEY][1] for r in bedrock.requests)
    assert 2 <= bedrock.max_in_flight <= EMBED_CONCURRENCY


def test_dimensions_reach_titan_and_base64_decodes_to_the_same_floats(bedrock):
    result = embed(deployment(bedrock, TITAN), ["short", "a bit longer"], dimensions=256, encoding_format="base64")
    assert result.status == 200, result.body
    assert [r.body["dimensions"] for r in bedrock.requests] == [256, 256]
    rows = orjson.loads(result.body)["data"]
    for row, text in zip(rows, ["short", "a bit longer"], strict=True):
        packed = base64.b64decode(row["embedding"])
        assert list(struct.unpack("<256f", packed)) == fake_vector(text, 256)


def test_cohere_takes_the_texts_as_one_batch_and_its_cost_is_estimated(bedrock):
    texts = ["Bob at Globex", "searches", "documents"]
    result = embed(deployment(bedrock, COHERE), texts)
    assert result.status == 200, result.body
    assert len(bedrock.requests) == 1
    assert bedrock.requests[0].path == "/model/cohere.embed-english-v3/invoke"
    assert bedrock.requests[0].body == {"texts": texts, "input_type": "search_document"}
    body = orjson.loads(result.body)
    assert [row["embedding"] for row in body["data"]] == [fake_vector(t, 1024) for t in texts]
    # Bedrock documents no token count for Cohere: the gateway gets none and marks the cost estimated.
    assert result.usage is None
    assert body["usage"]["prompt_tokens"] == sum(-(-len(t) // 4) for t in texts)


def test_cohere_batches_above_96_texts_are_split_and_a_billed_count_is_used(bedrock):
    texts = [f"text number {i}" for i in range(100)]
    result = embed(deployment(bedrock, f"{COHERE}-billed"), texts, input_type="search_query")
    assert result.status == 200, result.body
    assert sorted(len(r.body["texts"]) for r in bedrock.requests) == [4, 96]
    assert {r.body["input_type"] for r in bedrock.requests} == {"search_query"}
    rows = orjson.loads(result.body)["data"]
    assert [row["embedding"] for row in rows] == [fake_vector(t, 1024) for t in texts]
    assert result.usage == {"prompt_tokens": 300, "total_tokens": 300}


@pytest.mark.parametrize("tokens", [[15339, 1917], [[15339], [1917]]])
def test_token_arrays_are_refused_before_any_call(bedrock, tokens):
    result = embed(deployment(bedrock, TITAN), tokens)
    assert result.status == 400
    error = orjson.loads(result.body)["error"]
    assert error["code"] == "unsupported_for_provider"
    assert "token arrays" in error["message"]
    assert bedrock.requests == []


def test_one_failing_titan_call_fails_the_whole_list_with_the_mapped_error(bedrock):
    result = embed(deployment(bedrock, TITAN), ["first text", "fail:ThrottlingException", "third"])
    assert result.status == 429
    error = orjson.loads(result.body)["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "ThrottlingException")
    assert adapter_for("bedrock").classify(result) == ErrorKind.RATE_LIMITED


def test_embedding_errors_from_bedrock_map_like_chat(bedrock):
    result = embed(deployment(bedrock, TITAN), "hi", dimensions=300)
    assert result.status == 400
    error = orjson.loads(result.body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "ValidationException")
    assert "dimensions must be one of" in error["message"]
    dep = deployment(bedrock, TITAN, aws_secret_access_key="not-alices-secret-key-0000000000000000")
    result = embed(dep, "hi")
    assert result.status == 403
    assert orjson.loads(result.body)["error"]["code"] == "InvalidSignatureException"


# --- streams ------------------------------------------------------------------------------------


def test_a_stream_of_split_binary_frames_becomes_openai_chunks_and_done(bedrock):
    result, events = call(deployment(bedrock), chat(), stream=True)
    assert isinstance(result, UpstreamStream), getattr(result, "body", b"")
    assert events[-1] == b"data: [DONE]\n\n"
    assert streamed_text(events) == "Hello from the fake Bedrock."
    parsed = chunks(events)
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in parsed)  # not asked for
    assert result.usage == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert result.error_type == ""
    assert bedrock.requests[-1].path.endswith("/converse-stream")
    assert bedrock.requests[-1].headers["accept"] == "application/vnd.amazon.eventstream"


def test_a_client_that_asked_for_usage_gets_the_usage_chunk_before_done(bedrock):
    _result, events = call(deployment(bedrock, "cached-claude"), chat(), stream=True, wants_usage=True)
    last = chunks(events)[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 50}
    assert events[-1] == b"data: [DONE]\n\n"


def test_frames_split_at_every_byte_boundary_translate_the_same():
    frames = b"".join(
        [
            event("messageStart", {"role": "assistant"}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo"}}),
            event(
                "contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}
            ),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
            event("messageStop", {"stopReason": "tool_use"}),
            event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
        ]
    )
    dep = Deployment(
        id=1, model_name="m", provider_name="p", kind="bedrock", base_url="", api_key="", upstream_model="m"
    )
    ctx = CallContext(request_id="r", endpoint="chat/completions", stream=True, client_wants_usage=True)

    def translate(pieces: list[bytes]) -> list[bytes]:
        translator = ConverseStreamTranslator(dep, ctx)
        out = [e for piece in pieces for e in translator.feed(piece)]
        assert translator.stopped and translator.usage["total_tokens"] == 7
        # "created" is the translator's clock second, which may tick between two runs.
        return [{k: v for k, v in orjson.loads(e[6:]).items() if k != "created"} for e in out]

    whole = translate([frames])
    assert len(whole) == 7
    assert translate([frames[i : i + 1] for i in range(len(frames))]) == whole
    for cut in range(1, len(frames)):
        assert translate([frames[:cut], frames[cut:]]) == whole


def test_a_corrupted_frame_crc_ends_the_stream_with_one_error_event(bedrock):
    result, events = call(deployment(bedrock, "corrupt-crc"), chat(), stream=True)
    assert b"data: [DONE]\n\n" not in events
    error = orjson.loads(events[-1][6:])["error"]
    assert error["code"] == "upstream_bad_frame"
    assert result.error_type == "upstream_bad_frame"
    assert "Checksum" in result.error_message or "CRC" in result.error_message
    assert streamed_text(events[:-1]) == ""  # nothing after the corrupt frame was trusted


@pytest.mark.parametrize(
    ("exception_type", "code", "status_type"),
    [
        ("throttlingException", "ThrottlingException", "rate_limit_error"),
        ("modelStreamErrorException", "ModelStreamErrorException", "upstream_error"),
        ("internalServerException", "InternalServerException", "server_error"),
        ("validationException", "ValidationException", "invalid_request_error"),
    ],
)
def test_an_exception_frame_mid_stream_becomes_one_error_event_without_done(bedrock, exception_type, code, status_type):
    result, events = call(deployment(bedrock, f"stream-exception-{exception_type}"), chat(), stream=True)
    assert b"data: [DONE]\n\n" not in events
    assert streamed_text(events[:-1]) == "Hello from"  # what came before the exception was relayed
    error = orjson.loads(events[-1][6:])["error"]
    assert (error["code"], error["type"]) == (code, status_type)
    assert error["message"] == f"{exception_type} mid-stream from the fake Bedrock"
    assert sum(b'"error"' in e for e in events) == 1
    assert result.error_type == code


def test_an_exception_frame_from_the_translator_alone_names_its_type():
    dep = Deployment(
        id=1, model_name="m", provider_name="p", kind="bedrock", base_url="", api_key="", upstream_model="m"
    )
    translator = ConverseStreamTranslator(dep, CallContext(request_id="r", endpoint="chat/completions", stream=True))
    out = translator.feed(exception("serviceUnavailableException", "try later"))
    assert orjson.loads(out[0][6:])["error"]["code"] == "ServiceUnavailableException"
    assert translator.error.status == 503


def test_a_stream_that_ends_without_message_stop_is_reported_incomplete(bedrock):
    result, events = call(deployment(bedrock, "truncated"), chat(), stream=True)
    assert b"data: [DONE]\n\n" not in events
    assert orjson.loads(events[-1][6:])["error"]["code"] == "upstream_stream_incomplete"
    assert result.error_type == "upstream_stream_incomplete"


# --- tools --------------------------------------------------------------------------------------


def _tool_round_trip(bedrock: FakeBedrock, stream: bool) -> None:
    dep = deployment(bedrock)
    first = chat("Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="auto")
    result, events = call(dep, first, stream=stream)
    if stream:
        parsed = chunks(events)
        calls = [tc for c in parsed for tc in c["choices"][0]["delta"].get("tool_calls", [])]
        assert calls[0] == {
            "index": 0,
            "id": "tooluse_fake0001",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        arguments = "".join(tc["function"]["arguments"] for tc in calls)
        assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"
        tool_call = {
            "id": calls[0]["id"],
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
    else:
        message = orjson.loads(result.body)["choices"][0]
        assert message["finish_reason"] == "tool_calls"
        assert message["message"]["content"] == "Let me check."
        tool_call = message["message"]["tool_calls"][0]
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
    sent = bedrock.requests[-1].body
    assert sent["toolConfig"]["toolChoice"] == {"auto": {}}
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"] == WEATHER_TOOL["function"]["parameters"]

    second = {
        "model": "claude",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": tool_call["id"], "content": "18C and sunny"},
        ],
    }
    result, events = call(dep, second, stream=stream)
    text = streamed_text(events) if stream else orjson.loads(result.body)["choices"][0]["message"]["content"]
    assert text == "The tool said: 18C and sunny"
    messages = bedrock.requests[-1].body["messages"]
    assert messages[1]["content"][1] == {
        "toolUse": {"toolUseId": "tooluse_fake0001", "name": "get_weather", "input": {"city": "Paris"}}
    }
    assert messages[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "tooluse_fake0001", "content": [{"text": "18C and sunny"}]}}],
    }


def test_tools_round_trip_as_json(bedrock):
    _tool_round_trip(bedrock, stream=False)


def test_tools_round_trip_as_a_stream(bedrock):
    _tool_round_trip(bedrock, stream=True)


# --- golden translations ------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_translated_requests_match_the_golden_files(path):
    case = json.loads(path.read_text())
    openai_request = copy.deepcopy(case["openai"])
    assert converse_request(openai_request) == case["converse"]
    assert openai_request == case["openai"]


def test_there_are_golden_files():
    assert len(list(GOLDEN.glob("*.json"))) >= 4


# --- structured outputs ---------------------------------------------------------------------------

CITY = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_a_json_schema_response_format_is_a_forced_tool_whose_input_is_the_content(bedrock):
    result, _ = call(deployment(bedrock), chat("Where?", response_format=CITY))
    assert result.status == 200, result.body
    sent = bedrock.requests[-1].body
    (tool,) = sent["toolConfig"]["tools"]
    assert tool["toolSpec"]["name"] == "gateway_json_response"
    assert tool["toolSpec"]["inputSchema"] == {"json": CITY["json_schema"]["schema"]}
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "gateway_json_response"}}
    choice = orjson.loads(result.body)["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"city": "Paris"}
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


def test_response_format_with_tools_is_a_400_not_a_silent_drop(bedrock):
    sent = len(bedrock.requests)
    result, _ = call(deployment(bedrock), chat("Where?", response_format=CITY, tools=[WEATHER_TOOL]))
    assert result.status == 400 and "together with tools" in orjson.loads(result.body)["error"]["message"]
    assert len(bedrock.requests) == sent
