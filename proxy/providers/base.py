"""The provider adapter interface, and the transport every adapter shares.

One adapter per provider family translates an OpenAI-format request into the provider's, and the
provider's answer, stream events, usage and errors back into OpenAI's format. The proxy only ever
sees OpenAI-shaped bytes plus a usage dict.

The transport is written once, here (`send`, `open_stream`: the pooled client, transport errors,
redirects, an error body read and the connection closed, a stream that is not one). An adapter
supplies four pure-ish hooks: `build` (the HTTP request), `parse` (a 2xx answer), `parse_error` (a
4xx/5xx answer), `decoder` (the provider's stream as OpenAI events), plus `classify` where its
provider has its own error dialect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import httpx

from proxy.errors import error_body
from proxy.snapshot import Deployment
from proxy.upstream import get_client, read_and_close


@dataclass(slots=True)
class CallContext:
    request_id: str
    endpoint: str  # "chat/completions" | "embeddings"
    stream: bool
    # The client asked for stream usage itself (stream_options.include_usage); otherwise the gateway
    # asks the upstream for it and hides the extra chunk from the client.
    client_wants_usage: bool = False
    started: float = 0.0
    # Same protocol in and out: the client's own request body (e.g. Anthropic's Messages request) and
    # the adapter kind that speaks it. That adapter relays it with only `model` swapped, so fields the
    # gateway does not know keep working; every other adapter translates `payload` as usual.
    native: dict[str, Any] | None = None
    native_kind: str = ""


# The client formats other than chat that a provider kind serves as they are (`CallContext.native_kind`
# relayed with only the model swapped). OpenAI-compatible servers have legacy completions but rarely the
# Responses API; Azure OpenAI has both. Anthropic's Messages format is the Anthropic adapter's own.
NATIVE_FORMATS: dict[str, frozenset[str]] = {
    "openai": frozenset({"responses", "completions"}),
    "azure": frozenset({"responses", "completions"}),
    "openai-compatible": frozenset({"completions"}),
    "anthropic": frozenset({"anthropic"}),
}


def relays(kind: str, native_kind: str) -> bool:
    """A deployment of `kind` is given the client's own body in the `native_kind` format."""
    return bool(native_kind) and native_kind in NATIVE_FORMATS.get(kind, ())


@dataclass(slots=True)
class UpstreamResult:
    """A complete (non-streamed) answer, or an error before any stream byte."""

    status: int
    body: bytes
    usage: dict | None = None
    content_type: str = "application/json"
    error_type: str = ""
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # The body is in the client's own format (relayed from a same-protocol upstream, ctx.native), not
    # OpenAI's: the front end passes it on untouched. `usage`, errors and status are still OpenAI-style.
    native: bool = False
    # Why the provider stopped, in its own words ("end_turn", "MAX_TOKENS"): for the call log's attempt.
    finish_reason: str = ""


class UpstreamStream:
    """An open stream: iterate to get OpenAI SSE events as bytes (or, when `native`, the upstream's
    own events in the client's format); usage is set when seen, in OpenAI's format either way."""

    status = 200
    native = False
    finish_reason = ""  # the provider's own stop reason, once its stream said it

    def __init__(self) -> None:
        self.usage: dict | None = None
        self.error_type = ""
        self.error_message = ""
        self.headers: dict[str, str] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.events()

    async def events(self) -> AsyncIterator[bytes]:  # pragma: no cover - interface
        raise NotImplementedError
        yield b""

    async def aclose(self) -> None:
        return None


def failure(
    status: int,
    message: str,
    code: str,
    type: str = "upstream_error",
    error_type: str | None = None,
    param: str | None = None,
) -> UpstreamResult:
    """A failed attempt that never got a usable answer: OpenAI's error body, and the code as the call
    log's error type unless told otherwise."""
    return UpstreamResult(
        status=status,
        body=error_body(message, type=type, param=param, code=code),
        error_type=error_type or code,
        error_message=message,
    )


def bad_request(message: str, error_type: str | None = None, param: str | None = None) -> UpstreamResult:
    """The request asks for something this provider cannot do: refused before any upstream call. With
    `param`, the error names the request parameter (code `unsupported_value`), as OpenAI's own do."""
    if param is None:
        return failure(400, message, "unsupported_for_provider", "invalid_request_error", error_type)
    return failure(400, message, "unsupported_value", "invalid_request_error", error_type, param)


def bad_response(message: str) -> UpstreamResult:
    """The provider answered, but not with something the gateway can read."""
    return failure(502, message, "upstream_bad_response")


class ErrorKind(StrEnum):
    NONE = ""
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"  # this deployment's credentials: another deployment may do
    NOT_FOUND = "not_found"  # this deployment's model: another deployment may do
    BAD_REQUEST = "bad_request"  # the request itself: no deployment will do


