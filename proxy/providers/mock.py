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


# --- tools and structured outputs: answers real client code can parse -------------------------------


def _sample(schema: Any, root: dict, depth: int = 0) -> Any:
    """A value that satisfies `schema` (the subset tools and structured outputs use): every property,
    the first enum value or alternative, minimums, one array item."""
    if not isinstance(schema, dict) or depth > 12:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _sample(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")] or options
            return _sample(usable[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: _sample(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [_sample(schema.get("items", {}), root, depth + 1)] * max(int(schema.get("minItems") or 1), 1)
    return _scalar(kind, schema)


def _scalar(kind: Any, schema: dict) -> Any:
    if kind == "integer":
        return int(schema.get("minimum", 0) or 0)
    if kind == "number":
        return float(schema.get("minimum", 0) or 0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {"date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "email": "mock@example.com"}.get(
        schema.get("format", ""), "mock"
    )


def _tool_call(payload: dict[str, Any]) -> dict | None:
    """The tool the mock calls, if any: the one tool_choice names, or with "required" (or "auto" right
    after the user spoke, so that a tool round trip ends) the first function tool."""
    tools = [t for t in payload.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = payload.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    messages = payload.get("messages") or []
    last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        tool = next((t for t in tools if t["function"].get("name") == name), None)
    elif choice == "required" or last_role == "user":
        tool = tools[0]
    else:
        return None
    if tool is None:
        return None
    function = tool["function"]
    parameters = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    arguments = _sample(parameters, parameters) if parameters else {}
    digest = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    return {
        "id": f"call_mock{digest}",
        "type": "function",
        "function": {"name": function.get("name", "tool"), "arguments": orjson.dumps(arguments).decode()},
    }


def _structured(payload: dict[str, Any], words: list[str]) -> str | None:
    """JSON content for `response_format` json_schema (a value of the schema) or json_object."""
    fmt = payload.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        schema = fmt["json_schema"].get("schema")
        return orjson.dumps(_sample(schema, schema) if isinstance(schema, dict) else {}).decode()
    if fmt.get("type") == "json_object":
        return orjson.dumps({"answer": " ".join(words)}).decode()
    return None


def _choices_count(payload: dict[str, Any]) -> int:
    n = payload.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 16 else 1


def _answer(payload: dict[str, Any]) -> tuple[str | None, dict | None, str]:
    """(content, tool call, finish reason) of the mock's answer."""
    call = _tool_call(payload)
    if call is not None:
        return None, call, "tool_calls"
    words, finish = _reply_words(payload)
    structured = _structured(payload, words)
    if structured is not None:
        return structured, None, "stop"
    return " ".join(words), None, finish


class MockAdapter(ProviderAdapter):
    kind = "mock"

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        if ctx.endpoint == "embeddings":
            return self._embeddings(deployment, payload)
        content, call, finish = _answer(payload)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if call is not None:
            message["tool_calls"] = [call]
        n = _choices_count(payload)
        prompt_tokens = estimate_prompt_tokens(payload.get("messages") or [])
        produced = content if content is not None else call["function"]["arguments"] if call else ""
        usage = _usage(prompt_tokens, estimate_tokens(produced) * n)
        body = {
            "id": _completion_id(payload),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.upstream_model,
            "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)],
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
        content, call, finish = _answer(self.payload)
        n = _choices_count(self.payload)
        base = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.deployment.upstream_model,
            "service_tier": "default",
            "system_fingerprint": "fp_gateway_mock",
        }
        include_usage = self.ctx.client_wants_usage

        def chunk(delta: dict, finish_reason: str | None = None, index: int = 0) -> bytes:
            body = {
                **base,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                body["usage"] = None
            return b"data: " + orjson.dumps(body) + b"\n\n"

        for index in range(n):
            if call is not None:
                # As OpenAI streams a tool call: id and name first, then the arguments in pieces.
                first = {
                    "index": 0,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                yield chunk({"role": "assistant", "content": None, "tool_calls": [first]}, index=index)
                arguments = call["function"]["arguments"]
                for start in range(0, len(arguments), 16):
                    piece = {"index": 0, "function": {"arguments": arguments[start : start + 16]}}
                    yield chunk({"tool_calls": [piece]}, index=index)
            else:
                yield chunk({"role": "assistant", "content": "", "refusal": None}, index=index)
                pieces = (content or "").split(" ")
                for i, word in enumerate(pieces):
                    yield chunk({"content": word if i == 0 else " " + word}, index=index)
            yield chunk({}, finish, index=index)
        prompt_tokens = estimate_prompt_tokens(self.payload.get("messages") or [])
        produced = content if content is not None else call["function"]["arguments"] if call else ""
        self.usage = _usage(prompt_tokens, estimate_tokens(produced) * n)
        if include_usage:
            yield b"data: " + orjson.dumps({**base, "choices": [], "usage": self.usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"
