"""OpenAI and OpenAI-compatible upstreams: the wire format is ours, so this is nearly a relay."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from gateway_project.common.redact import redact, redact_bytes, secrets_of
from proxy.errors import error_body
from proxy.providers.base import (
    CallContext,
    ProviderAdapter,
    UpstreamResult,
    UpstreamStream,
    bad_response,
    relays,
    stream_error_event,
)
from proxy.snapshot import Deployment
from proxy.sse import SSESplitter, event_data
from proxy.upstream import get_client

# Response headers worth passing through to the client.
PASS_HEADERS = ("openai-processing-ms", "openai-version", "x-request-id", "retry-after", "retry-after-ms")


def _error_from_upstream(status: int, content: bytes, content_type: str) -> UpstreamResult:
    """Pass the provider's error through with its status, in OpenAI's error shape."""
    message, err_type = "", "upstream_error"
    try:
        data = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or "")
        err_type = str(err.get("type") or err_type)
        body = orjson.dumps(
            {
                "error": {
                    "message": message,
                    "type": err_type,
                    "param": err.get("param"),
                    "code": err.get("code"),
                }
            }
        )
    else:
        text = content[:500].decode("utf-8", "replace").strip()
        message = f"Upstream returned HTTP {status}" + (f": {text}" if text else "")
        body = error_body(message, type="upstream_error", code=f"upstream_{status}")
    return UpstreamResult(status=status, body=body, error_type=err_type, error_message=message[:2000])


def _pass_headers(response: httpx.Response) -> dict[str, str]:
    out = {}
    for name in PASS_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            out["x-upstream-request-id" if name == "x-request-id" else name] = value
    return out


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"

    # Legacy completions and the Responses API are relayed in their own format (base.NATIVE_FORMATS).
    # Moderations serve the `moderation` guardrail (api: moderations; proxy.steps.guardcalls), not clients.
    endpoints = frozenset({"chat/completions", "embeddings", "completions", "responses", "moderations"})

    def prepare(self, deployment: Deployment) -> None:
        base = deployment.base_url or "https://api.openai.com/v1"
        deployment.urls = {e: f"{base}/{e}" for e in self.endpoints}
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if deployment.api_key:
            headers["authorization"] = f"Bearer {deployment.api_key}"
        deployment.headers = headers

    def build(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        if relays(deployment.kind, ctx.native_kind):
            return self.relay(deployment, ctx)
        # A shallow copy: the client's payload stays as it came, for the next attempt (another
        # deployment, another provider) and for anything that reads it after the call.
        body = {**payload, "model": deployment.upstream_model}
        if ctx.stream and not ctx.client_wants_usage:
            options = payload.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            )
        return get_client().build_request(
            "POST", deployment.urls[ctx.endpoint], content=orjson.dumps(body), headers=self.headers(deployment, ctx)
        )

    def headers(self, deployment: Deployment, ctx: CallContext) -> dict[str, str]:
        """The request's headers: the deployment's, the call's id, then the operator's own (last: they win)."""
        headers = {**deployment.headers, "x-request-id": ctx.request_id}
        if deployment.extra_headers:
            headers.update(deployment.extra_headers)
        return headers

    def relay(self, deployment: Deployment, ctx: CallContext) -> httpx.Request:
        """The client's own body (the Responses API, legacy completions) with the model swapped, to the
        same endpoint upstream; a completions stream asks for its usage like a chat stream does."""
        body = {**(ctx.native or {}), "model": deployment.upstream_model}
        if ctx.native_kind == "completions" and ctx.stream and not ctx.client_wants_usage:
            options = body.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            )
        return get_client().build_request(
            "POST",
            deployment.urls[ctx.native_kind],
            content=orjson.dumps(body),
            headers=self.headers(deployment, ctx),
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
        if relays(deployment.kind, ctx.native_kind):
            return _relayed(ctx.native_kind, data, content, response)
        usage = data["usage"] if isinstance(data, dict) and isinstance(data.get("usage"), dict) else None
        return UpstreamResult(status=response.status_code, body=content, usage=usage, headers=_pass_headers(response))

    def parse_error(
        self, deployment: Deployment, ctx: CallContext, response: httpx.Response, content: bytes
    ) -> UpstreamResult:
        result = _error_from_upstream(response.status_code, content, response.headers.get("content-type", ""))
        result.headers = _pass_headers(response)
        return result

    def decoder(self, deployment: Deployment, ctx: CallContext, response: httpx.Response) -> UpstreamStream:
        if ctx.native_kind == "responses" and relays(deployment.kind, "responses"):
            relay: UpstreamStream = ResponsesRelayStream(response, deployment)
            relay.headers = _pass_headers(response)
            return relay
        stream = OpenAIStream(response, hide_usage=not ctx.client_wants_usage, deployment=deployment)
        # Completion chunks end, carry usage and errors as chat chunks do: the same reader, relayed as is.
        stream.native = relays(deployment.kind, ctx.native_kind)
        stream.headers = _pass_headers(response)
        return stream


def _relayed(native_kind: str, data: Any, content: bytes, response: httpx.Response) -> UpstreamResult:
    """A relayed answer (OpenAI's `response` or `text_completion` object), passed on as it came; billed
    from its usage, in the chat format."""
    expected = "response" if native_kind == "responses" else "text_completion"
    if not isinstance(data, dict) or data.get("object") != expected:
        return bad_response(f"The upstream provider returned JSON that is not a {expected} object")
    if native_kind == "responses":
        usage, finish = chat_usage(data.get("usage")), str(data.get("status") or "")
    else:
        usage = data["usage"] if isinstance(data.get("usage"), dict) else None
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        finish = str(first.get("finish_reason") or "")
    return UpstreamResult(
        status=response.status_code,
        body=content,
        usage=usage,
        headers=_pass_headers(response),
        native=True,
        finish_reason=finish,
    )


class OpenAIStream(UpstreamStream):
    def __init__(self, response: httpx.Response, *, hide_usage: bool, deployment: Deployment) -> None:
        super().__init__()
        self.response = response
        self.hide_usage = hide_usage
        self.deployment = deployment
        self.first_byte_at: float | None = None

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        done = False
        event: bytes | None  # None once _take_usage drops a usage-only event
        try:
            async for chunk in self.response.aiter_raw():
                if self.first_byte_at is None:
                    self.first_byte_at = time.perf_counter()
                events = splitter.feed(chunk)
                if not events:
                    continue
                for event in events:
                    if event.startswith((b"data: [DONE]", b"data:[DONE]")):
                        done = True
                    elif b'"error"' in event:
                        # A quoted "error" key (content is JSON-escaped, so never matches): maybe an error
                        # event. It ends the stream, without [DONE].
                        error = self._error_event(event)
                        if error is not None:
                            yield error
                            return
                    if b'"usage":{' in event or b'"usage": {' in event:
                        event = self._take_usage(event)
                        if event is None:
                            continue
                    yield event
            rest = splitter.rest()
            if rest:
                if rest.startswith((b"data: [DONE]", b"data:[DONE]")):
                    done = True
                elif b'"error"' in rest and (error := self._error_event(rest)) is not None:
                    yield error
                    return
                yield rest
        except httpx.HTTPError as exc:
            self.error_type = "upstream_stream_error"
            self.error_message = redact(f"{type(exc).__name__}: {exc}"[:1000], secrets_of(self.deployment))
            yield stream_error_event("The upstream stream was interrupted", "upstream_stream_error")
            return
        if not done:
            # The connection ended cleanly but the stream never finished: the answer may be cut short.
            self.error_type = "upstream_stream_incomplete"
            self.error_message = "The upstream stream ended without [DONE]"
            yield stream_error_event("The upstream stream ended before it was complete", "upstream_stream_incomplete")

    def _error_event(self, event: bytes) -> bytes | None:
        """An upstream error event, in OpenAI's error shape and without the deployment's secrets."""
        try:
            data = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return None
        err = data.get("error") if isinstance(data, dict) else None
        if not err:
            return None  # e.g. "error": null in an ordinary chunk
        if not isinstance(err, dict):
            err = {"message": str(err)}
        secrets = secrets_of(self.deployment)

        def clean(value: Any) -> str | None:
            return None if value is None else redact(str(value), secrets)

        message = clean(err.get("message")) or "The upstream provider reported an error mid-stream"
        code = clean(err.get("code"))
        self.error_type = (clean(err.get("type")) or "upstream_error")[:100]
        self.error_message = message[:2000]
        return (
            b"data: "
            + orjson.dumps(
                {"error": {"message": message, "type": self.error_type, "param": clean(err.get("param")), "code": code}}
            )
            + b"\n\n"
        )

    def _take_usage(self, event: bytes) -> bytes | None:
        try:
            data = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return event
        if isinstance(data, dict) and isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
            if self.hide_usage and not data.get("choices"):
                return None
        return event

    async def aclose(self) -> None:
        await self.response.aclose()


def chat_usage(usage: Any) -> dict | None:
    """The Responses API's usage in the chat format the gateway bills from."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": int(reasoning)}
    return out


def _responses_error_event(message: str, code: str) -> bytes:
    body = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": 0}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


# The events that end a Responses API stream.
FINAL_EVENTS = (b"event: response.completed", b"event: response.incomplete", b"event: response.failed", b"event: error")


class ResponsesRelayStream(UpstreamStream):
    """OpenAI's Responses API stream relayed as it came; only its last event is parsed, for the usage
    (response.completed / .incomplete) or the error (response.failed, error)."""

    native = True

    def __init__(self, response: httpx.Response, deployment: Deployment) -> None:
        super().__init__()
        self.response = response
        self.deployment = deployment

    def _final(self, event: bytes) -> None:
        try:
            data = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        found = data.get("response")
        response: dict = found if isinstance(found, dict) else {}
        self.usage = chat_usage(response.get("usage")) or self.usage
        self.finish_reason = str(response.get("status") or data.get("type") or "")
        if data.get("type") in ("response.failed", "error"):
            inner = response.get("error")
            err: dict = inner if isinstance(inner, dict) else data
            secrets = secrets_of(self.deployment)
            self.error_type = redact(str(err.get("code") or err.get("type") or "upstream_error"), secrets)[:100]
            message = str(err.get("message") or "The upstream provider reported an error mid-stream")
            self.error_message = redact(message, secrets)[:2000]

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        try:
            async for raw in self.response.aiter_raw():
                for event in splitter.feed(raw):
                    if event.startswith(FINAL_EVENTS):
                        self._final(event)
                        yield redact_bytes(event, secrets_of(self.deployment)) if self.error_type else event
                        return
                    yield event
        except httpx.HTTPError as exc:
            self.error_type = "upstream_stream_error"
            self.error_message = redact(f"{type(exc).__name__}: {exc}"[:1000], secrets_of(self.deployment))
            yield _responses_error_event("The upstream stream was interrupted", "upstream_stream_error")
            return
        self.error_type = "upstream_stream_incomplete"
        self.error_message = "The upstream stream ended without response.completed"
        yield _responses_error_event("The upstream stream ended before it was complete", "upstream_stream_incomplete")

    async def aclose(self) -> None:
        await self.response.aclose()
