"""Google's Gemini API (generativelanguage.googleapis.com): generateContent, its SSE stream, embeddings.

The OpenAI request is rebuilt as a GenerateContentRequest in one pass (no JSON round trips), and the
answer, stream events, usage, finish reasons and Google's error statuses are mapped back. Points where
the two formats disagree, and how they are resolved:
- system (and developer) messages become one `systemInstruction`; `assistant` is `model`;
- a `role: tool` message carries only the call id, but `functionResponse` needs the function's name:
  it is looked up in the earlier assistant message's `tool_calls`;
- Gemini has no tool call ids: the answer's `functionCall`s get fresh `call_...` ids;
- Gemini 2.5/3 signs its function calls (`thoughtSignature` on the part) and Gemini 3 refuses a next turn
  without the signature back: it rides along in the tool call, both as Google's own OpenAI-compatible
  field `extra_content.google.thought_signature` and inside the id (`call_<hex>__thought__<base64url>`,
  for clients that keep only id, name and arguments), and goes back on the functionCall part it came on;
- thought summaries (`thought: true` parts) are not answer text: they become `reasoning_content`;
- `usageMetadata` is cumulative and repeated on every streamed chunk: the last one wins, never a sum;
- errors are `{"error": {"code", "message", "status", "details"}}`; a `RetryInfo` detail's
  `retryDelay` ("12s") becomes a Retry-After so the attempt loop waits as asked.
"""

from __future__ import annotations

import base64
import math
import mimetypes
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from gateway_project.common.redact import redact, secrets_of
from proxy.errors import error_body
from proxy.providers.base import (
    HARMLESS_PARAMETERS,
    CallContext,
    ProviderAdapter,
    Refused,
    Uncarried,
    UpstreamResult,
    UpstreamStream,
    bad_request,
    bad_response,
    check_parameters,
    stream_error_event,
)
from proxy.snapshot import Deployment
from proxy.sse import SSESplitter, event_data
from proxy.upstream import get_client

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}

# Google's canonical error statuses -> (OpenAI error type, code).
ERROR_KINDS = {
    "INVALID_ARGUMENT": ("invalid_request_error", "invalid_argument"),
    "FAILED_PRECONDITION": ("invalid_request_error", "failed_precondition"),
    "OUT_OF_RANGE": ("invalid_request_error", "out_of_range"),
    "UNAUTHENTICATED": ("authentication_error", "invalid_api_key"),
    "PERMISSION_DENIED": ("permission_error", "permission_denied"),
    "NOT_FOUND": ("invalid_request_error", "model_not_found"),
    "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
    "CANCELLED": ("server_error", "cancelled"),
    "INTERNAL": ("server_error", "internal"),
    "UNAVAILABLE": ("server_error", "unavailable"),
    "DEADLINE_EXCEEDED": ("timeout_error", "deadline_exceeded"),
}

# The OpenAPI subset Gemini's `Schema` accepts; anything else (additionalProperties, $schema, strict,
# const, ...) makes the API refuse the whole request, so it is dropped.
SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)


# OpenAI's chat parameters (proxy.providers.base.CHAT_PARAMETERS) by what this adapter does with them;
# the README's "Request parameters by provider kind" table says the same.
CARRIED = frozenset(
    {
        "messages",
        "model",
        "max_tokens",  # generationConfig.maxOutputTokens
        "max_completion_tokens",
        "stop",  # stopSequences
        "stream",
        "stream_options",  # include_usage: the gateway builds the usage chunk itself
        "temperature",
        "top_p",  # topP
        "n",  # candidateCount
        "seed",
        "presence_penalty",  # presencePenalty
        "frequency_penalty",  # frequencyPenalty
        "logprobs",  # responseLogprobs; logprobsResult comes back as choices[].logprobs
        "top_logprobs",  # logprobs
        "tools",
        "tool_choice",  # toolConfig.functionCallingConfig
        "response_format",  # responseMimeType + responseSchema
        "reasoning_effort",  # thinkingConfig: thinkingLevel (Gemini 3) or thinkingBudget
    }
)
IGNORED = HARMLESS_PARAMETERS | {"user", "safety_identifier"}
REFUSED = {
    "parallel_tool_calls": Uncarried(
        "Gemini cannot be limited to one function call per turn: leave out parallel_tool_calls or set it to true",
        (True,),
    ),
    "logit_bias": Uncarried("Gemini has no logit_bias: leave it out", ({},)),
    "modalities": Uncarried(
        'This gateway takes text answers only from Gemini: modalities must be ["text"]', (["text"],)
    ),
    "audio": Uncarried("This gateway takes text answers only from Gemini: leave out audio"),
    "verbosity": Uncarried("Gemini has no verbosity setting: leave it out or set it to medium", ("medium",)),
    "web_search_options": Uncarried("web_search_options is not translated for Gemini: leave it out"),
    "moderation": Uncarried("moderation is not available with this provider: leave it out"),
    "functions": Uncarried("The deprecated functions are not translated for this provider: send tools"),
    "function_call": Uncarried("The deprecated function_call is not translated for this provider: send tool_choice"),
}
# reasoning_effort as Gemini 2.5's thinking budget (Google's own OpenAI-compatible mapping; 0 turns
# thinking off where the model allows it). Gemini 3 takes the effort as its thinkingLevel instead.
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


