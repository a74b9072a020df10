"""Anthropic's Messages API (`POST /v1/messages`), translated to and from OpenAI's chat format.

Requests: system messages become `system`, `role: tool` messages become `tool_result` blocks in a
user turn, assistant `tool_calls` become `tool_use` blocks, images become base64 or URL sources, and
`max_tokens` (which Anthropic requires) defaults to the model's known output limit. Answers, stream
events, usage (cache reads and writes included) and errors come back in OpenAI's shape, so costs,
limits and logs work as for any other provider.

Extended thinking maps as peers (LiteLLM) map it for OpenAI-format clients: `reasoning_effort` becomes a
`thinking` budget; answers carry the thinking text as `reasoning_content` and the signed blocks as
`thinking_blocks` (streamed: `reasoning_content` deltas, then each block whole once its signature arrives),
and an assistant turn sent back with its `thinking_blocks` gets them back in front, as Anthropic requires.
The client's own `anthropic-beta` / `anthropic-version` headers (CLIENT_HEADERS) go up unless the operator
set them on the deployment.

A client that speaks Anthropic's format itself (POST /v1/messages, ctx.native) is relayed instead: its
own body goes up with only `model` swapped, and the answer, stream events and errors come back as
Anthropic sent them (marked `native`); only usage is read, into OpenAI's format, for costs and logs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import httpx
import orjson

from gateway_project.common.redact import redact, redact_bytes, secrets_of
from proxy.errors import error_body
from proxy.providers.base import (
    HARMLESS_PARAMETERS,
    STRUCTURED_TOOL,
    STRUCTURED_TOOL_DESCRIPTION,
    ZERO,
    CallContext,
    FormatRefused,
    ProviderAdapter,
    Refused,
    Uncarried,
    UpstreamResult,
    UpstreamStream,
    bad_request,
    bad_response,
    check_parameters,
    structured_schema,
)
from proxy.snapshot import Deployment
from proxy.sse import SSESplitter, event_data
from proxy.upstream import get_client

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
FALLBACK_MAX_TOKENS = 4096  # when the model's output limit is unknown

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}

# Anthropic error type -> (OpenAI error type, status the client sees). An overloaded Anthropic (529) is
# answered as 503, the status OpenAI clients know to retry; every other status is kept.
ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}
PASS_HEADERS = ("retry-after", "retry-after-ms")

# OpenAI's reasoning_effort as an extended-thinking budget (LiteLLM's figures; 1024 is Anthropic's minimum).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}
MIN_THINKING_BUDGET = 1024
THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})

# The `anthropic-beta` / `anthropic-version` headers the client itself sent, set by the Anthropic front end
# for the request being served (a context variable: each request runs in its own task). They go upstream
# unless the operator set that header on the deployment.
CLIENT_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("anthropic_client_headers", default=None)
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")


# OpenAI's chat parameters (proxy.providers.base.CHAT_PARAMETERS) by what this adapter does with them;
# the README's "Request parameters by provider kind" table says the same.
CARRIED = frozenset(
    {
        "messages",
        "model",
        "max_tokens",
        "max_completion_tokens",
        "stop",  # stop_sequences
        "stream",
        "stream_options",  # include_usage: the gateway builds the usage chunk itself
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",  # tool_choice.disable_parallel_tool_use
        "response_format",  # a forced tool (proxy.providers.base.STRUCTURED_TOOL)
        "reasoning_effort",  # a thinking budget
        "user",  # metadata.user_id
        "safety_identifier",  # metadata.user_id, when there is no `user`
    }
)
IGNORED = HARMLESS_PARAMETERS
_NO_LOGPROBS = "Anthropic returns no log probabilities: leave out logprobs and top_logprobs"
REFUSED = {
    "n": Uncarried("This provider returns one choice per request: n must be 1", (1,)),
    "logprobs": Uncarried(_NO_LOGPROBS, (False,)),
    "top_logprobs": Uncarried(_NO_LOGPROBS, (0,)),
    "seed": Uncarried("Anthropic has no seeded sampling: leave out seed"),
    "frequency_penalty": Uncarried("Anthropic has no frequency_penalty: leave it out or set it to 0", ZERO),
    "presence_penalty": Uncarried("Anthropic has no presence_penalty: leave it out or set it to 0", ZERO),
    "logit_bias": Uncarried("Anthropic has no logit_bias: leave it out", ({},)),
    "modalities": Uncarried('Anthropic answers in text only: modalities must be ["text"]', (["text"],)),
    "audio": Uncarried("Anthropic answers in text only: leave out audio"),
    "verbosity": Uncarried("Anthropic has no verbosity setting: leave it out or set it to medium", ("medium",)),
    "web_search_options": Uncarried("web_search_options is not translated for Anthropic: leave it out"),
    "moderation": Uncarried("moderation is not available with this provider: leave it out"),
    "functions": Uncarried("The deprecated functions are not translated for this provider: send tools"),
    "function_call": Uncarried("The deprecated function_call is not translated for this provider: send tool_choice"),
}


class _BadRequest(Exception):
    """The OpenAI request cannot be expressed in Anthropic's format (`param`: the parameter at fault)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# --- request translation --------------------------------------------------------------------------------


