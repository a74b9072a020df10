"""Anthropic's Messages API on the way in and out: POST /v1/messages and /v1/messages/count_tokens.

The pipeline works in OpenAI's chat format, so this front end translates at its five points: the
request into an OpenAI chat payload, the chat.completion back into a `message`, stream chunks into
Anthropic's named SSE events, and every error into `{"type": "error", "error": {...}}`.

Written from Anthropic's API reference (Messages, streaming, errors); the `anthropic` SDK is the test.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

from proxy import errors
from proxy.errors import ProxyError
from proxy.inbound import Front
from proxy.inbound import openai as inbound
from proxy.providers.anthropic import CLIENT_HEADERS, FORWARDED_HEADERS
from proxy.tokens import estimate_prompt_tokens, estimate_tokens

logger = logging.getLogger("gateway.proxy")

# Anthropic's error type for each status; other 4xx are invalid requests, other 5xx api errors.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Blocks a model produced that another provider cannot take back as input: dropped, not refused,
# so a conversation that started on Claude can continue through any deployment.
IGNORED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, request_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type_for(status), "message": message}}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


def credential(request: HttpRequest) -> str:
    """The virtual key: `x-api-key` (the anthropic SDK's api_key) or `Authorization: Bearer` (its auth_token)."""
    return request.META.get("HTTP_X_API_KEY", "").strip() or inbound.bearer(request)


# --- request: Anthropic Messages -> OpenAI chat ------------------------------------------------------


def _invalid(message: str, param: str | None = None) -> ProxyError:
    return errors.bad_request(message, param=param, code="invalid_request_error")


def _text_of(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _invalid(f"{where}: Input should be a valid string or a list of content blocks", where)
    parts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"{where}.{i}: Input should be a text block", f"{where}.{i}")
        parts.append(block["text"])
    return "\n".join(parts)


def _with_cache_control(part: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    # Kept on the OpenAI-format part so an Anthropic deployment can pass the cache breakpoint on.
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: Field required", f"{where}.source")
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _invalid(f"{where}.source: an image source must be base64 (media_type, data) or url", f"{where}.source")
    return _with_cache_control({"type": "image_url", "image_url": {"url": url}}, block)


def _document_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict):
        kind = source.get("type")
        if kind == "text" and isinstance(source.get("data"), str):
            return _with_cache_control({"type": "text", "text": source["data"]}, block)
        if kind == "base64" and isinstance(source.get("data"), str):
            media_type = source.get("media_type") or "application/pdf"
            file = {
                "filename": block.get("title") or "document.pdf",
                "file_data": f"data:{media_type};base64,{source['data']}",
            }
            return _with_cache_control({"type": "file", "file": file}, block)
    raise _invalid(f"{where}.source: only text and base64 documents can be sent to this model", f"{where}.source")


def _user_part(block: dict[str, Any], where: str, relay: bool = False) -> dict[str, Any] | None:
    """One user content block as an OpenAI part. relay: the body goes to Anthropic as it is, so a block the
    gateway cannot translate is kept raw (a translating adapter refuses it) instead of refused here."""
    kind = block.get("type")
    try:
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _invalid(f"{where}.text: Field required", f"{where}.text")
            return _with_cache_control({"type": "text", "text": block["text"]}, block)
        if kind == "image":
            return _image_part(block, where)
        if kind == "document":
            return _document_part(block, where)
    except ProxyError:
        if relay:
            return dict(block)
        raise
    if kind in IGNORED_BLOCKS:
        return None
    if relay:
        return dict(block)
    raise _invalid(f"{where}.type: content blocks of type {kind!r} cannot be sent to this model", f"{where}.type")


def _tool_result(block: dict[str, Any], where: str, relay: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool_result block: the OpenAI `tool` message, and its images (a tool message holds only text)."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _invalid(f"{where}.tool_use_id: Field required", f"{where}.tool_use_id")
    content = block.get("content", "")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, item in enumerate(content):
            part = _user_part(item, f"{where}.content.{j}", relay) if isinstance(item, dict) else None
            if part is None:
                continue
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
    else:
        raise _invalid(f"{where}.content: Input should be a valid string or list", f"{where}.content")
    text = "\n".join(texts)
    if block.get("is_error") is True and not text:
        text = "error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _user_messages(content: Any, where: str, relay: bool = False) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    # OpenAI wants tool results as `tool` messages right after the assistant's tool calls, before
    # anything else the user says: Anthropic puts them first in the user turn, so the order holds.
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise _invalid(f"{where}.{i}: Input should be an object", f"{where}.{i}")
        if block.get("type") == "tool_result":
            message, images = _tool_result(block, f"{where}.{i}", relay)
            tools.append(message)
            parts.extend(images)
        else:
            part = _user_part(block, f"{where}.{i}", relay)
            if part is not None:
                parts.append(part)
    if parts:
        tools.append({"role": "user", "content": parts})
    return tools


def _assistant_message(content: Any, where: str, relay: bool = False) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []  # relay: blocks only Anthropic understands (server tool use and results)
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _invalid(f"{where}.{i}: a tool_use block needs an id and a name", f"{where}.{i}")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
        elif relay and isinstance(block, dict) and kind not in IGNORED_BLOCKS:
            raw.append(dict(block))
        elif kind not in IGNORED_BLOCKS:
            raise _invalid(f"{where}.{i}.type: content blocks of type {kind!r} cannot be sent to this model", where)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if raw:
        message["content"] = ([{"type": "text", "text": message["content"]}] if message["content"] else []) + raw
    if calls:
        message["tool_calls"] = calls
    return message


def _system_message(system: Any) -> dict[str, Any]:
    if isinstance(system, str):
        return {"role": "system", "content": system}
    _text_of(system, "system")  # validates the blocks
    return {"role": "system", "content": [_with_cache_control({"type": "text", "text": b["text"]}, b) for b in system]}


def _messages(payload: dict[str, Any], relay: bool = False) -> list[dict[str, Any]]:
    messages = payload.get("messages")
    if messages is None:
        raise _invalid("messages: Field required", "messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required", "messages")
    out: list[dict[str, Any]] = []
    system = payload.get("system")
    if system is not None and system != "" and system != []:
        out.append(_system_message(system))
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: Input should be an object", where)
        role = message.get("role")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise _invalid(f"{where}.content: Input should be a valid string or list", f"{where}.content")
        if role == "user":
            out.extend(_user_messages(content, f"{where}.content", relay))
        elif role == "assistant":
            out.append(_assistant_message(content, f"{where}.content", relay))
        else:
            raise _invalid(
                f"{where}.role: Unexpected role {role!r}. The Messages API accepts a top-level `system` "
                "parameter, not \"system\" as an input message role; roles are 'user' and 'assistant'.",
                f"{where}.role",
            )
    return out


def _tools(tools: Any, relay: bool = False) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if relay and isinstance(tool, dict) and tool.get("type") not in (None, "custom"):
            out.append(dict(tool))  # a server tool: Anthropic runs it; a translating adapter refuses it
            continue
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{i}.name: Field required", f"tools.{i}")
        if tool.get("type") not in (None, "custom"):
            # Server tools (web search, code execution...) run at Anthropic: no other provider has them.
            raise _invalid(f"tools.{i}.type: the server tool {tool['type']!r} cannot be used with this model", "tools")
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append(_with_cache_control({"type": "function", "function": function}, tool))
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _invalid("tool_choice: Input should be an object", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _invalid("tool_choice.type: use 'auto', 'any', 'tool' (with a name) or 'none'", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and chat.get("tools"):
        chat["parallel_tool_calls"] = False


def _positive_int(payload: dict[str, Any], name: str, required: bool) -> int | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise _invalid(f"{name}: Field required", name)
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _invalid(f"{name}: Input should be a positive integer", name)
    return value


def to_chat(payload: dict[str, Any], *, count_only: bool = False, relay: bool = False) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat payload (validated; raises ProxyError 400).

    count_only: the count_tokens body, which has no max_tokens.
    relay: the body itself may go to an Anthropic upstream (it is the same format), so only what the gateway
    needs is validated (model, max_tokens, stream, the messages' structure); a setting it cannot translate
    is left out of the OpenAI payload, and a block or server tool kept raw, for Anthropic to judge."""
    model = payload.get("model")
    if model is None:
        raise _invalid("model: Field required", "model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("model: Input should be a non-empty string", "model")
    max_tokens = _positive_int(payload, "max_tokens", required=not count_only)
    chat: dict[str, Any] = {"model": model, "messages": _messages(payload, relay)}
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    for option in (_sampling, _stop_sequences, _tool_settings, _output_format):
        try:
            option(payload, chat, relay)
        except ProxyError:
            if not relay:
                raise
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean", "stream")
    if stream:
        # Usage arrives as the last chunk; Anthropic clients read it from message_delta.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _sampling(payload: dict[str, Any], chat: dict[str, Any], relay: bool) -> None:
    for name in ("temperature", "top_p"):
        value = payload.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _invalid(f"{name}: Input should be a valid number", name)
            chat[name] = value


def _stop_sequences(payload: dict[str, Any], chat: dict[str, Any], relay: bool) -> None:
    stops = payload.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences: Input should be a list of strings", "stop_sequences")
        if stops:
            chat["stop"] = stops


def _output_format(payload: dict[str, Any], chat: dict[str, Any], relay: bool) -> None:
    """Anthropic's structured outputs (`output_format`, or `output_config.format`) as OpenAI's
    `response_format`, so that a model served by any other provider answers in the schema too (an
    Anthropic upstream gets the client's own body, format and all, when relayed natively)."""
    config = payload.get("output_config")
    fmt = payload.get("output_format")
    if fmt is None and isinstance(config, dict):
        fmt = config.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _invalid('output_format: expected {"type": "json_schema", "schema": {...}}', "output_format")
    chat["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
    }


def _tool_settings(payload: dict[str, Any], chat: dict[str, Any], relay: bool) -> None:
    tools = payload.get("tools")
    if tools is not None:
        if converted := _tools(tools, relay):
            chat["tools"] = converted
    if payload.get("tool_choice") is not None:
        _tool_choice(payload["tool_choice"], chat)


# --- answer: OpenAI chat.completion -> Anthropic message ---------------------------------------------


def message_id(upstream_id: Any) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"
    return "msg_" + os.urandom(12).hex()


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic's: input_tokens excludes cache reads and writes, which have their own."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = _count(details.get("cached_tokens"))
    written = _count(details.get("cache_write_tokens"))
    return {
        "input_tokens": max(_count(usage.get("prompt_tokens")) - cached - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def _thinking_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's reasoning as Anthropic thinking blocks: the signed blocks when the upstream was Claude
    (thinking_blocks), else the bare reasoning_content of other reasoning models, unsigned."""
    blocks = []
    for block in message.get("thinking_blocks") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
            signature = block.get("signature")
            signature = signature if isinstance(signature, str) else ""
            blocks.append({"type": "thinking", "thinking": block["thinking"], "signature": signature})
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    reasoning = message.get("reasoning_content")
    if not blocks and isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    return blocks


def to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = found if isinstance(found := choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = _thinking_of(message)
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or "toolu_" + os.urandom(12).hex(),
                    "name": function.get("name", ""),
                    "input": _tool_input(function.get("arguments")),
                }
            )
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_of(completion.get("usage")),
    }


def _openai_error_message(body: bytes, status: int) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return f"The upstream provider answered with status {status}."


# --- stream: OpenAI chunks -> Anthropic events -------------------------------------------------------


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _data_of(event: bytes) -> bytes | None:
    """The data of one OpenAI SSE event (comments and other fields dropped), or None."""
    data = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


class StreamTranslator:
    """One per streamed call: turns OpenAI chat.completion.chunk events into Anthropic's event sequence
    message_start, (content_block_start, content_block_delta..., content_block_stop)..., message_delta,
    message_stop. Usage comes last in OpenAI's stream, so message_delta carries the cumulative counts."""

    __slots__ = ("block", "call", "ended", "index", "started", "stop_reason", "tool_index", "usage")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.started = False
        self.ended = False
        self.index = -1  # of the current content block
        self.block: str | None = None  # "text", "thinking" or "tool_use" while a block is open
        self.tool_index: Any = None  # the OpenAI tool_calls index the open tool_use block is for
        self.stop_reason: str | None = None
        self.usage: Any = None

    def __call__(self, event: bytes) -> bytes | None:
        if self.ended:
            return None
        data = _data_of(event)
        if data is None:
            return None
        out: list[bytes] = []
        if data == b"[DONE]":
            self._start(out, None)
            self._close_block(out)
            usage = usage_of(self.usage)
            delta: dict[str, Any] = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}
            out.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
            out.append(sse("message_stop", {"type": "message_stop"}))
            self.ended = True
            return b"".join(out)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            message = error.get("message") if isinstance(error.get("message"), str) else "The upstream stream failed."
            self.ended = True
            body = {"type": "error", "error": {"type": "api_error", "message": message}}
            return sse("error", body)
        self._start(out, chunk.get("id"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            delta = found if isinstance(found := choice.get("delta"), dict) else {}
            self._thinking(out, delta)
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block != "text":
                    self._open(out, {"type": "text", "text": ""}, "text")
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._tool_delta(out, call)
            finish = choice.get("finish_reason")
            if finish:
                self.stop_reason = STOP_REASONS.get(finish, "end_turn")
                self._close_block(out)
        return b"".join(out) or None

    def _thinking(self, out: list[bytes], delta: dict[str, Any]) -> None:
        """reasoning_content deltas as a thinking block; the signed block that follows (thinking_blocks, from
        a Claude upstream) signs it and closes it; a redacted block is a block of its own."""
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self.block != "thinking":
                self._open(out, {"type": "thinking", "thinking": "", "signature": ""}, "thinking")
            out.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
        for block in delta.get("thinking_blocks") or ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
                self._open(out, {"type": "redacted_thinking", "data": block["data"]}, "redacted_thinking")
                self._close_block(out)
            elif block.get("type") == "thinking" and isinstance(block.get("signature"), str):
                if self.block != "thinking":  # signed but never streamed as text: the whole block at once
                    self._open(out, {"type": "thinking", "thinking": "", "signature": ""}, "thinking")
                    if isinstance(block.get("thinking"), str) and block["thinking"]:
                        out.append(self._delta({"type": "thinking_delta", "thinking": block["thinking"]}))
                out.append(self._delta({"type": "signature_delta", "signature": block["signature"]}))
                self._close_block(out)

    def _start(self, out: list[bytes], upstream_id: Any) -> None:
        if self.started:
            return
        self.started = True
        message = {
            "id": message_id(upstream_id),
            "type": "message",
            "role": "assistant",
            "model": self.call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The prompt count is only known at the end; message_delta carries it (cumulative).
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        out.append(sse("message_start", {"type": "message_start", "message": message}))
        out.append(sse("ping", {"type": "ping"}))

    def _open(self, out: list[bytes], block: dict[str, Any], kind: str) -> None:
        self._close_block(out)
        self.index += 1
        self.block = kind
        out.append(
            sse("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block})
        )

    def _close_block(self, out: list[bytes]) -> None:
        if self.block is not None:
            out.append(sse("content_block_stop", {"type": "content_block_stop", "index": self.index}))
            self.block = None
            self.tool_index = None

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _tool_delta(self, out: list[bytes], call: dict[str, Any]) -> None:
        function = found if isinstance(found := call.get("function"), dict) else {}
        index = call.get("index", 0)
        if self.block != "tool_use" or call.get("id") or index != self.tool_index:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + os.urandom(12).hex(),
                "name": function.get("name") or "",
                "input": {},
            }
            self._open(out, block, "tool_use")
            self.tool_index = index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))


# --- the front end ------------------------------------------------------------------------------------


def _keep_client_headers(request: HttpRequest) -> None:
    """The client's anthropic-beta / anthropic-version, for the Anthropic adapter to pass on (set for every
    request, so nothing carries over)."""
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if request.headers.get(name)}
    CLIENT_HEADERS.set(headers or None)


class AnthropicFront(Front):
    """Anthropic's Messages format in and out, over the OpenAI-format pipeline."""

    name = "anthropic"
    native_kind = "anthropic"

    def credential(self, request: HttpRequest) -> str:
        return credential(request)

    def parse(self, request: HttpRequest, endpoint: str) -> dict[str, Any]:
        _keep_client_headers(request)
        return to_chat(inbound.parse_body(request))

    def parse_native(self, request: HttpRequest, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        _keep_client_headers(request)
        body = inbound.parse_body(request)
        return to_chat(body, relay=True), body

    def render(self, call: Any, body: bytes) -> bytes:
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(completion, dict):
            return body
        return orjson.dumps(to_message(completion, call.model))

    def render_upstream_error(self, call: Any, status: int, body: bytes) -> bytes:
        return error_body(status, _openai_error_message(body, status), call.request_id)

    def stream_filter(self, call: Any) -> StreamTranslator:
        return StreamTranslator(call)

    def error_response(self, exc: ProxyError) -> HttpResponse:
        response = HttpResponse(error_body(exc.status, exc.message), status=exc.status, content_type="application/json")
        for name, value in exc.headers.items():
            response[name] = value
        return response


ANTHROPIC = AnthropicFront()


def estimate_input_tokens(chat: dict[str, Any]) -> int:
    """A count_tokens estimate: the messages as OpenAI counts them, plus the tool definitions."""
    total = estimate_prompt_tokens(chat["messages"])
    for message in chat["messages"]:
        for call in message.get("tool_calls") or []:
            total += estimate_tokens(call["function"]["name"] + call["function"]["arguments"])
    if chat.get("tools"):
        total += estimate_tokens(orjson.dumps(chat["tools"]).decode())
    return total
