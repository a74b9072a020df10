"""The bytes on the wire: the benchmark's request body and the mock upstream's canned answers.

Kept in one module so the pre-check can verify the gateway relayed exactly what the mock said.
Bodies match shared/bench (nginx-mock.conf, run.sh) so figures stay comparable with LiteLLM's.
"""

from __future__ import annotations

import orjson

UPSTREAM_MODEL = "gpt-4o-mini-2024-07-18"
JSON_MODEL = "gpt-4o-mini"
STREAM_MODEL = "gpt-4o-mini-stream"

JSON_ANSWER = (
    "Sure! Here is a short answer: benchmarks measure what you run, "
    "so keep the mock fixed and change one thing at a time."
)
STREAM_PIECES = ("Sure! Here is", " a short answer:", " benchmarks measure", " what you run.")
STREAM_ANSWER = "".join(STREAM_PIECES)

_USAGE_DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

CHAT_COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-mock0001",
        "object": "chat.completion",
        "created": 1735689600,
        "model": UPSTREAM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": JSON_ANSWER, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 48, "completion_tokens": 26, "total_tokens": 74, **_USAGE_DETAILS},
        "service_tier": "default",
        "system_fingerprint": "fp_mock00001",
    }
)


def _chunk(choices: list[dict], usage: dict | None = None) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-mock0002",
                "object": "chat.completion.chunk",
                "created": 1735689600,
                "model": UPSTREAM_MODEL,
                "service_tier": "default",
                "system_fingerprint": "fp_mock00001",
                "choices": choices,
                "usage": usage,
            }
        )
        + b"\n\n"
    )


def _delta(delta: dict, finish: str | None = None) -> list[dict]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


# What OpenAI sends: a role chunk, content chunks, a finish_reason chunk; then, only when the client
# asked with stream_options.include_usage, a usage chunk with no choices; then [DONE].
SSE_EVENTS: tuple[bytes, ...] = (
    _chunk(_delta({"role": "assistant", "content": "", "refusal": None})),
    *(_chunk(_delta({"content": piece})) for piece in STREAM_PIECES),
    _chunk(_delta({}, "stop")),
)
SSE_USAGE_EVENT = _chunk([], {"prompt_tokens": 48, "completion_tokens": 12, "total_tokens": 60, **_USAGE_DETAILS})
SSE_DONE = b"data: [DONE]\n\n"

EMBEDDINGS = orjson.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.015797347]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
)


# Replaced per request by the load driver when a variant asks for unique prompts (prompt cache misses).
UNIQUE_MARKER = "@@unique@@"
USER_PROMPT = "Explain in two sentences why a gateway benchmark needs a fixed, zero-latency upstream mock."


def request_body(model: str, *, stream: bool, include_usage: bool = False, unique: bool = False) -> bytes:
    """The client's request: two messages, ~280 bytes, as in shared/bench/run.sh. With `unique`, the user
    message starts with a marker the load driver replaces by a fresh token on every request."""
    body: dict = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
            {"role": "user", "content": f"{UNIQUE_MARKER} {USER_PROMPT}" if unique else USER_PROMPT},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def responses_body(model: str, *, stream: bool, unique: bool = False, store: bool = True) -> bytes:
    """The same request in the Responses API's shape (POST /v1/responses): instructions and input. With
    `store` false, nothing is kept: what is left over chat is the translation."""
    body: dict = {
        "model": model,
        "instructions": "You are a concise assistant. Answer in one short paragraph.",
        "input": f"{UNIQUE_MARKER} {USER_PROMPT}" if unique else USER_PROMPT,
        "max_output_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    if not store:
        body["store"] = False
    return orjson.dumps(body)
