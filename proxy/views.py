"""The OpenAI-compatible API: /v1/chat/completions, /v1/embeddings, /v1/models.

Served by proxy.asgi.ProxyHandler: no middleware, no thread hop, no synchronous database query.
Everything a request needs (its key, its tenant's deployments) comes from proxy.state's in-process
cache; its call log leaves through observability.logbuffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from billing.prices import pico_to_nanos_ceil, to_pico
from observability.logbuffer import buffer
from proxy import errors, money
from proxy.errors import ProxyError
from proxy.providers import adapter_for
from proxy.providers.base import CallContext, UpstreamResult, UpstreamStream
from proxy.routing import pick_deployment
from proxy.state import Deployment, KeyEntry, TenantEntry, state
from proxy.tasks import spawn
from tenants.models import hash_secret

logger = logging.getLogger("gateway.proxy")

_started = False


def ensure_background() -> None:
    """Start this process's invalidation listener and log flusher (first request, or lifespan)."""
    global _started
    if not _started:
        state.start()
        buffer.start()
        _started = True


def _request_id(request: HttpRequest) -> str:
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    # ASCII only: the id is forwarded upstream in a header, and non-ASCII header values cannot be sent.
    if given and len(given) <= 100 and given.isascii() and given.isprintable():
        return given
    return "req_" + os.urandom(12).hex()


async def _authenticate(request: HttpRequest) -> KeyEntry:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    secret = ""
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            secret = value.strip()
    if not secret:
        secret = request.META.get("HTTP_API_KEY", "").strip()
    if not secret:
        raise ProxyError(
            401,
            "You didn't provide an API key. Send your gateway virtual key as 'Authorization: Bearer sk-gw-...'.",
            code="missing_api_key",
        )
    if not secret.startswith("sk-gw-") or len(secret) > 200:
        raise errors.invalid_key()
    entry = await state.key(hash_secret(secret))
    if entry is None:
        raise errors.invalid_key()
    if entry.revoked:
        raise ProxyError(401, "This API key has been revoked.", code="invalid_api_key")
    if entry.expires_at is not None and entry.expires_at <= time.time():
        raise ProxyError(401, "This API key has expired.", code="invalid_api_key")
    return entry


async def _tenant(key: KeyEntry) -> TenantEntry:
    tenant = await state.tenant(key.tenant_id)
    if tenant is None:
        raise errors.invalid_key()
    return tenant


def _parse_body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ProxyError(413, "The request body is too large.", code="request_too_large") from None
    if not raw:
        raise errors.bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise errors.bad_request("The request body must be a JSON object.", code="invalid_json")
    return payload


def _require_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model is None:
        raise errors.bad_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise errors.bad_request("model must be a non-empty string", param="model", code="invalid_type")
    return model