def _image(url: Any) -> dict:
    if not isinstance(url, str) or not url:
        raise _BadRequest("image_url.url must be a non-empty string")
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        media_type = header[5:].split(";")[0]
        if not sep or ";base64" not in header or not media_type:
            raise _BadRequest("An image data URL must look like data:image/png;base64,...")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _BadRequest("image_url.url must be an http(s) URL or a base64 data URL")


def _part(part: Any) -> dict:
    """One OpenAI content part as an Anthropic content block."""
    if not isinstance(part, dict):
        raise _BadRequest("Each content part must be an object")
    kind = part.get("type")
    block: dict[str, Any]
    if kind == "text":
        block = {"type": "text", "text": str(part.get("text") or "")}
    elif kind == "image_url":
        image = part.get("image_url")
        block = _image(image.get("url") if isinstance(image, dict) else image)
    elif kind in THINKING_BLOCKS:
        thinking = _thinking_block(part)
        if thinking is None:
            return {"type": "text", "text": ""}  # left out, as an empty text block is
        return thinking
    elif kind == "file":
        data = (part.get("file") or {}).get("file_data") or ""
        header, _, encoded = data.partition(",")
        if not header.startswith("data:") or ";base64" not in header:
            raise _BadRequest("Only base64 data URLs are supported in file parts for this provider")
        media_type = header[5:].split(";")[0]
        block = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": encoded}}
    else:
        raise _BadRequest(f"Content parts of type {kind!r} are not supported by this provider")
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _thinking_block(block: Any) -> dict | None:
    """A thinking block an assistant turn sends back (from `thinking_blocks` or its content), signature kept:
    Anthropic checks it, and wants the blocks back unchanged when tools were used while thinking. One without
    a signature (a client that kept only the text) is left out: Anthropic would refuse it, not use it."""
    if not isinstance(block, dict) or block.get("type") not in THINKING_BLOCKS:
        raise _BadRequest("thinking_blocks may only hold thinking and redacted_thinking blocks (objects)")
    if block["type"] == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block["data"]} if isinstance(block.get("data"), str) else None
    signature = block.get("signature")
    if not isinstance(block.get("thinking"), str) or not isinstance(signature, str) or not signature:
        return None
    return {"type": "thinking", "thinking": block["thinking"], "signature": signature}


def _blocks(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        # Anthropic refuses empty text blocks; OpenAI clients sometimes send them.
        return [b for b in map(_part, content) if b["type"] != "text" or b["text"] or "cache_control" in b]
    raise _BadRequest("message content must be a string or a list of content parts")


def _with_cache_control(message: dict, blocks: list[dict]) -> list[dict]:
    """A message-level cache_control marks the message's last block (where Anthropic expects it)."""
    control = message.get("cache_control")
    if control is not None and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": control}
    return blocks


def _tool_result(message: dict) -> dict:
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or "")}
    if isinstance(content, list):
        block["content"] = _blocks(content)
    elif content is not None:
        block["content"] = str(content)
    if "cache_control" in message:
        block["cache_control"] = message["cache_control"]
    return block