class TranslationError(Exception):
    """The OpenAI request cannot be expressed for Gemini (the client's error: a 400; `param`: the
    parameter at fault)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# --- request ------------------------------------------------------------------------------------


def clean_schema(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "type" and isinstance(value, list):
            # JSON Schema's ["string", "null"] is Gemini's type + nullable.
            kinds = [t for t in value if t != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            value = kinds[0] if kinds else "null"
        elif key == "properties" and isinstance(value, dict):
            value = {name: clean_schema(sub) for name, sub in value.items()}
        elif key == "items":
            value = clean_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            value = [clean_schema(sub) for sub in value]
        out[key] = value
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _image_part(url: str) -> dict:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        mime = header[5:].split(";")[0] or "application/octet-stream"
        if ";base64" not in header:
            raise TranslationError("Only base64 data URLs are supported for images")
        return {"inlineData": {"mimeType": mime, "data": data}}
    mime = mimetypes.guess_type(url.split("?")[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _user_parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        return []
    parts: list[dict] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            parts.append(_image_part(url))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data")}})
        else:
            raise TranslationError(f"Content parts of type {kind!r} are not supported by Gemini")
    return parts


def _function_response(content: Any) -> dict:
    text = _text_of(content)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    # `response` is a protobuf Struct: an object. Other values are wrapped.
    return value if isinstance(value, dict) else {"result": value}


def _contents(messages: list, fill_signatures: bool = False) -> tuple[list[dict], list[str]]:
    contents: list[dict] = []
    system: list[str] = []
    names: dict[str, str] = {}  # tool call id -> function name, from earlier assistant messages

    def add(role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            # Consecutive turns of one role (e.g. several tool results) form one Gemini turn.
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system.append(text)
        elif role == "user":
            add("user", _user_parts(content))
        elif role == "assistant":
            parts: list[dict[str, Any]] = [{"text": t} for t in (_text_of(content),) if t]
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                name = function.get("name", "")
                names[call.get("id", "")] = name
                raw = function.get("arguments") or "{}"
                try:
                    args = orjson.loads(raw) if isinstance(raw, str) else raw
                except orjson.JSONDecodeError as exc:
                    raise TranslationError(f"The arguments of tool call {call.get('id')!r} are not JSON") from exc
                part: dict[str, Any] = {"functionCall": {"name": name, "args": args if isinstance(args, dict) else {}}}
                if signature := thought_signature(call):
                    part["thoughtSignature"] = signature
                parts.append(part)
            calls = [p for p in parts if "functionCall" in p]
            if fill_signatures and calls and not any("thoughtSignature" in p for p in calls):
                # Function calls Gemini did not make (another provider's, or a client that kept no ids):
                # Gemini 3 refuses them unsigned and documents this value to skip its check.
                calls[0]["thoughtSignature"] = SKIP_SIGNATURE
            add("model", parts)
        elif role == "tool":
            call_id = message.get("tool_call_id", "")
            name = names.get(call_id)
            if name is None:
                raise TranslationError(f"No earlier assistant tool call has the id {call_id!r} of this tool message")
            add("user", [{"functionResponse": {"name": name, "response": _function_response(content)}}])
        else:
            raise TranslationError(f"Messages with role {role!r} are not supported by Gemini")
    return contents, system


def _tool_config(choice: Any) -> dict | None:
    if choice is None:
        return None
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise TranslationError("Unsupported tool_choice", "tool_choice")


def _thinking_config(effort: Any, model: str) -> dict:
    if effort not in THINKING_BUDGETS:
        raise TranslationError(
            f"reasoning_effort must be one of {', '.join(THINKING_BUDGETS)}; got {effort!r}", "reasoning_effort"
        )
    if model.startswith(STRICT_SIGNATURES):
        # Gemini 3 always thinks; "minimal" is its "no thinking" for most requests.
        return {"thinkingLevel": "minimal" if effort == "none" else effort}
    return {"thinkingBudget": THINKING_BUDGETS[effort]}


def _generation_config(payload: dict, model: str = "") -> dict:
    config: dict[str, Any] = {}
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        value = payload.get(ours)
        if value is not None:
            config[theirs] = value
    if payload.get("logprobs"):
        config["responseLogprobs"] = True
        if payload.get("top_logprobs"):
            config["logprobs"] = payload["top_logprobs"]
    if payload.get("reasoning_effort") is not None:
        config["thinkingConfig"] = _thinking_config(payload["reasoning_effort"], model)
    stop = payload.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = payload.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in RESPONSE_FORMATS):
        raise TranslationError("response_format must be text, json_object or json_schema", "response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            config["responseMimeType"] = "application/json"
        elif fmt.get("type") == "json_schema":
            config["responseMimeType"] = "application/json"
            schema = (fmt.get("json_schema") or {}).get("schema")
            if schema:
                config["responseSchema"] = clean_schema(schema)
    return config


def to_gemini(payload: dict[str, Any], model: str = "") -> dict[str, Any]:
    """The GenerateContentRequest for an OpenAI chat completions payload (which is left untouched)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("'messages' must be a list")
    model = model.removeprefix("models/")
    contents, system = _contents(messages, fill_signatures=model.startswith(STRICT_SIGNATURES))
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = payload.get("tools")
    if tools:
        declarations = []
        for tool in tools:
            if tool.get("type") != "function":
                raise TranslationError(f"Tools of type {tool.get('type')!r} are not supported by Gemini", "tools")
            function = tool.get("function") or {}
            declaration = {"name": function.get("name", "")}
            if function.get("description"):
                declaration["description"] = function["description"]
            parameters = function.get("parameters")
            if parameters and parameters.get("properties"):
                # Gemini refuses an OBJECT schema without properties; no properties means no parameters.
                declaration["parameters"] = clean_schema(parameters)
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
    tool_config = _tool_config(payload.get("tool_choice"))
    if tool_config:
        body["toolConfig"] = tool_config
    config = _generation_config(payload, model)
    if config:
        body["generationConfig"] = config
    return body