_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "too many tokens",
)


def classify_result(result: UpstreamResult) -> ErrorKind:
    """What a failed answer means for the attempt loop (adapters with their own dialect may refine)."""
    status = result.status
    if status < 400:
        return ErrorKind.NONE
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status == 504 or result.error_type == "upstream_timeout":
        return ErrorKind.TIMEOUT
    if result.error_type == "upstream_unreachable":
        return ErrorKind.UNREACHABLE
    if status >= 500:
        return ErrorKind.SERVER
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    text = (result.error_type + " " + result.error_message).lower()
    if status in (400, 413, 422) and any(m in text for m in _CONTEXT_MARKERS):
        return ErrorKind.CONTEXT_WINDOW
    if "content_filter" in text or "content_policy" in text:
        return ErrorKind.CONTENT_POLICY
    return ErrorKind.BAD_REQUEST


def not_a_stream(status: int, content_type: str, location: str) -> UpstreamResult:
    if 300 <= status < 400:
        where = f" to {location[:200]}" if location else ""
        message = f"The upstream provider answered a stream request with a redirect (HTTP {status}{where}); check the base URL"
    else:
        message = (
            f"The upstream provider answered a stream request with HTTP {status} "
            f"{content_type.split(';')[0].strip() or 'without a content type'}, not an event stream"
        )
    return bad_response(message)


def redirected(status: int, location: str) -> UpstreamResult:
    """Redirects are never followed (a provider URL that moves is a misconfiguration, and following one
    could carry the credential elsewhere)."""
    where = f" to {location[:200]}" if location else ""
    return bad_response(f"The upstream provider answered with a redirect (HTTP {status}{where}); check the base URL")


def stream_error_event(message: str, code: str, type_: str = "upstream_error") -> bytes:
    return b"data: " + error_body(message, type=type_, code=code) + b"\n\n"


def transport_error(exc: Exception, deployment: Deployment) -> UpstreamResult:
    # httpx-aiohttp maps every aiohttp connection error (even "connection refused") to ConnectTimeout,
    # so look at the original aiohttp exception to tell a timeout from an unreachable host.
    cause = exc.__cause__
    timed_out = isinstance(exc, httpx.TimeoutException) and (
        cause is None or isinstance(cause, (TimeoutError, aiohttp.ServerTimeoutError))
    )
    if timed_out:
        status, code, msg = 504, "upstream_timeout", "The upstream provider timed out"
    else:
        status, code, msg = 502, "upstream_unreachable", "The upstream provider could not be reached"
    # Name what happened (a closed socket, a refused connection), not the wrapper's "ConnectTimeout".
    what = cause if cause is not None and not timed_out else exc
    message = f"{msg} ({deployment.provider_name}): {type(what).__name__}: {what}"[:1000]
    return UpstreamResult(
        status=status,
        body=error_body(message, type="upstream_error", code=code),
        error_type=code,
        error_message=message,
    )


class Refused(Exception):
    """`build` cannot translate this request for this provider: `result` answers it, no upstream call."""

    def __init__(self, result: UpstreamResult) -> None:
        super().__init__(result.error_message)
        self.result = result


