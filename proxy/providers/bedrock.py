"""AWS Bedrock Runtime: the Converse and ConverseStream APIs, SigV4-signed.

The OpenAI chat request becomes a Converse request (system blocks, user/assistant turns, images as
bytes, toolUse/toolResult blocks, inferenceConfig, toolConfig); the answer, the binary
`application/vnd.amazon.eventstream` stream and AWS's error types come back in OpenAI's shapes.
Signing (botocore's SigV4Auth) and frame decoding (botocore's EventStreamBuffer, which checks both
CRCs) are botocore's: nothing cryptographic is written here.

Embeddings go through InvokeModel (`/model/{id}/invoke`), whose body is the model's own: Amazon Titan
Text Embeddings takes one text per call (a list becomes concurrent calls, bounded), Cohere Embed takes a
batch of texts. Both answer floats, packed as float32 base64 when the client asks (the openai SDK does).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import quote

import httpx
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from yarl import URL

from gateway_project.common.redact import redact, secrets_of
from proxy.errors import error_body
from proxy.providers.base import (
    HARMLESS_PARAMETERS,
    STRUCTURED_TOOL,
    STRUCTURED_TOOL_DESCRIPTION,
    ZERO,
    CallContext,
    ErrorKind,
    FormatRefused,
    ProviderAdapter,
    Refused,
    Uncarried,
    UpstreamResult,
    UpstreamStream,
    bad_request,
    bad_response,
    check_parameters,
    classify_result,
    structured_schema,
    transport_error,
)
from proxy.snapshot import Deployment
from proxy.upstream import get_client

EVENTSTREAM = "application/vnd.amazon.eventstream"

# AWS error type -> (status the client gets, OpenAI error type). AWS's own statuses mostly agree;
# ModelNotReady (AWS: 429) is a model still loading, which another deployment may serve: overloaded.
_AWS_ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (429, "rate_limit_error"),
    "ServiceQuotaExceededException": (429, "rate_limit_error"),
    "ValidationException": (400, "invalid_request_error"),
    "AccessDeniedException": (403, "permission_error"),
    "UnrecognizedClientException": (403, "authentication_error"),
    "InvalidSignatureException": (403, "authentication_error"),
    "ExpiredTokenException": (403, "authentication_error"),
    "ResourceNotFoundException": (404, "invalid_request_error"),
    "ModelNotReadyException": (503, "server_error"),
    "ServiceUnavailableException": (503, "server_error"),
    "ModelTimeoutException": (408, "timeout_error"),
    "InternalServerException": (500, "server_error"),
    "ModelErrorException": (502, "upstream_error"),
    "ModelStreamErrorException": (502, "upstream_error"),
}

_FINISH: dict[str | None, str] = {  # looked up with a field the upstream may leave out
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}

# Titan embeds one text per call: a list input fans out, but no more than this many calls at once, so
# that one client's batch does not spend the account's whole Bedrock request rate in one burst.
EMBED_CONCURRENCY = 8
COHERE_BATCH = 96  # Cohere Embed's documented maximum of texts per call
_COHERE_INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering"})

_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
_INFERENCE_FIELDS = (("temperature", "temperature"), ("top_p", "topP"))


# OpenAI's chat parameters (proxy.providers.base.CHAT_PARAMETERS) by what this adapter does with them;
# the README's "Request parameters by provider kind" table says the same. Converse's inferenceConfig is
# common to every Bedrock model; anything beyond it (seed, penalties, thinking) is model-specific
# (additionalModelRequestFields) and not translated.
CARRIED = frozenset(
    {
        "messages",
        "model",
        "max_tokens",  # inferenceConfig.maxTokens
        "max_completion_tokens",
        "stop",  # inferenceConfig.stopSequences
        "stream",  # ConverseStream
        "stream_options",  # include_usage: the gateway builds the usage chunk itself
        "temperature",
        "top_p",  # inferenceConfig.topP
        "tools",  # toolConfig.tools
        "tool_choice",  # toolConfig.toolChoice ("none": the tools are left out)
        "response_format",  # a forced tool (proxy.providers.base.STRUCTURED_TOOL)
    }
)
IGNORED = HARMLESS_PARAMETERS | {"user", "safety_identifier"}
_NO_LOGPROBS = "Bedrock's Converse API returns no log probabilities: leave out logprobs and top_logprobs"
REFUSED = {
    "n": Uncarried("Bedrock's Converse API returns one choice per request: n must be 1", (1,)),
    "logprobs": Uncarried(_NO_LOGPROBS, (False,)),
    "top_logprobs": Uncarried(_NO_LOGPROBS, (0,)),
    "seed": Uncarried("Bedrock's Converse API has no seed: leave it out"),
    "frequency_penalty": Uncarried(
        "Bedrock's Converse API has no frequency_penalty: leave it out or set it to 0", ZERO
    ),
    "presence_penalty": Uncarried("Bedrock's Converse API has no presence_penalty: leave it out or set it to 0", ZERO),
    "logit_bias": Uncarried("Bedrock's Converse API has no logit_bias: leave it out", ({},)),
    "parallel_tool_calls": Uncarried(
        "Bedrock's Converse API cannot be limited to one tool call per turn: leave out parallel_tool_calls or "
        "set it to true",
        (True,),
    ),
    "reasoning_effort": Uncarried(
        "reasoning_effort is not translated for Bedrock (its reasoning settings are model-specific): leave it out",
        ("none",),
    ),
    "modalities": Uncarried('Bedrock answers in text only here: modalities must be ["text"]', (["text"],)),
    "audio": Uncarried("Bedrock answers in text only here: leave out audio"),
    "verbosity": Uncarried("Bedrock has no verbosity setting: leave it out or set it to medium", ("medium",)),
    "web_search_options": Uncarried("web_search_options is not available with Bedrock: leave it out"),
    "moderation": Uncarried("moderation is not available with this provider: leave it out"),
    "functions": Uncarried("The deprecated functions are not translated for this provider: send tools"),
    "function_call": Uncarried("The deprecated function_call is not translated for this provider: send tool_choice"),
}


class Unsupported(ValueError):
    """The request uses something Converse cannot express: the client's error, answered with a 400
    (`param`: the parameter at fault)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@functools.lru_cache(maxsize=256)
