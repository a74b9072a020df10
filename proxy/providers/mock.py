"""The built-in `mock` provider: a deterministic fake LLM inside the gateway.

It lets the quickstart and the console work without any provider account. The same request always
gets the same answer, usage is counted like a real provider would report it, and streams use
OpenAI's exact chunk format, so clients cannot tell it from a real upstream.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from proxy.providers.base import CallContext, ProviderAdapter, UpstreamResult, UpstreamStream
from proxy.snapshot import Deployment
from proxy.tokens import estimate_prompt_tokens, estimate_tokens

DEFAULT_DIMENSIONS = 16


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
                )
    return ""


def _reply_words(payload: dict[str, Any]) -> tuple[list[str], str]:
    text = " ".join(_last_user_text(payload.get("messages") or []).split())
    words = ["This", "is", "the", "gateway's", "mock", "model", "answering:"] + (text.split()[:48] or ["hello"])
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(words):
        return words[:limit], "length"
    return words, "stop"


def _completion_id(payload: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(payload.get("messages"), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return "chatcmpl-mock" + digest[:24]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _embedding(text: str, dimensions: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    vector = values[:dimensions]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vector]


class MockAdapter(ProviderAdapter):
    kind = "mock"

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        if ctx.endpoint == "embeddings":
            return self._embeddings(deployment, payload)
        words, finish = _reply_words(payload)
        content = " ".join(words)
        prompt_tokens = estimate_prompt_tokens(payload.get("messages") or [])
        usage = _usage(prompt_tokens, estimate_tokens(content))
        body = {
            "id": _completion_id(payload),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_gateway_mock",
        }
        return UpstreamResult(status=200, body=orjson.dumps(body), usage=usage)

    def _embeddings(self, deployment: Deployment, payload: dict[str, Any]) -> UpstreamResult:
        raw = cast("str | list[Any]", payload.get("input"))  # checked by inbound.openai.validate_embeddings
        inputs = [raw] if isinstance(raw, str) else list(raw)
        texts = [
            x if isinstance(x, str) else " ".join(str(t) for t in x) if isinstance(x, list) else str(x) for x in inputs
        ]
        dims = payload.get("dimensions")
        dims = dims if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 4096 else DEFAULT_DIMENSIONS
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = _embedding(text, dims)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        prompt_tokens = sum(estimate_tokens(t) for t in texts)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        body = {"object": "list", "data": data, "model": deployment.upstream_model, "usage": usage}
        return UpstreamResult(status=200, body=orjson.dumps(body), usage=usage)

    async def open_stream(
        self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext
    ) -> UpstreamResult | UpstreamStream:
        return MockStream(deployment, payload, ctx)


class MockStream(UpstreamStream):
    def __init__(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> None:
        super().__init__()
        self.deployment = deployment
        self.payload = payload
        self.ctx = ctx
        # Computed before the first byte: a body that cannot be encoded fails here, not mid-stream.
        self.completion_id = _completion_id(payload)

    async def events(self) -> AsyncIterator[bytes]:
        words, finish = _reply_words(self.payload)
        base = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.deployment.upstream_model,
            "service_tier": "default",
            "system_fingerprint": "fp_gateway_mock",
        }
        include_usage = self.ctx.client_wants_usage

        def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
            body = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                body["usage"] = None
            return b"data: " + orjson.dumps(body) + b"\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for i, word in enumerate(words):
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, finish)
        prompt_tokens = estimate_prompt_tokens(self.payload.get("messages") or [])
        self.usage = _usage(prompt_tokens, estimate_tokens(" ".join(words)))
        if include_usage:
            yield b"data: " + orjson.dumps({**base, "choices": [], "usage": self.usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"