def _validate_chat(payload: dict[str, Any]) -> None:
    messages = payload.get("messages")
    if messages is None:
        raise errors.bad_request(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request(
            "'messages' must be a non-empty array of message objects.", param="messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise errors.bad_request(
                f"Invalid message at messages[{i}]: each message must be an object with a 'role'.",
                param=f"messages[{i}]",
                code="invalid_type",
            )
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.bad_request("'stream' must be a boolean.", param="stream", code="invalid_type")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise errors.bad_request("'stream_options' must be an object.", param="stream_options", code="invalid_type")
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise errors.bad_request(f"'{name}' must be a positive integer.", param=name, code="invalid_value")


def _validate_embeddings(payload: dict[str, Any]) -> None:
    value = payload.get("input")
    if value is None:
        raise errors.bad_request(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    ok = (isinstance(value, str) and value != "") or (
        isinstance(value, list)
        and value
        and (
            all(isinstance(x, str) and x for x in value)
            or all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            or all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in value)
        )
    )
    if not ok:
        raise errors.bad_request(
            "'input' must be a non-empty string, an array of non-empty strings, or token arrays.",
            param="input",
            code="invalid_value",
        )


def _deployments_for(key: KeyEntry, tenant: TenantEntry, model: str) -> list[Deployment]:
    deployments = tenant.models.get(model)
    if not deployments or not key.may_use(model):
        raise errors.model_not_found(model)
    return deployments


def _headers(response: HttpResponse, request_id: str, deployment: Deployment | None, extra: dict | None) -> None:
    response["x-request-id"] = request_id
    if deployment is not None:
        response["x-gateway-model"] = f"{deployment.provider_name}/{deployment.upstream_model}"
    if extra:
        for name, value in extra.items():
            response[name] = value


class CallRecord:
    """What the call log row will say; filled in as the request goes."""

    __slots__ = (
        "at",
        "attempts",
        "completion_tokens",
        "content_bytes",
        "content_events",
        "deployment",
        "disconnected",
        "endpoint",
        "error_message",
        "error_type",
        "key",
        "model",
        "prompt_estimate",
        "prompt_tokens",
        "request_id",
        "reservation",
        "started",
        "status",
        "stream",
        "tags",
        "tenant",
        "total_tokens",
        "ttfb",
        "usage",
        "user",
    )

    def __init__(self, request_id: str, endpoint: str, started: float) -> None:
        self.request_id = request_id
        self.endpoint = endpoint
        self.started = started
        # One wall-clock instant per call: the log's time, its ledger day and its budget period all
        # come from it, so a call that spans midnight is booked to the same day everywhere.
        self.at = datetime.now(UTC)
        self.key: KeyEntry | None = None
        self.tenant: TenantEntry | None = None
        self.model = ""
        self.deployment: Deployment | None = None
        self.stream = False
        self.status = 0
        self.ttfb: float | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.total_tokens: int | None = None
        self.usage: dict | None = None
        self.error_type = ""
        self.error_message = ""
        self.user = ""
        self.tags: list[str] = []
        self.disconnected = False
        self.attempts: list[dict] = []
        self.reservation: Any = None
        self.prompt_estimate = 0
        self.content_events = 0
        self.content_bytes = 0

    def set_usage(self, usage: dict | None) -> None:
        if not usage:
            return
        self.usage = usage
        self.prompt_tokens = _int(usage.get("prompt_tokens"))
        self.completion_tokens = _int(usage.get("completion_tokens"))
        self.total_tokens = _int(usage.get("total_tokens"))

    def _cost(self) -> tuple[int | None, bool, int]:
        """(cost in picodollars or None if unpriced, estimated?, tokens) of this call."""
        dep = self.deployment
        if dep is None or self.status == 0:
            return None, False, 0
        if self.prompt_tokens is not None:
            prompt, completion = self.prompt_tokens, self.completion_tokens or 0
            details = (self.usage or {}).get("prompt_tokens_details") or {}
            cached = _int(details.get("cached_tokens")) or 0
            written = _int(details.get("cache_write_tokens")) or 0
            estimated = False
        elif self.status >= 400 and not self.disconnected:
            return (0 if dep.price is not None else None), False, 0  # refused calls are not billed
        else:
            # No usage reported (or the client left mid-stream): estimate on the high side. A chunk may
            # carry several tokens, so take the larger of one per event and one per 3 content bytes.
            completion = max(self.content_events, -(-self.content_bytes // 3))
            prompt, cached, written = self.prompt_estimate, 0, 0
            estimated = True
        if dep.price is None:
            return None, estimated, prompt + completion
        return to_pico(dep.price.cost(prompt, completion, cached, written)), estimated, prompt + completion

    def finish(self) -> None:
        if self.key is None:
            return  # unauthenticated requests belong to no tenant
        now = time.perf_counter()
        dep = self.deployment
        created = self.at
        tz = self.tenant.tz if self.tenant is not None and self.tenant.tz is not None else UTC
        cost, estimated, tokens = self._cost()
        buffer.add(
            {
                "created_at": created,
                "tenant_id": self.key.tenant_id,
                "virtual_key_id": self.key.key_id,
                "request_id": self.request_id,
                "endpoint": self.endpoint,
                "requested_model": self.model[:200],
                "deployment_id": dep.id if dep else None,
                "provider": dep.provider_name if dep else "",
                "upstream_model": dep.upstream_model if dep else "",
                "stream": self.stream,
                "status_code": self.status,
                "latency_ms": round((now - self.started) * 1000, 3),
                "ttfb_ms": round((self.ttfb - self.started) * 1000, 3) if self.ttfb else None,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "error_type": self.error_type[:100],
                "error_message": self.error_message[:2000],
                "end_user": self.user[:200],
                "client_disconnected": self.disconnected,
                "attempts": self.attempts,
                "cost_picodollars": cost,
                "cost_estimated": estimated,
                "tags": self.tags,
                "day": created.astimezone(tz).date(),
            }
        )
        if self.reservation is not None:
            # Settle after the answer is out: the client never waits for this round trip.
            spawn(money.settle(self.reservation, tokens, pico_to_nanos_ceil(cost or 0)))
            self.reservation = None


MAX_TOKENS_REPORTED = 2**31 - 1


def _int(value: Any) -> int | None:
    # An upstream may report anything: an absurd count would fail the call log insert, so it is
    # treated as "no usage reported" (and the cost is estimated) instead.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS_REPORTED:
        return value
    return None


def _internal_error(exc: Exception) -> ProxyError:
    return ProxyError(
        503,
        "The gateway could not serve this request right now; retry shortly.",
        type="server_error",
        code="gateway_unavailable",
        headers={"retry-after": "1"},
    )


def _error_response(record: CallRecord, exc: ProxyError) -> HttpResponse:
    record.status = exc.status
    record.error_type = exc.code or exc.type
    record.error_message = exc.message
    response = exc.response()
    _headers(response, record.request_id, record.deployment, None)
    record.finish()
    return response


def _tags(request: HttpRequest, key: KeyEntry) -> list[str]:
    tags = [t.strip()[:100] for t in key.tags if t.strip()]
    header = request.META.get("HTTP_X_GATEWAY_TAGS", "")
    if header:
        for tag in header.split(","):
            tag = tag.strip()[:100]
            if tag and tag not in tags:
                tags.append(tag)
    return tags[:20]


async def _proxy(request: HttpRequest, endpoint: str) -> HttpResponse:
    ensure_background()
    record = CallRecord(_request_id(request), endpoint, time.perf_counter())
    limit_headers: dict[str, str] = {}
    try:
        if request.method != "POST":
            raise ProxyError(405, f"Method {request.method} is not allowed on /v1/{endpoint}; use POST.")
        record.key = key = await _authenticate(request)
        record.tenant = tenant = await _tenant(key)
        payload = _parse_body(request)
        record.model = model = _require_model(payload)
        if endpoint == "chat/completions":
            _validate_chat(payload)
        else:
            _validate_embeddings(payload)
        user = payload.get("user")
        if isinstance(user, str):
            record.user = user
        record.tags = _tags(request, key)
        deployment = pick_deployment(_deployments_for(key, tenant, model), payload)
        record.deployment = deployment
        if deployment.blocked:
            raise ProxyError(
                502, f"Upstream refused: {deployment.blocked}", type="upstream_error", code="upstream_blocked"
            )
        body = request.body
        record.prompt_estimate = len(body) // 3 + 1
        record.reservation, limit_headers = await money.admit(record, key, tenant, deployment, payload, body)
    except ProxyError as exc:
        exc.headers = {**limit_headers, **exc.headers}
        return _error_response(record, exc)
    except Exception as exc:
        # A database or Redis failure while loading config must still answer in OpenAI's format.
        logger.exception("request setup failed")
        return _error_response(record, _internal_error(exc))

    stream = endpoint == "chat/completions" and payload.get("stream") is True
    options = payload.get("stream_options") if stream else None
    ctx = CallContext(
        request_id=record.request_id,
        endpoint=endpoint,
        stream=stream,
        client_wants_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        started=record.started,
    )
    record.stream = stream
    adapter = adapter_for(deployment.kind)
    attempt_started = time.perf_counter()
    try:
        result = await (adapter.open_stream if stream else adapter.send)(deployment, payload, ctx)
    except asyncio.CancelledError:
        record.status = 499
        record.error_type = "client_disconnected"
        record.disconnected = True
        record.finish()
        raise
    except Exception as exc:  # a bug in an adapter must not become an HTML 500
        logger.exception("adapter %s failed", deployment.kind)
        result = UpstreamResult(
            status=500,
            body=errors.error_body("The gateway failed to call the upstream provider.", type="server_error"),
            error_type="gateway_error",
            error_message=f"{type(exc).__name__}: {exc}"[:1000],
        )
    record.attempts.append(
        {
            "deployment": deployment.id,
            "status": result.status,
            "latency_ms": round((time.perf_counter() - attempt_started) * 1000, 3),
            "error": result.error_type,
        }
    )
    if isinstance(result, UpstreamStream):
        return _stream_response(record, result, limit_headers)
    record.ttfb = time.perf_counter()
    record.status = result.status
    record.set_usage(result.usage)
    if record.prompt_tokens is None and result.status < 400:
        record.content_events = len(result.body) // 4 + 1
    record.error_type = result.error_type
    record.error_message = result.error_message
    response = HttpResponse(result.body, status=result.status, content_type=result.content_type)
    _headers(response, record.request_id, deployment, {**limit_headers, **result.headers})
    record.finish()
    return response


def _stream_response(record: CallRecord, upstream: UpstreamStream, limit_headers: dict[str, str]) -> HttpResponse:
    record.status = 200
    closed = False

    async def close(disconnected: bool = False) -> None:
        """Close the upstream, settle and log: once, whether the relay ran, failed or never started."""
        nonlocal closed
        if closed:
            return
        closed = True
        if disconnected:
            record.disconnected = True
            record.error_type = record.error_type or "client_disconnected"
        try:
            await upstream.aclose()
        finally:
            record.set_usage(upstream.usage)
            if upstream.error_type and not record.error_type:
                record.error_type = upstream.error_type
                record.error_message = upstream.error_message
            record.finish()

    async def relay() -> AsyncIterator[bytes]:
        disconnected = False
        try:
            async for event in upstream:
                if record.ttfb is None:
                    record.ttfb = time.perf_counter()
                # What was generated, for the estimate if the usage chunk never comes.
                record.content_events += 1
                start = event.find(b'"content":"')
                if start >= 0:
                    end = event.find(b'"', start + 11)
                    record.content_bytes += max(end - start - 11, 0)
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            disconnected = True
            raise
        except Exception as exc:
            logger.exception("stream relay failed")
            record.error_type = "gateway_error"
            record.error_message = f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            await close(disconnected)

    gen = relay()
    response = StreamingHttpResponse(gen, content_type="text/event-stream")
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"
    _headers(response, record.request_id, record.deployment, {**limit_headers, **upstream.headers})
    # ProxyHandler iterates (and closes) this generator itself, so a disconnect closes it at once;
    # if the generator never starts (the client left before the first byte), it calls close().
    response.gateway_stream = gen  # type: ignore[attr-defined]
    response.gateway_close = close  # type: ignore[attr-defined]
    return response


async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await _proxy(request, "chat/completions")


async def embeddings(request: HttpRequest) -> HttpResponse:
    return await _proxy(request, "embeddings")


def _model_object(name: str, tenant: TenantEntry) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": tenant.slug}


async def models(request: HttpRequest, model: str | None = None) -> HttpResponse:
    ensure_background()
    request_id = _request_id(request)
    try:
        if request.method != "GET":
            raise ProxyError(405, f"Method {request.method} is not allowed here; use GET.")
        key = await _authenticate(request)
        tenant = await _tenant(key)
        if model is not None:
            if model not in tenant.models or not key.may_use(model):
                raise errors.model_not_found(model)
            body: dict[str, Any] = _model_object(model, tenant)
        else:
            names = sorted(n for n in tenant.models if key.may_use(n))
            body = {"object": "list", "data": [_model_object(n, tenant) for n in names]}
    except ProxyError as exc:
        response = exc.response()
    except Exception as exc:
        logger.exception("listing models failed")
        response = _internal_error(exc).response()
    else:
        response = HttpResponse(orjson.dumps(body), content_type="application/json")
    response["x-request-id"] = request_id
    return response


async def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    exc = ProxyError(404, f"Unknown endpoint: {request.method} {request.path}", code="unknown_url")
    response = exc.response()
    response["x-request-id"] = _request_id(request)
    return response