def _signer(region: str, key_id: str, secret: str, token: str) -> SigV4Auth:
    # One signer per credential set, reused: each request only pays for the signature itself.
    return SigV4Auth(Credentials(key_id, secret, token or None), "bedrock", region)


def signed_headers(deployment: Deployment, url: str, body: bytes, accept: str) -> dict[str, str]:
    """SigV4 headers for one request (the body hash is part of the signature, so per request)."""
    headers = {"content-type": "application/json", "accept": accept, "accept-encoding": "identity"}
    if deployment.extra_headers:
        headers.update(deployment.extra_headers)
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    signer = _signer(
        deployment.region,
        deployment.aws_access_key_id,
        deployment.aws_secret_access_key,
        deployment.aws_session_token,
    )
    signer.add_auth(request)
    return dict(request.headers.items())


# --- OpenAI request -> Converse request ----------------------------------------------------------


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") in ("text", None)
        )
    return str(content)


def _image_block(part: dict) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith("data:"):
        raise Unsupported("Bedrock's Converse API takes images as data: URLs (base64); image URLs are not fetched.")
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    fmt = _IMAGE_FORMATS.get(media_type.removeprefix("image/").lower())
    if fmt is None or encoding != "base64":
        raise Unsupported(f"Bedrock accepts base64 png, jpeg, gif or webp images, not {header[:60]!r}.")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Unsupported("An image data: URL is not valid base64.") from None
    # Blobs travel base64-encoded in Converse's JSON: the client's encoding is forwarded as it is.
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _user_blocks(content: Any) -> list[dict]:
    if isinstance(content, list):
        blocks = []
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                if part.get("text"):
                    blocks.append({"text": str(part["text"])})
            elif kind == "image_url":
                blocks.append(_image_block(part))
            else:
                raise Unsupported(f"Content parts of type {str(kind)[:40]!r} are not supported for Bedrock.")
        return blocks
    text = _text_of(content)
    return [{"text": text}] if text else []


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        raise Unsupported("A tool call's arguments are not valid JSON.") from None
    # Converse wants an object; a scalar or list is wrapped rather than refused.
    return value if isinstance(value, dict) else {"value": value}