def to_gemini_embeddings(payload: dict[str, Any], model: str) -> tuple[dict[str, Any], int]:
    """The batchEmbedContents request and a token estimate (Gemini reports no embedding usage)."""
    inputs = payload.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise TranslationError("Gemini embeddings take a string or a list of strings as 'input'")
    requests = []
    for text in inputs:
        request: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if payload.get("dimensions"):
            request["outputDimensionality"] = payload["dimensions"]
        requests.append(request)
    return {"requests": requests}, embedding_estimate(inputs)


def embedding_estimate(inputs: list[str]) -> int:
    """About four characters per token: Gemini reports no usage for embeddings."""
    return sum(-(-len(t) // 4) for t in inputs)


# --- response -----------------------------------------------------------------------------------


def openai_usage(meta: Any) -> dict | None:
    if not isinstance(meta, dict):
        return None
    # Tool-use prompt tokens and thinking tokens are billed as input and output respectively.
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion = (meta.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


THOUGHT_SEPARATOR = "__thought__"
# Models that refuse function calls without a thought signature, and the value Google documents for calls
# that have none (ai.google.dev/gemini-api/docs/thought-signatures).
STRICT_SIGNATURES = ("gemini-3",)
SKIP_SIGNATURE = "skip_thought_signature_validator"


def _call_id(signature: str | None = None) -> str:
    call_id = "call_" + uuid.uuid4().hex[:24]
    if signature:
        # base64url without padding: ids stay within [A-Za-z0-9_-], as other providers require of them.
        call_id += THOUGHT_SEPARATOR + signature.replace("+", "-").replace("/", "_").rstrip("=")
    return call_id


def thought_signature(call: dict) -> str | None:
    """The thought signature an OpenAI-format tool call carries: Google's extra field, else the id's tail."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if isinstance(signature, str) and signature:
        return signature
    call_id = call.get("id")
    if not isinstance(call_id, str) or THOUGHT_SEPARATOR not in call_id:
        return None
    encoded = call_id.rpartition(THOUGHT_SEPARATOR)[2]
    return encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4) if encoded else None


def _split_parts(parts: Any) -> tuple[str, list[dict], str]:
    """(text, OpenAI tool_calls, thought summaries) of a candidate's parts: thoughts are not answer text,
    they go to the client as reasoning_content, as peers (LiteLLM) give them."""
    text: list[str] = []
    calls: list[dict] = []
    thoughts: list[str] = []
    for part in parts or ():
        if part.get("thought"):
            if isinstance(part.get("text"), str):
                thoughts.append(part["text"])
            continue
        if "text" in part:
            text.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            signature = part.get("thoughtSignature")
            signature = signature if isinstance(signature, str) and signature else None
            tool_call: dict[str, Any] = {
                "id": _call_id(signature),
                "type": "function",
                "function": {
                    "name": call.get("name", ""),
                    "arguments": orjson.dumps(call.get("args") or {}).decode(),
                },
            }
            if signature:
                tool_call["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(tool_call)
    return "".join(text), calls, "".join(thoughts)


def _finish_reason(reason: str | None, has_calls: bool) -> str | None:
    if not reason:
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    # Gemini says STOP after a function call; OpenAI clients look for "tool_calls".
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def _blocked_prompt(data: dict) -> UpstreamResult | None:
    feedback = data.get("promptFeedback")
    if data.get("candidates") or not isinstance(feedback, dict) or not feedback.get("blockReason"):
        return None
    message = f"The prompt was blocked by Gemini's safety filters ({feedback['blockReason']})"
    return UpstreamResult(
        status=400,
        body=error_body(message, type="invalid_request_error", param="messages", code="content_filter"),
        usage=openai_usage(data.get("usageMetadata")),
        error_type="content_filter",
        error_message=message,
    )


def _token_logprob(candidate: dict) -> dict:
    token = str(candidate.get("token") or "")
    logprob = candidate.get("logProbability")
    return {
        "token": token,
        "logprob": logprob if isinstance(logprob, int | float) else 0.0,
        "bytes": list(token.encode()),
    }


def to_openai_logprobs(candidate: dict) -> dict | None:
    """A candidate's logprobsResult (asked for with responseLogprobs) as OpenAI's choice logprobs."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    tops = [t.get("candidates") if isinstance(t, dict) else None for t in result.get("topCandidates") or ()]
    content = []
    for step, chosen in enumerate(result.get("chosenCandidates") or ()):
        if not isinstance(chosen, dict):
            continue
        listed = tops[step] if step < len(tops) else None
        top: list = listed if isinstance(listed, list) else []
        content.append(
            {**_token_logprob(chosen), "top_logprobs": [_token_logprob(t) for t in top if isinstance(t, dict)]}
        )
    return {"content": content, "refusal": None}


def to_openai_completion(data: dict, model: str, request_id: str) -> dict:
    choices = []
    for position, candidate in enumerate(data.get("candidates") or ()):
        text, calls, thoughts = _split_parts((candidate.get("content") or {}).get("parts"))
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = thoughts
        choices.append(
            {
                "index": candidate.get("index", position),
                "message": message,
                "logprobs": to_openai_logprobs(candidate),
                "finish_reason": _finish_reason(candidate.get("finishReason"), bool(calls)) or "stop",
            }
        )
    body = {
        "id": "chatcmpl-" + (data.get("responseId") or request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or model,
        "choices": choices,
    }
    usage = openai_usage(data.get("usageMetadata"))
    if usage is not None:
        body["usage"] = usage
    return body


# --- errors -------------------------------------------------------------------------------------


def _retry_delay(details: Any) -> str | None:
    """Seconds (rounded up) of a google.rpc.RetryInfo detail, e.g. "12s" or "0.5s" -> "1"."""
    for detail in details or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay") or "").removesuffix("s")
            try:
                return str(max(1, math.ceil(float(delay))))
            except ValueError:
                return None
    return None


def _api_key_invalid(details: Any) -> bool:
    return any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details or ())


def error_from_google(status: int, content: bytes, deployment: Deployment) -> UpstreamResult:
    """Google's error body -> OpenAI's, with the HTTP status; secrets scrubbed, retry hints kept."""
    try:
        data = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        err = data[0].get("error")  # some Google front ends wrap the error in a list
    if not isinstance(err, dict):
        text = content[:500].decode("utf-8", "replace").strip()
        message = redact(f"Upstream returned HTTP {status}" + (f": {text}" if text else ""), secrets_of(deployment))
        return UpstreamResult(
            status=status,
            body=error_body(message, type="upstream_error", code=f"upstream_{status}"),
            error_type="upstream_error",
            error_message=message[:2000],
        )
    google_status = str(err.get("status") or "")
    details = err.get("details")
    message = redact(str(err.get("message") or google_status or f"HTTP {status}"), secrets_of(deployment))
    type_, code = ERROR_KINDS.get(google_status, ("upstream_error", google_status.lower() or f"upstream_{status}"))
    if status == 400 and _api_key_invalid(details):
        # Google answers a bad key with 400 INVALID_ARGUMENT; it is this deployment's credential.
        status, type_, code = 401, "authentication_error", "invalid_api_key"
    elif google_status == "INVALID_ARGUMENT" and "exceeds the maximum number of tokens" in message:
        code = "context_length_exceeded"  # the attempt loop may fall back to a larger context window
    result = UpstreamResult(
        status=status,
        body=error_body(message, type=type_, code=code),
        error_type=code,
        error_message=message[:2000],
    )
    delay = _retry_delay(details)
    if delay is not None:
        result.headers["retry-after"] = delay
    return result


def _pass_headers(response: httpx.Response) -> dict[str, str]:
    value = response.headers.get("retry-after")
    return {"retry-after": value} if value is not None else {}


def _float32_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


# --- adapter ------------------------------------------------------------------------------------


class GeminiAdapter(ProviderAdapter):
    kind = "gemini"

    def prepare(self, deployment: Deployment) -> None:
        base = (deployment.base_url or DEFAULT_BASE_URL).rstrip("/")
        if not base.endswith(("/v1beta", "/v1")):
            base += "/v1beta"
        model = deployment.upstream_model.removeprefix("models/")
        deployment.urls = {
            "chat/completions": f"{base}/models/{model}:generateContent",
            "stream": f"{base}/models/{model}:streamGenerateContent?alt=sse",
            "embeddings": f"{base}/models/{model}:batchEmbedContents",
        }
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if deployment.api_key:
            headers["x-goog-api-key"] = deployment.api_key
        deployment.headers = headers

    def build(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        if ctx.endpoint == "chat/completions":
            check_parameters(payload, REFUSED)
        try:
            if ctx.stream:
                body, url_name = to_gemini(payload, deployment.upstream_model), "stream"
            elif ctx.endpoint == "embeddings":
                body, _estimate = to_gemini_embeddings(payload, deployment.upstream_model.removeprefix("models/"))
                url_name = "embeddings"
            else:
                body, url_name = to_gemini(payload, deployment.upstream_model.removeprefix("models/")), ctx.endpoint
        except TranslationError as exc:
            raise Refused(bad_request(str(exc), param=exc.param)) from None
        headers = deployment.headers
        if deployment.extra_headers:
            headers = {**headers, **deployment.extra_headers}  # the operator's headers go last
        return get_client().build_request(
            "POST", deployment.urls[url_name], content=orjson.dumps(body), headers=headers
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
        if not isinstance(data, dict):
            return bad_response("The upstream provider returned JSON that is not an object")
        if ctx.endpoint == "embeddings":
            # build() checked the input: a string or a list of strings.
            inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
            return self._embeddings(data, payload, embedding_estimate(inputs))
        blocked = _blocked_prompt(data)
        if blocked is not None:
            return blocked
        answer = to_openai_completion(data, deployment.upstream_model, ctx.request_id)
        candidates = data.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else {}
        reason = first.get("finishReason")
        return UpstreamResult(
            status=200,
            body=orjson.dumps(answer),
            usage=answer.get("usage"),
            finish_reason=reason if isinstance(reason, str) else "",
        )

    def parse_error(
        self, deployment: Deployment, ctx: CallContext, response: httpx.Response, content: bytes
    ) -> UpstreamResult:
        result = error_from_google(response.status_code, content, deployment)
        result.headers = {**_pass_headers(response), **result.headers}
        return result

    def decoder(self, deployment: Deployment, ctx: CallContext, response: httpx.Response) -> UpstreamStream:
        return GeminiStream(response, deployment=deployment, ctx=ctx)

    def _embeddings(self, data: dict, payload: dict, estimate: int) -> UpstreamResult:
        as_base64 = payload.get("encoding_format") == "base64"
        rows = []
        for index, item in enumerate(data.get("embeddings") or ()):
            values = item.get("values") or []
            rows.append(
                {"object": "embedding", "index": index, "embedding": _float32_base64(values) if as_base64 else values}
            )
        body = {
            "object": "list",
            "data": rows,
            "model": payload.get("model"),
            # Gemini reports no token count for embeddings: the body carries an estimate for clients
            # that need the field, and the gateway is told nothing so that it marks the cost estimated.
            "usage": {"prompt_tokens": estimate, "total_tokens": estimate},
        }
        return UpstreamResult(status=200, body=orjson.dumps(body), usage=None)


class GeminiStream(UpstreamStream):
    def __init__(self, response: httpx.Response, *, deployment: Deployment, ctx: CallContext) -> None:
        super().__init__()
        self.response = response
        self.deployment = deployment
        self.include_usage = ctx.client_wants_usage
        self.base = {
            "id": "chatcmpl-" + ctx.request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": deployment.upstream_model,
        }
        self.started: set[int] = set()  # candidate indexes whose role chunk was sent
        self.tool_index: dict[int, int] = {}  # candidate index -> tool calls sent so far
        self.finished = False

    def _chunk(self, choices: list, **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**self.base, "choices": choices, **extra}) + b"\n\n"

    def _translate(self, data: dict) -> list[bytes]:
        out: list[bytes] = []
        if isinstance(data.get("usageMetadata"), dict):
            # Cumulative on every chunk: keep the latest, never add them up.
            self.usage = openai_usage(data["usageMetadata"])
        if data.get("modelVersion"):
            self.base["model"] = data["modelVersion"]
        for position, candidate in enumerate(data.get("candidates") or ()):
            index = candidate.get("index", position)
            text, calls, thoughts = _split_parts((candidate.get("content") or {}).get("parts"))
            delta: dict[str, Any] = {}
            if index not in self.started:
                self.started.add(index)
                delta["role"] = "assistant"
                delta["content"] = ""
            if thoughts:
                delta["reasoning_content"] = thoughts
            if text:
                delta["content"] = text
            if calls:
                first = self.tool_index.get(index, 0)
                delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
                self.tool_index[index] = first + len(calls)
            if delta:
                logprobs = to_openai_logprobs(candidate)
                out.append(self._chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}]))
            if isinstance(candidate.get("finishReason"), str) and index == 0:
                self.finish_reason = candidate["finishReason"]
            reason = _finish_reason(candidate.get("finishReason"), index in self.tool_index)
            if reason:
                self.finished = True
                out.append(self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]))
        return out

    def _error_event(self, err: Any) -> bytes:
        if not isinstance(err, dict):
            err = {"message": str(err)}
        status = str(err.get("status") or "")
        type_, code = ERROR_KINDS.get(status, ("upstream_error", status.lower() or "upstream_error"))
        message = redact(
            str(err.get("message") or "The upstream provider reported an error mid-stream"), secrets_of(self.deployment)
        )
        self.error_type = code
        self.error_message = message[:2000]
        return b"data: " + error_body(message, type=type_, code=code) + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:  # noqa: C901
        splitter = SSESplitter()
        try:
            async for raw in self.response.aiter_raw():
                for event in splitter.feed(raw):
                    data = event_data(event)
                    if not data:
                        continue
                    try:
                        parsed = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        continue  # not a JSON event (a comment or keep-alive)
                    if not isinstance(parsed, dict):
                        continue
                    if parsed.get("error"):
                        yield self._error_event(parsed["error"])
                        return
                    for chunk in self._translate(parsed):
                        yield chunk
            rest = splitter.rest()
            if rest:
                try:
                    parsed = orjson.loads(event_data(rest))
                except orjson.JSONDecodeError:
                    parsed = None
                if isinstance(parsed, dict):
                    if parsed.get("error"):
                        yield self._error_event(parsed["error"])
                        return
                    for chunk in self._translate(parsed):
                        yield chunk
        except httpx.HTTPError as exc:
            self.error_type = "upstream_stream_error"
            self.error_message = redact(f"{type(exc).__name__}: {exc}"[:1000], secrets_of(self.deployment))
            yield stream_error_event("The upstream stream was interrupted", "upstream_stream_error")
            return
        if not self.finished:
            # Gemini has no [DONE]: a stream is complete when a candidate says why it finished.
            self.error_type = "upstream_stream_incomplete"
            self.error_message = "The upstream stream ended without a finishReason"
            yield stream_error_event("The upstream stream ended before it was complete", "upstream_stream_incomplete")
            return
        if self.include_usage and self.usage is not None:
            yield self._chunk([], usage=self.usage)
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        await self.response.aclose()