class ProviderAdapter:
    kind: str = ""
    endpoints: frozenset[str] = frozenset({"chat/completions", "embeddings"})
    # What a stream answer's content type must contain (Bedrock's is AWS's binary event stream).
    stream_content_type = "text/event-stream"

    def prepare(self, deployment: Deployment) -> None:
        """Precompute per-deployment URLs and headers when the tenant config is loaded."""

    # -- the hooks an adapter implements ----------------------------------------------------------------

    def build(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        """The upstream request (never mutating `payload`: a later attempt may send it elsewhere); raise
        Refused for a request this provider cannot serve."""
        raise NotImplementedError

    def parse(
        self,
        deployment: Deployment,
        payload: dict[str, Any],
        ctx: CallContext,
        response: httpx.Response,
        content: bytes,
    ) -> UpstreamResult:
        """A 2xx answer, translated to OpenAI's format."""
        raise NotImplementedError

    def parse_error(
        self, deployment: Deployment, ctx: CallContext, response: httpx.Response, content: bytes
    ) -> UpstreamResult:
        """A 4xx/5xx answer, as OpenAI's error body with the provider's status."""
        raise NotImplementedError

    def decoder(self, deployment: Deployment, ctx: CallContext, response: httpx.Response) -> UpstreamStream:
        """The open stream, decoded into OpenAI events (or relayed, for a native request)."""
        raise NotImplementedError

    def classify(self, result: UpstreamResult) -> ErrorKind:
        """What a failed answer means for the attempt loop; adapters whose provider has its own
        dialect (error types, overload statuses) refine this."""
        return classify_result(result)

    # -- the transport, written once --------------------------------------------------------------------

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        try:
            request = self.build(deployment, payload, ctx)
        except Refused as exc:
            return exc.result
        try:
            response = await get_client().send(request)
        except httpx.HTTPError as exc:
            return transport_error(exc, deployment)
        status = response.status_code
        if status >= 400:
            return self.parse_error(deployment, ctx, response, response.content)
        if status >= 300:
            return redirected(status, response.headers.get("location", ""))
        return self.parse(deployment, payload, ctx, response, response.content)

    async def open_stream(
        self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext
    ) -> UpstreamResult | UpstreamStream:
        try:
            request = self.build(deployment, payload, ctx)
        except Refused as exc:
            return exc.result
        try:
            response = await get_client().send(request, stream=True)
        except httpx.HTTPError as exc:
            return transport_error(exc, deployment)
        status = response.status_code
        if status >= 400:
            return self.parse_error(deployment, ctx, response, await read_and_close(response))
        content_type = response.headers.get("content-type", "")
        if status >= 300 or self.stream_content_type not in content_type:
            # A redirect (never followed) or a body that is not a stream: relaying it as a 200 event
            # stream would hand the client an empty or garbled stream and log a success.
            await response.aclose()
            return not_a_stream(status, content_type, response.headers.get("location", ""))
        return self.decoder(deployment, ctx, response)


# --- structured outputs through a forced tool (providers without a JSON-schema mode of their own) ----

# The tool that carries `response_format` for Anthropic and Bedrock: its input schema is the answer's
# schema and tool_choice forces it; its input comes back as the message's content (JSON text), never as
# a tool call. A client's own tool may not take this name.
STRUCTURED_TOOL = "gateway_json_response"
STRUCTURED_TOOL_DESCRIPTION = (
    "Give your whole answer through this tool: its input is the answer, as JSON matching the schema."
)


# --- request parameters by provider ----------------------------------------------------------------

# Parameters that are metadata or hints for OpenAI's own service: no translating adapter has anything to
# carry them to, and leaving them out does not change the answer (each adapter's IGNORED starts here).
HARMLESS_PARAMETERS = frozenset(
    {
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "prediction",
    }
)

# OpenAI's chat completions request parameters (CreateChatCompletionRequest). Each translating adapter
# sorts every one of them into CARRIED (mapped to the provider's own field), IGNORED (harmless metadata
# or hints, left out; listed in the README) or REFUSED (a 400 naming it): a new parameter goes here and
# tests/proxy/test_provider_parameters.py fails until each adapter has decided.
CHAT_PARAMETERS = frozenset(
    {
        "messages",
        "model",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
ZERO = (0, 0.0)


@dataclass(frozen=True, slots=True)
class Uncarried:
    """A parameter the provider has no field for, where leaving it out would change the answer: a 400
    naming it, unless the request sets it to one of `harmless` (its default, or an explicit "off")."""

    message: str
    harmless: tuple[Any, ...] = ()

    def allows(self, value: Any) -> bool:
        # Compared with the type too: True == 1, but `n: true` is not `n: 1`.
        return value is None or any(value == ok and type(value) is type(ok) for ok in self.harmless)


def check_parameters(payload: dict[str, Any], refused: Mapping[str, Uncarried]) -> None:
    """Raise Refused for the first parameter of `refused` (in its order) that the request asks for. One
    set intersection per request, usually empty."""
    present = refused.keys() & payload.keys()
    if not present:
        return
    for name, rule in refused.items():
        if name in present and not rule.allows(payload[name]):
            code = "unsupported_value" if rule.harmless else "unsupported_parameter"
            raise Refused(failure(400, rule.message, code, "invalid_request_error", param=name))


class FormatRefused(ValueError):
    """`response_format` asks for what the provider cannot honour: a 400 naming it, never a silent drop."""


def structured_schema(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the answer must follow (json_schema's, or any object for json_object), or None
    when the request sets no format (or `text`)."""
    fmt = payload.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        schema = fmt["json_schema"].get("schema") or {"type": "object"}
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise FormatRefused("response_format.json_schema.schema must be an object schema with this provider")
    else:
        raise FormatRefused("response_format must be text, json_object or json_schema (with a json_schema object)")
    if payload.get("tools"):
        raise FormatRefused(
            "response_format together with tools is not supported with this provider: send one or the other"
        )
    if payload.get("reasoning_effort") not in (None, "none") or payload.get("thinking") is not None:
        raise FormatRefused("response_format cannot be combined with extended thinking on this provider")
    return schema