def _assistant_blocks(message: dict) -> list[dict]:
    blocks: list[dict[str, Any]] = []
    text = _text_of(message.get("content"))
    if text:
        blocks.append({"text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": call.get("id"),
                    "name": fn.get("name"),
                    "input": _tool_input(fn.get("arguments")),
                }
            }
        )
    return blocks


def _tool_result_block(message: dict) -> dict:
    return {
        "toolResult": {
            "toolUseId": message.get("tool_call_id"),
            "content": [{"text": _text_of(message.get("content"))}],
        }
    }


def _tool_choice(choice: Any) -> dict | None:
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"tool": {"name": name}}
    return None


def converse_request(payload: dict[str, Any]) -> dict[str, Any]:  # noqa: C901
    """The Converse request body for an OpenAI chat request (a new dict: `payload` is not touched)."""
    system: list[dict] = []
    messages: list[dict] = []
    has_tool_blocks = False
    for message in payload.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "assistant":
            turn, blocks = "assistant", _assistant_blocks(message)
            has_tool_blocks = has_tool_blocks or bool(message.get("tool_calls"))
        elif role in ("tool", "function"):
            turn, blocks = "user", [_tool_result_block(message)]
            has_tool_blocks = True
        else:
            turn, blocks = "user", _user_blocks(message.get("content"))
        if not blocks:
            continue
        # Converse wants user and assistant turns to alternate: consecutive turns of one role (several
        # tool results, a tool result then a user text) become one message.
        if messages and messages[-1]["role"] == turn:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": turn, "content": blocks})
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if max_tokens:
        inference["maxTokens"] = max_tokens
    for ours, theirs in _INFERENCE_FIELDS:
        if payload.get(ours) is not None:
            inference[theirs] = payload[ours]
    stop = payload.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        body["inferenceConfig"] = inference
    tools = payload.get("tools") or []
    choice = payload.get("tool_choice")
    try:
        schema = structured_schema(payload)
    except FormatRefused as exc:
        raise Unsupported(str(exc), "response_format") from None
    if schema is not None:
        # Structured outputs as a forced tool (proxy.providers.base.STRUCTURED_TOOL): its input comes
        # back as the answer's JSON content.
        answer = {"name": STRUCTURED_TOOL, "description": STRUCTURED_TOOL_DESCRIPTION, "inputSchema": {"json": schema}}
        body["toolConfig"] = {"tools": [{"toolSpec": answer}], "toolChoice": {"tool": {"name": STRUCTURED_TOOL}}}
        return body
    # "none" cannot be said in Converse: leave the tools out, unless the history has tool blocks
    # (Converse then requires the toolConfig).
    if tools and (choice != "none" or has_tool_blocks):
        specs = []
        for tool in tools:
            fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
            if not isinstance(fn, dict) or not fn.get("name"):
                raise Unsupported("Only function tools with a name are supported for Bedrock.", "tools")
            spec: dict[str, Any] = {"name": fn.get("name")}
            if fn.get("description"):
                spec["description"] = fn["description"]
            spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
            specs.append({"toolSpec": spec})
        config: dict[str, Any] = {"tools": specs}
        converse_choice = _tool_choice(choice)
        if converse_choice is not None:
            config["toolChoice"] = converse_choice
        body["toolConfig"] = config
    return body


# --- Converse answer -> OpenAI ------------------------------------------------------------------


