"""OpenAI and OpenAI-compatible upstreams: the wire format is ours, so this is nearly a relay."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson

from gateway_project.common.redact import redact, secrets_of
from proxy.errors import error_body
from proxy.providers.base import (
    CallContext,
    ProviderAdapter,
    UpstreamResult,
    UpstreamStream,
    bad_response,
)
from proxy.snapshot import Deployment
from proxy.sse import SSESplitter, event_data
from proxy.upstream import get_client, read_and_close

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
    message = f"{msg} ({deployment.provider_name}): {type(exc).__name__}: {exc}"[:1000]
    return UpstreamResult(
        status=status,
        body=error_body(message, type="upstream_error", code=code),
        error_type=code,
        error_message=message,
    )


def _pass_headers(response: httpx.Response) -> dict[str, str]:
    out = {}
    for name in PASS_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            out["x-upstream-request-id" if name == "x-request-id" else name] = value
    return out


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"

    def prepare(self, deployment: Deployment) -> None:
        base = deployment.base_url or "https://api.openai.com/v1"
        deployment.urls = {e: f"{base}/{e}" for e in self.endpoints}
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if deployment.api_key:
            headers["authorization"] = f"Bearer {deployment.api_key}"
        deployment.headers = headers

    def _request(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        # A shallow copy: the client's payload stays as it came, for the next attempt (another
        # deployment, another provider) and for anything that reads it after the call.
        body = {**payload, "model": deployment.upstream_model}
        if ctx.stream and not ctx.client_wants_usage:
            options = payload.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            )
        headers = {**deployment.headers, "x-request-id": ctx.request_id}
        if deployment.extra_headers:
            headers.update(deployment.extra_headers)
        return get_client().build_request(
            "POST", deployment.urls[ctx.endpoint], content=orjson.dumps(body), headers=headers
        )

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        request = self._request(deployment, payload, ctx)
        try:
            response = await get_client().send(request)
        except httpx.HTTPError as exc:
            return transport_error(exc, deployment)
        content = response.content
        if response.status_code >= 400:
            result = _error_from_upstream(response.status_code, content, response.headers.get("content-type", ""))
            result.headers = _pass_headers(response)
            return result
        usage = None
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            message = "The upstream provider returned a body that is not JSON"
            return bad_response(message)
        if isinstance(data, dict) and isinstance(data.get("usage"), dict):
            usage = data["usage"]
        return UpstreamResult(status=response.status_code, body=content, usage=usage, headers=_pass_headers(response))

    async def open_stream(
        self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext
    ) -> UpstreamResult | UpstreamStream:
        request = self._request(deployment, payload, ctx)
        client = get_client()
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return transport_error(exc, deployment)
        if response.status_code >= 400:
            content = await read_and_close(response)
            result = _error_from_upstream(response.status_code, content, response.headers.get("content-type", ""))
            result.headers = _pass_headers(response)
            return result
        content_type = response.headers.get("content-type", "")
        if response.status_code >= 300 or "text/event-stream" not in content_type:
            # A redirect (never followed) or a body that is not SSE: relaying it as a 200 event stream
            # would hand the client an empty or garbled stream and log a success.
            await response.aclose()
            return not_a_stream(response.status_code, content_type, response.headers.get("location", ""))
        stream = OpenAIStream(response, hide_usage=not ctx.client_wants_usage, deployment=deployment)
        stream.headers = _pass_headers(response)
        return stream


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