def _assistant(message: dict) -> Any:
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    thinking = message.get("thinking_blocks")
    if thinking is not None and not isinstance(thinking, list):
        raise _BadRequest("thinking_blocks must be a list")
    # The turn's thinking comes first, as Anthropic produced it. (A bare reasoning_content has no
    # signature, so Anthropic would refuse it: it is not sent back.)
    thought = [b for b in map(_thinking_block, thinking or ()) if b is not None]
    if not tool_calls:
        if isinstance(content, str) and "cache_control" not in message and not thought:
            return content
        return _with_cache_control(message, thought + _blocks(content))
    blocks = thought + _blocks(content)
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            raise _BadRequest("Each assistant tool call needs a function with a name")
        arguments = function.get("arguments") or "{}"
        try:
            args = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise _BadRequest(f"The arguments of tool call {call.get('id')!r} are not valid JSON") from None
        blocks.append({"type": "tool_use", "id": str(call.get("id") or ""), "name": function["name"], "input": args})
    return _with_cache_control(message, blocks)


def _messages(payload: dict) -> tuple[list[dict], list[dict]]:
    system: list[dict] = []
    out: list[dict] = []
    content: str | list[dict]
    for message in payload.get("messages") or ():
        if not isinstance(message, dict):
            raise _BadRequest("Each message must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_with_cache_control(message, _blocks(message.get("content"))))
            continue
        if role == "tool":
            role, content = "user", [_tool_result(message)]
        elif role == "user":
            user_content = message.get("content")
            if isinstance(user_content, str) and "cache_control" not in message:
                content = user_content
            else:
                content = _with_cache_control(message, _blocks(user_content))
        elif role == "assistant":
            content = _assistant(message)
        else:
            raise _BadRequest(f"Messages with role {role!r} are not supported by this provider")
        if out and out[-1]["role"] == role:
            # Anthropic wants alternating turns: consecutive tool results (and a user message after them)
            # belong in one user turn.
            previous = out[-1]["content"]
            if isinstance(previous, str):
                previous = _blocks(previous)
            out[-1]["content"] = previous + (_blocks(content) if isinstance(content, str) else content)
        else:
            out.append({"role": role, "content": content})
    return system, out


def _tools(tools: Any) -> list[dict]:
    out = []
    for tool in tools:
        function = (
            tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        )
        if not isinstance(function, dict) or not function.get("name"):
            raise _BadRequest("Only function tools with a name are supported by this provider", "tools")
        item: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            item["description"] = function["description"]
        item["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        if "cache_control" in tool:
            item["cache_control"] = tool["cache_control"]
        out.append(item)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise _BadRequest(f"tool_choice {choice!r} is not supported", "tool_choice")
        result = dict(TOOL_CHOICES[choice])
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _BadRequest("tool_choice must be auto, none, required or a function", "tool_choice")
    if parallel is False and (result is None or result["type"] != "none"):
        result = result or {"type": "auto"}
        result["disable_parallel_tool_use"] = True
    return result


def _max_tokens(payload: dict, deployment: Deployment) -> int:
    value = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(value, int) and value > 0:
        return value
    price = deployment.price
    limit = getattr(price, "max_output", None)
    return limit if isinstance(limit, int) and limit > 0 else FALLBACK_MAX_TOKENS


def _thinking(payload: dict, max_tokens: int) -> dict | None:
    """Anthropic's `thinking` setting: as sent (LiteLLM's extra parameter), or from OpenAI's reasoning_effort."""
    thinking = payload.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
            raise _BadRequest(
                'thinking must be an object such as {"type": "enabled", "budget_tokens": 2048}', "thinking"
            )
        return thinking
    effort = payload.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    if effort not in THINKING_BUDGETS:
        raise _BadRequest(
            f"reasoning_effort must be one of none, {', '.join(THINKING_BUDGETS)}; got {effort!r}", "reasoning_effort"
        )
    # Anthropic wants the budget below max_tokens: a small max_tokens narrows it, down to the minimum.
    budget = min(THINKING_BUDGETS[effort], max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise _BadRequest(
            f"reasoning_effort needs max_tokens above {MIN_THINKING_BUDGET} with this provider (the thinking "
            "budget counts towards it)",
            "reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _structured_output(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The forced tool that carries `response_format` (proxy.providers.base.structured_schema), or None."""
    try:
        schema = structured_schema(payload)
    except FormatRefused as exc:
        raise _BadRequest(str(exc), "response_format") from None
    if schema is None:
        return None
    return {"name": STRUCTURED_TOOL, "description": STRUCTURED_TOOL_DESCRIPTION, "input_schema": schema}


def to_anthropic(payload: dict[str, Any], deployment: Deployment, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat request (a new dict: `payload` is left as it is; the
    parameters it cannot carry were refused first, by check_parameters with REFUSED)."""
    system, messages = _messages(payload)
    body: dict[str, Any] = {
        "model": deployment.upstream_model,
        "max_tokens": _max_tokens(payload, deployment),
        "messages": messages,
    }
    if system:
        # One string unless a block carries cache_control, which only the block form can hold.
        if any("cache_control" in b or b["type"] != "text" for b in system):
            body["system"] = system
        else:
            body["system"] = "\n\n".join(b["text"] for b in system)
    stop = payload.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    tools = payload.get("tools")
    if tools:
        body["tools"] = _tools(tools)
        if any(t.get("name") == STRUCTURED_TOOL for t in body["tools"]):
            raise _BadRequest(f"the tool name {STRUCTURED_TOOL!r} is reserved by the gateway", "tools")
    structured = _structured_output(payload)
    if structured is not None:
        body["tools"] = [structured]
        body["tool_choice"] = {"type": "tool", "name": STRUCTURED_TOOL}
    choice = _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
    if structured is None and choice is not None and (tools or choice["type"] == "none"):
        body["tool_choice"] = choice
    user = payload.get("user") or payload.get("safety_identifier")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    thinking = _thinking(payload, body["max_tokens"])
    if thinking is not None:
        body["thinking"] = thinking
    if stream:
        body["stream"] = True
    return body


# --- answer translation ---------------------------------------------------------------------------------


def _count(value: Any) -> int:
    # A count that is not a count (null, a string) must not turn a served answer into an adapter error.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def to_openai_usage(usage: dict) -> dict:
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + read + written
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
    }


def _tool_call(block: dict) -> dict:
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()},
    }


def to_openai_completion(data: dict) -> tuple[dict, dict]:
    texts: list[str] = []
    calls: list[dict] = []
    reasoning: list[str] = []
    thought: list[dict] = []
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use" and block.get("name") == STRUCTURED_TOOL:
            # The structured answer is the whole content (a forced tool has no preamble worth keeping).
            texts = [orjson.dumps(block.get("input") or {}).decode()]
            break
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind == "thinking":
            # As peers (LiteLLM) give it to OpenAI-format clients: the text as reasoning_content, and the
            # signed blocks as thinking_blocks, for the client to send back with the next turn.
            reasoning.append(block.get("thinking") or "")
            thought.append(
                {"type": "thinking", "thinking": block.get("thinking") or "", "signature": block.get("signature")}
            )
        elif kind == "redacted_thinking":
            thought.append({"type": "redacted_thinking", "data": block.get("data")})
    # `refusal` is required by OpenAI's schema even when null (the SDKs read it).
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thought:
        message["reasoning_content"] = "".join(reasoning)
        message["thinking_blocks"] = thought
    usage = to_openai_usage(data.get("usage") or {})
    body = {
        "id": data.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                # A structured answer ends with the forced tool: for the client it simply stopped.
                "finish_reason": "stop"
                if not calls and data.get("stop_reason") == "tool_use"
                else FINISH_REASONS.get(data.get("stop_reason") or "end_turn", "stop"),
            }
        ],
        "usage": usage,
    }
    return body, usage


def _openai_error(status: int, err_type: str, message: str) -> tuple[int, bytes, str]:
    """(status, OpenAI error body, error type) for an Anthropic error."""
    openai_type = ERROR_TYPES.get(err_type, "upstream_error")
    if status == 529 or err_type == "overloaded_error":
        status = 503
    return status, error_body(message, type=openai_type, code=err_type or None), err_type or "upstream_error"


def _error_from_upstream(
    response: httpx.Response, content: bytes, deployment: Deployment, native: bool = False
) -> UpstreamResult:
    status = response.status_code
    try:
        data = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    secrets = secrets_of(deployment)
    if isinstance(err, dict):
        err_type = str(err.get("type") or "")
        message = redact(str(err.get("message") or ""), secrets)
    else:
        # e.g. the HTML page Cloudflare answers a 413 with, before the request reaches Anthropic.
        err_type = {413: "request_too_large", 529: "overloaded_error"}.get(status, "")
        text = redact(content[:500].decode("utf-8", "replace").strip(), secrets)
        message = f"Upstream returned HTTP {status}" + (f": {text}" if text else "")
    headers = {name: response.headers[name] for name in PASS_HEADERS if name in response.headers}
    if "request-id" in response.headers:
        headers["x-upstream-request-id"] = response.headers["request-id"]
    if native and isinstance(err, dict):
        # Relayed as Anthropic wrote it (its status, 529 included), minus the deployment's secrets.
        return UpstreamResult(
            status=status,
            body=redact_bytes(content, secrets),
            error_type=err_type or "upstream_error",
            error_message=message[:2000],
            headers=headers,
            native=True,
        )
    status, body, err_type = _openai_error(status, err_type, message)
    return UpstreamResult(status=status, body=body, error_type=err_type, error_message=message[:2000], headers=headers)


def _headers(deployment: Deployment) -> dict[str, str]:
    """The deployment's headers, plus the client's anthropic-beta / anthropic-version where the operator
    set none (betas such as a longer context or new tools are the client's to ask for)."""
    client = CLIENT_HEADERS.get()
    if not client:
        return deployment.headers
    operator = {name.lower() for name in deployment.extra_headers}
    extra = {name: value for name, value in client.items() if name not in operator}
    return {**deployment.headers, **extra} if extra else deployment.headers


class AnthropicAdapter(ProviderAdapter):
    kind = "anthropic"
    endpoints = frozenset({"chat/completions"})

    def prepare(self, deployment: Deployment) -> None:
        base = (deployment.base_url or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1")
        deployment.urls = {"chat/completions": f"{base}/v1/messages"}
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION, "accept-encoding": "identity"}
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        deployment.headers = {**headers, **deployment.extra_headers}

    def build(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        if ctx.endpoint != "chat/completions":
            raise Refused(
                bad_request(
                    f"The provider {deployment.provider_name!r} (Anthropic) has no {ctx.endpoint} endpoint; "
                    "route this model to a provider that offers it",
                    error_type="invalid_request_error",
                )
            )
        if ctx.native_kind == "anthropic":
            body = {**ctx.native, "model": deployment.upstream_model}  # type: ignore[dict-item]
        else:
            check_parameters(payload, REFUSED)
            try:
                body = to_anthropic(payload, deployment, stream=ctx.stream)
            except _BadRequest as exc:
                raise Refused(bad_request(str(exc), error_type="invalid_request_error", param=exc.param)) from None
        return get_client().build_request(
            "POST", deployment.urls["chat/completions"], content=orjson.dumps(body), headers=_headers(deployment)
        )

    def parse(
        self,
        deployment: Deployment,
        payload: dict[str, Any],
        ctx: CallContext,
        response: httpx.Response,
        content: bytes,
    ) -> UpstreamResult:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return bad_response("The upstream provider returned a body that is not JSON")
        if not isinstance(data, dict) or data.get("type") != "message":
            return bad_response("The upstream provider returned JSON that is not a message")
        headers = {"x-upstream-request-id": response.headers["request-id"]} if "request-id" in response.headers else {}
        reason = data.get("stop_reason")
        reason = reason if isinstance(reason, str) else ""
        if ctx.native_kind == "anthropic":
            usage = data.get("usage")
            usage = to_openai_usage(usage if isinstance(usage, dict) else {})
            return UpstreamResult(
                status=200, body=content, usage=usage, headers=headers, native=True, finish_reason=reason
            )
        body, usage = to_openai_completion(data)
        return UpstreamResult(status=200, body=orjson.dumps(body), usage=usage, headers=headers, finish_reason=reason)

    def parse_error(
        self, deployment: Deployment, ctx: CallContext, response: httpx.Response, content: bytes
    ) -> UpstreamResult:
        return _error_from_upstream(response, content, deployment, ctx.native_kind == "anthropic")

    def decoder(self, deployment: Deployment, ctx: CallContext, response: httpx.Response) -> UpstreamStream:
        if ctx.native_kind == "anthropic":
            stream: UpstreamStream = AnthropicRelayStream(response, deployment)
        else:
            stream = AnthropicStream(response, show_usage=ctx.client_wants_usage, deployment=deployment)
        if "request-id" in response.headers:
            stream.headers = {"x-upstream-request-id": response.headers["request-id"]}
        return stream


# Events with nothing to translate, skipped before parsing (the event line comes first in Anthropic's frames).
SKIPPED_EVENTS = (b"event: ping\n", b"event: content_block_stop\n")


def _data(event: bytes) -> bytes:
    """The data of an `event: T\\ndata: {...}\\n\\n` frame, without splitting it into lines."""
    at = event.find(b"\ndata: ")
    if event.startswith(b"event: ") and at > 0 and event.count(b"\n") == 3:
        return event[at + 7 : -2]
    return event_data(event)


class AnthropicStream(UpstreamStream):
    """Anthropic's stream events, translated one by one into OpenAI chat.completion.chunk events."""

    def __init__(self, response: httpx.Response, *, show_usage: bool, deployment: Deployment) -> None:
        super().__init__()
        self.response = response
        self.show_usage = show_usage
        self.deployment = deployment
        # The chunk's fixed fields, serialised once (again at message_start, with the message's id).
        self._prefix = b'data: {"id":"","object":"chat.completion.chunk","created":%d,"model":"",' % int(time.time())
        self._anthropic_usage: dict = {}
        self._tools: dict[Any, int] = {}  # content block index -> OpenAI tool call index
        self._structured: set[Any] = set()  # content block indexes of the structured-output tool
        self._thinking: dict[Any, list[str]] = {}  # thinking block index -> its text so far, until signed

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._prefix + b'"choices":[' + orjson.dumps(choice) + b"]}\n\n"

    def _translate(self, data: dict) -> bytes | None:
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._anthropic_usage = dict(message.get("usage") or {})
            fixed = {
                "id": message.get("id") or "",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": message.get("model") or "",
            }
            self._prefix = b"data: " + orjson.dumps(fixed)[:-1] + b","
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            # message_delta's usage is cumulative: its fields replace those of message_start.
            self._anthropic_usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            reason = (data.get("delta") or {}).get("stop_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
            if reason == "tool_use" and self._structured and not self._tools:
                return self._chunk({}, "stop")  # the structured answer is complete
            return self._chunk({}, FINISH_REASONS.get(reason or "end_turn", "stop"))
        return None  # content_block_stop, ping and unknown new event types

    def _delta(self, data: dict) -> bytes | None:
        delta = data.get("delta") or {}
        dkind = delta.get("type")
        if dkind == "text_delta":
            return self._chunk({"content": delta.get("text") or ""})
        if dkind == "input_json_delta":
            partial = delta.get("partial_json")
            if data.get("index") in self._structured:
                return self._chunk({"content": partial}) if partial else None
            index = self._tools.get(data.get("index"))
            if not partial or index is None:
                return None
            return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": partial}}]})
        if dkind == "thinking_delta":
            text = delta.get("thinking") or ""
            self._thinking.setdefault(data.get("index"), []).append(text)
            return self._chunk({"reasoning_content": text}) if text else None
        if dkind == "signature_delta":
            # The signature closes a thinking block: the client gets the whole signed block once, as in
            # a JSON answer's thinking_blocks, ready to send back with the next turn.
            text = "".join(self._thinking.pop(data.get("index"), ()))
            block = {"type": "thinking", "thinking": text, "signature": delta.get("signature")}
            return self._chunk({"thinking_blocks": [block]})
        return None  # citations and deltas of new kinds have no OpenAI counterpart

    def _block_start(self, data: dict) -> bytes | None:
        block = data.get("content_block") or {}
        if block.get("type") == "tool_use" and block.get("name") == STRUCTURED_TOOL:
            self._structured.add(data.get("index"))  # its input streams as the content
            return None
        if block.get("type") == "tool_use":
            index = self._tools[data.get("index")] = len(self._tools)
            call = {"index": index, "id": block.get("id"), "type": "function"}
            call["function"] = {"name": block.get("name"), "arguments": ""}
            return self._chunk({"tool_calls": [call]})
        if block.get("type") == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if block.get("type") == "thinking" and block.get("thinking"):
            self._thinking.setdefault(data.get("index"), []).append(block["thinking"])
            return self._chunk({"reasoning_content": block["thinking"]})
        if block.get("type") == "redacted_thinking":
            return self._chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": block.get("data")}]})
        return None

    def _error_event(self, data: dict) -> bytes:
        err = found if isinstance(found := data.get("error"), dict) else {}
        message = redact(
            str(err.get("message") or "The upstream provider reported an error mid-stream"), secrets_of(self.deployment)
        )
        _status, body, err_type = _openai_error(200, str(err.get("type") or ""), message)
        self.error_type = err_type[:100]
        self.error_message = message[:2000]
        return b"data: " + body + b"\n\n"

    def _finish(self) -> list[bytes]:
        self.usage = usage = to_openai_usage(self._anthropic_usage)
        out = []
        if self.show_usage:
            out.append(self._prefix + b'"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        try:
            async for raw in self.response.aiter_raw():
                for event in splitter.feed(raw):
                    if event.startswith(SKIPPED_EVENTS):
                        continue
                    try:
                        data = orjson.loads(_data(event))
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(data, dict):
                        continue
                    kind = data.get("type")
                    if kind == "message_stop":
                        for final in self._finish():
                            yield final
                        return
                    if kind == "error":
                        yield self._error_event(data)
                        return
                    out = self._translate(data)
                    if out is not None:
                        yield out
        except httpx.HTTPError as exc:
            self.error_type = "upstream_stream_error"
            self.error_message = redact(f"{type(exc).__name__}: {exc}"[:1000], secrets_of(self.deployment))
            yield (
                b"data: "
                + error_body("The upstream stream was interrupted", type="upstream_error", code="upstream_stream_error")
                + b"\n\n"
            )
            return
        # The connection ended without message_stop: the answer may be cut short.
        self.error_type = "upstream_stream_incomplete"
        self.error_message = "The upstream stream ended without message_stop"
        yield (
            b"data: "
            + error_body(
                "The upstream stream ended before it was complete",
                type="upstream_error",
                code="upstream_stream_incomplete",
            )
            + b"\n\n"
        )

    async def aclose(self) -> None:
        await self.response.aclose()


def _event_kind(event: bytes) -> bytes:
    """The type of an Anthropic SSE frame: its `event:` line (always first from Anthropic), else its data's type."""
    if event.startswith(b"event: "):
        return event[7 : event.find(b"\n")].strip()
    try:
        data = orjson.loads(event_data(event))
    except orjson.JSONDecodeError:
        return b""
    kind = data.get("type") if isinstance(data, dict) else None
    return kind.encode() if isinstance(kind, str) else b""


def _native_error_event(message: str) -> bytes:
    body = {"type": "error", "error": {"type": "api_error", "message": message}}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


class AnthropicRelayStream(UpstreamStream):
    """Anthropic's stream events relayed as they came (to a client speaking Anthropic's format); only
    message_start and message_delta are parsed, for the usage, and an error event, for the log."""

    native = True

    def __init__(self, response: httpx.Response, deployment: Deployment) -> None:
        super().__init__()
        self.response = response
        self.deployment = deployment
        self._anthropic_usage: dict = {}

    def _data(self, event: bytes) -> dict:
        try:
            data = orjson.loads(_data(event))
        except orjson.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        try:
            async for raw in self.response.aiter_raw():
                for event in splitter.feed(raw):
                    kind = _event_kind(event)
                    if kind == b"message_start":
                        message = self._data(event).get("message")
                        usage = message.get("usage") if isinstance(message, dict) else None
                        if isinstance(usage, dict):
                            self._anthropic_usage = dict(usage)
                    elif kind == b"message_delta":
                        # Cumulative: its fields replace message_start's. Known from here on, so a client
                        # that leaves before message_stop is still billed what it was served.
                        data = self._data(event)
                        usage = data.get("usage")
                        delta = data.get("delta")
                        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                            self.finish_reason = delta["stop_reason"]
                        if isinstance(usage, dict):
                            self._anthropic_usage.update({k: v for k, v in usage.items() if v is not None})
                        self.usage = to_openai_usage(self._anthropic_usage)
                    elif kind == b"message_stop":
                        self.usage = to_openai_usage(self._anthropic_usage)
                        yield event
                        return
                    elif kind == b"error":
                        err = self._data(event).get("error")
                        err = err if isinstance(err, dict) else {}
                        secrets = secrets_of(self.deployment)
                        message = str(err.get("message") or "The upstream provider reported an error mid-stream")
                        self.error_type = str(err.get("type") or "upstream_error")[:100]
                        self.error_message = redact(message, secrets)[:2000]
                        yield redact_bytes(event, secrets)
                        return
                    yield event
        except httpx.HTTPError as exc:
            self.error_type = "upstream_stream_error"
            self.error_message = redact(f"{type(exc).__name__}: {exc}"[:1000], secrets_of(self.deployment))
            yield _native_error_event("The upstream stream was interrupted")
            return
        # The connection ended without message_stop: the answer may be cut short.
        self.error_type = "upstream_stream_incomplete"
        self.error_message = "The upstream stream ended without message_stop"
        yield _native_error_event("The upstream stream ended before it was complete")

    async def aclose(self) -> None:
        await self.response.aclose()