def openai_usage(usage: Any) -> dict | None:
    """OpenAI usage from Converse's: cache reads and writes are part of prompt_tokens, as in OpenAI's
    convention (gateway_project.common.money), while Bedrock counts them apart from inputTokens."""
    if not isinstance(usage, dict):
        return None
    cached = int(usage.get("cacheReadInputTokens") or 0)
    written = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cached + written
    completion = int(usage.get("outputTokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached or written:
        details: dict[str, int] = {"cached_tokens": cached}
        if written:
            details["cache_write_tokens"] = written
        out["prompt_tokens_details"] = details
    return out


def chat_completion(data: dict, deployment: Deployment, ctx: CallContext) -> tuple[dict, dict | None]:
    message = ((data.get("output") or {}).get("message")) or {}
    texts: list[str] = []
    tool_calls: list[dict] = []
    for block in message.get("content") or []:
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block and block["toolUse"].get("name") == STRUCTURED_TOOL:
            # The structured answer is the whole content (a forced tool has no preamble worth keeping).
            texts = [orjson.dumps(block["toolUse"].get("input", {})).decode()]
            break
        elif "toolUse" in block:
            use = block["toolUse"]
            tool_calls.append(
                {
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {"name": use.get("name"), "arguments": orjson.dumps(use.get("input", {})).decode()},
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,  # required by OpenAI's schema even when null, as `logprobs` below
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = openai_usage(data.get("usage"))
    body = {
        "id": f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment.upstream_model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                # A structured answer ends with the forced tool: for the client it simply stopped.
                "finish_reason": "stop" if not tool_calls else _FINISH.get(data.get("stopReason"), "stop"),
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body, usage


# --- errors --------------------------------------------------------------------------------------


def _aws_type(raw: str) -> str:
    # "ThrottlingException:http://internal.amazon.com/coral/..." or "com.amazon.coral#ThrottlingException"
    return raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()


def aws_error(
    status: int, error_type: str, message: str, deployment: Deployment, retry_after: str = ""
) -> UpstreamResult:
    """An AWS error (HTTP answer or stream exception) in OpenAI's shape, secrets scrubbed."""
    mapped, openai_type = _AWS_ERRORS.get(error_type, (status if status >= 400 else 502, "upstream_error"))
    message = redact(message or f"Bedrock returned {error_type or f'HTTP {status}'}", secrets_of(deployment))
    result = UpstreamResult(
        status=mapped,
        body=error_body(message, type=openai_type, code=error_type or f"upstream_{status}"),
        error_type=error_type or "upstream_error",
        error_message=message[:2000],
    )
    if retry_after:
        result.headers["retry-after"] = retry_after
    return result


def _error_from_response(response: httpx.Response, content: bytes, deployment: Deployment) -> UpstreamResult:
    try:
        data = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    error_type = _aws_type(response.headers.get("x-amzn-errortype") or str(data.get("__type") or ""))
    message = str(data.get("message") or data.get("Message") or "")
    if not message and not data:
        message = content[:300].decode("utf-8", "replace").strip()
    result = aws_error(response.status_code, error_type, message, deployment, response.headers.get("retry-after", ""))
    result.headers.update(_pass_headers(response))
    return result


def _pass_headers(response: httpx.Response) -> dict[str, str]:
    request_id = response.headers.get("x-amzn-requestid")
    return {"x-upstream-request-id": request_id} if request_id else {}


# --- embeddings (InvokeModel) --------------------------------------------------------------------


def embedding_family(model_id: str) -> str:
    """The embedding family of a Bedrock model id, "titan" or "cohere" (also inside an inference profile
    id or ARN, "us.cohere.embed-..."); "" for any other model."""
    model = model_id.rsplit("/", 1)[-1].lower()
    if "titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    return ""


def embedding_texts(payload: dict[str, Any]) -> list[str]:
    """The texts of an OpenAI embeddings request; raises Unsupported for token arrays and other shapes."""
    value = payload.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, list)) for v in value):
        # Token ids are a tokenizer's (OpenAI's); Bedrock's models take text and cannot read them.
        raise Unsupported("Bedrock embedding models take text: token arrays in 'input' are not supported.")
    raise Unsupported("'input' must be a string or a non-empty list of strings for Bedrock embeddings.")


def titan_bodies(payload: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    extra: dict[str, Any] = {}
    if payload.get("dimensions") is not None:
        extra["dimensions"] = payload["dimensions"]
    return [{"inputText": text, **extra} for text in texts]


def cohere_bodies(payload: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    if payload.get("dimensions") is not None:
        raise Unsupported("Cohere Embed on Bedrock has a fixed size: leave 'dimensions' out.")
    # OpenAI has no input type; documents are the common case. A client may name another one.
    input_type = payload.get("input_type")
    if input_type not in _COHERE_INPUT_TYPES:
        input_type = "search_document"
    return [
        {"texts": texts[i : i + COHERE_BATCH], "input_type": input_type} for i in range(0, len(texts), COHERE_BATCH)
    ]


def float32_base64(values: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _cohere_vectors(data: dict) -> Any:
    vectors = data.get("embeddings")
    # With embedding_types the answer is keyed by type; only floats are asked for, but read either.
    return vectors.get("float") if isinstance(vectors, dict) else vectors


def _estimate(texts: list[str]) -> int:
    return sum(-(-len(text) // 4) for text in texts)


def embeddings_list(
    family: str, answers: list[dict], texts: list[str], payload: dict[str, Any]
) -> tuple[dict, dict | None] | None:
    """The OpenAI embeddings list and the usage to bill (None: estimated), or None for a malformed answer."""
    vectors: list[Any] = []
    counted: int | None = 0
    for data in answers:
        if family == "titan":
            vectors.append(data.get("embedding"))
            tokens = data.get("inputTextTokenCount")
        else:
            batch = _cohere_vectors(data)
            if not isinstance(batch, list):
                return None
            vectors.extend(batch)
            # Bedrock documents no token count in Cohere's answer; Cohere's own API bills in
            # meta.billed_units, which is trusted when it is there.
            tokens = ((data.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool) and counted is not None:
            counted += tokens
        else:
            counted = None
    if len(vectors) != len(texts) or not all(isinstance(v, list) for v in vectors):
        return None
    as_base64 = payload.get("encoding_format") == "base64"
    rows = [
        {"object": "embedding", "index": i, "embedding": float32_base64(v) if as_base64 else v}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": counted, "total_tokens": counted} if counted is not None else None
    # Without a count the body carries an estimate for clients that read the field, and the gateway
    # is told nothing, so that it marks the cost as estimated.
    shown = usage or {"prompt_tokens": _estimate(texts), "total_tokens": _estimate(texts)}
    return {"object": "list", "data": rows, "model": payload.get("model"), "usage": shown}, usage


class _CallFailed(Exception):
    def __init__(self, result: UpstreamResult) -> None:
        super().__init__(result.error_type)
        self.result = result


# --- the adapter ---------------------------------------------------------------------------------


class BedrockAdapter(ProviderAdapter):
    kind = "bedrock"
    endpoints = frozenset({"chat/completions", "embeddings"})
    stream_content_type = EVENTSTREAM

    def prepare(self, deployment: Deployment) -> None:
        base = deployment.base_url or f"https://bedrock-runtime.{deployment.region}.amazonaws.com"
        model = quote(deployment.upstream_model, safe="")
        # Normalised the way the HTTP transport (yarl) will send it: the signature covers the path as
        # sent, and yarl un-escapes characters such as ":" in model ids.
        deployment.urls = {
            "converse": str(URL(f"{base}/model/{model}/converse")),
            "converse-stream": str(URL(f"{base}/model/{model}/converse-stream")),
            "invoke": str(URL(f"{base}/model/{model}/invoke")),
        }
        deployment.headers = {}

    def classify(self, result: UpstreamResult) -> ErrorKind:
        if result.error_type == "ModelTimeoutException":
            return ErrorKind.TIMEOUT
        return classify_result(result)

    def build(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        if ctx.stream and ctx.endpoint != "chat/completions":
            raise Refused(bad_request("Embeddings are answered in one piece, not streamed."))
        if not deployment.urls:
            self.prepare(deployment)
        url = deployment.urls["converse-stream" if ctx.stream else "converse"]
        check_parameters(payload, REFUSED)
        try:
            body = orjson.dumps(converse_request(payload))
        except Unsupported as exc:
            raise Refused(bad_request(str(exc), param=exc.param)) from None
        headers = signed_headers(deployment, url, body, EVENTSTREAM if ctx.stream else "application/json")
        return get_client().build_request("POST", url, content=body, headers=headers)

    async def _invoke(self, deployment: Deployment, body: dict[str, Any]) -> tuple[dict, httpx.Response]:
        """One signed InvokeModel call; raises _CallFailed with the mapped error."""
        url = deployment.urls["invoke"]
        content = orjson.dumps(body)
        headers = signed_headers(deployment, url, content, "application/json")
        client = get_client()
        try:
            response = await client.send(client.build_request("POST", url, content=content, headers=headers))
        except httpx.HTTPError as exc:
            raise _CallFailed(transport_error(exc, deployment)) from None
        if response.status_code >= 300:
            raise _CallFailed(_error_from_response(response, response.content, deployment))
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise _CallFailed(bad_response("Bedrock returned a body that is not an InvokeModel JSON answer"))
        return data, response

    async def _embeddings(self, deployment: Deployment, payload: dict[str, Any]) -> UpstreamResult:
        family = embedding_family(deployment.upstream_model)
        if not family:
            return bad_request(
                "Embeddings on Bedrock are offered for Amazon Titan Text Embeddings and Cohere Embed models, "
                f"not {deployment.upstream_model[:100]!r}."
            )
        try:
            texts = embedding_texts(payload)
            bodies = titan_bodies(payload, texts) if family == "titan" else cohere_bodies(payload, texts)
        except Unsupported as exc:
            return bad_request(str(exc))
        if not deployment.urls.get("invoke"):
            self.prepare(deployment)
        limit = asyncio.Semaphore(EMBED_CONCURRENCY)

        async def one(body: dict[str, Any]) -> tuple[dict, httpx.Response]:
            async with limit:
                return await self._invoke(deployment, body)

        tasks = [asyncio.ensure_future(one(body)) for body in bodies]
        try:
            answers = await asyncio.gather(*tasks)
        except _CallFailed as exc:
            # One failed text fails the request: the calls still running are not worth their cost.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return exc.result
        built = embeddings_list(family, [data for data, _response in answers], texts, payload)
        if built is None:
            return bad_response("Bedrock returned an embeddings answer of an unexpected shape")
        body, usage = built
        return UpstreamResult(status=200, body=orjson.dumps(body), usage=usage, headers=_pass_headers(answers[0][1]))

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        if ctx.endpoint == "embeddings":
            return await self._embeddings(deployment, payload)  # InvokeModel, one call per text or batch
        return await super().send(deployment, payload, ctx)

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
            data = None
        if not isinstance(data, dict):
            return bad_response("Bedrock returned a body that is not a Converse response")
        body, usage = chat_completion(data, deployment, ctx)
        return UpstreamResult(status=200, body=orjson.dumps(body), usage=usage, headers=_pass_headers(response))

    def parse_error(
        self, deployment: Deployment, ctx: CallContext, response: httpx.Response, content: bytes
    ) -> UpstreamResult:
        return _error_from_response(response, content, deployment)

    def decoder(self, deployment: Deployment, ctx: CallContext, response: httpx.Response) -> UpstreamStream:
        stream = BedrockStream(response, deployment, ctx)
        stream.headers = _pass_headers(response)
        return stream


def _sse(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


class ConverseStreamTranslator:
    """Binary event-stream bytes in, OpenAI SSE events out; fed as bytes arrive, in any slicing."""

    def __init__(self, deployment: Deployment, ctx: CallContext) -> None:
        self.deployment = deployment
        self.hide_usage = not ctx.client_wants_usage
        self.buffer = EventStreamBuffer()
        self.base = {"id": f"chatcmpl-{ctx.request_id}", "object": "chat.completion.chunk", "created": int(time.time())}
        self.base["model"] = deployment.upstream_model
        self.tool_index: dict[int, int] = {}  # Converse content block index -> OpenAI tool_calls index
        self.structured: set[int] = set()  # content block indexes of the structured-output tool
        self.stopped = False
        self.usage: dict | None = None
        self.error: UpstreamResult | None = None

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        return _sse({**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def feed(self, data: bytes) -> list[bytes]:
        """OpenAI events for the frames completed by `data`; raises ParserError on a corrupt frame."""
        self.buffer.add_data(data)
        out: list[bytes] = []
        for message in self.buffer:
            if self.error is not None:
                break
            # botocore-stubs types EventStreamMessage.headers as int; botocore parses them into a dict.
            headers = cast("dict[str, Any]", message.headers)
            kind = headers.get(":message-type", "event")
            if kind == "event":
                event = self._event(headers.get(":event-type", ""), message.payload)
                if event:
                    out.append(event)
            else:
                self.error = error = self._exception(kind, headers, message.payload)
                out.append(b"data: " + error.body + b"\n\n")
        return out

    def _exception(self, kind: str, headers: dict, payload: bytes) -> UpstreamResult:
        try:
            data = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            data = {}
        if kind == "exception":
            name = str(headers.get(":exception-type", ""))
        else:  # "error": the code and message travel in headers
            name, data = str(headers.get(":error-code", "")), {"message": headers.get(":error-message", "")}
        # Stream exception types are lowerCamelCase ("throttlingException"): the same AWS types.
        error_type = name[:1].upper() + name[1:]
        message = str(data.get("message") or data.get("Message") or "") if isinstance(data, dict) else ""
        return aws_error(500, error_type, message, self.deployment)

    def _event(self, name: str, payload: bytes) -> bytes | None:
        data = orjson.loads(payload) if payload else {}
        if not isinstance(data, dict):
            return None
        if name == "contentBlockDelta":
            delta = data.get("delta") or {}
            if "text" in delta:
                return self._chunk({"content": delta["text"]})
            if "toolUse" in delta:
                if data.get("contentBlockIndex", 0) in self.structured:
                    return self._chunk({"content": delta["toolUse"].get("input", "")})
                index = self.tool_index.get(data.get("contentBlockIndex", 0))
                if index is None:
                    return None
                return self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": delta["toolUse"].get("input", "")}}]}
                )
            return None  # reasoning and citations have no OpenAI counterpart
        if name == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if not use:
                return None
            if use.get("name") == STRUCTURED_TOOL:
                self.structured.add(data.get("contentBlockIndex", 0))  # its input streams as the content
                return None
            index = len(self.tool_index)
            self.tool_index[data.get("contentBlockIndex", 0)] = index
            call = {"index": index, "id": use.get("toolUseId"), "type": "function"}
            call["function"] = {"name": use.get("name"), "arguments": ""}
            return self._chunk({"tool_calls": [call]})
        if name == "messageStart":
            return self._chunk({"role": data.get("role", "assistant"), "content": ""})
        if name == "messageStop":
            self.stopped = True
            if self.structured and not self.tool_index:
                return self._chunk({}, "stop")
            return self._chunk({}, _FINISH.get(data.get("stopReason"), "stop"))
        if name == "metadata":
            self.usage = openai_usage(data.get("usage"))
            if self.usage is None or self.hide_usage:
                return None
            return _sse({**self.base, "choices": [], "usage": self.usage})
        return None  # contentBlockStop and events added later


class BedrockStream(UpstreamStream):
    def __init__(self, response: httpx.Response, deployment: Deployment, ctx: CallContext) -> None:
        super().__init__()
        self.response = response
        self.deployment = deployment
        self.translator = ConverseStreamTranslator(deployment, ctx)

    def _fail(self, error_type: str, message: str, client_message: str) -> bytes:
        self.error_type, self.error_message = error_type, message[:2000]
        return b"data: " + error_body(client_message, type="upstream_error", code=error_type) + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:
        translator = self.translator
        try:
            async for chunk in self.response.aiter_raw():
                try:
                    events = translator.feed(chunk)
                except (ParserError, orjson.JSONDecodeError) as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    yield self._fail("upstream_bad_frame", message, "The upstream event stream was corrupt")
                    return
                self.usage = translator.usage
                for event in events:
                    yield event
                if translator.error is not None:
                    self.error_type = translator.error.error_type
                    self.error_message = translator.error.error_message
                    return
        except httpx.HTTPError as exc:
            message = redact(f"{type(exc).__name__}: {exc}"[:1000], secrets_of(self.deployment))
            yield self._fail("upstream_stream_error", message, "The upstream stream was interrupted")
            return
        if not translator.stopped:
            message = "The Bedrock stream ended without messageStop"
            yield self._fail("upstream_stream_incomplete", message, "The upstream stream ended before it was complete")
            return
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        await self.response.aclose()
