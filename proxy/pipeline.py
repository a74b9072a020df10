"""The proxy's request pipeline, in the fixed order every call goes through:

authenticate -> parse and validate -> route (rules, split, strategy, fallbacks) -> admit (limits,
budget reservation) -> attempt loop -> relay the answer -> settle and log.

Each phase is a small function in its own module (inbound.openai, router, money, attempts, call);
this module only orders them and turns the outcome into a response. Later steps (PII, prompt cache,
the Anthropic front end) plug in here without the phases growing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.common.redact import redact_bytes, secrets_of
from proxy import errors, money, router
from proxy.attempts import run
from proxy.call import Call
from proxy.errors import ProxyError
from proxy.health import health
from proxy.inbound import openai as inbound
from proxy.providers.base import CallContext, UpstreamStream
from proxy.state import state
from proxy.steps import StreamFilter, apply_filters
from proxy.steps import cache as prompt_cache
from proxy.steps.pii import with_key_policy

logger = logging.getLogger("gateway.proxy")

_started = False


def ensure_background() -> None:
    """Start this process's invalidation listener, health sync and log flusher (first request, or lifespan)."""
    global _started
    if not _started:
        from observability.logbuffer import buffer

        state.start()
        health.start()
        buffer.start()
        _started = True


def internal_error() -> ProxyError:
    return ProxyError(
        503,
        "The gateway could not serve this request right now; retry shortly.",
        type="server_error",
        code="gateway_unavailable",
        headers={"retry-after": "1"},
    )


def _error_response(call: Call, exc: ProxyError, front: Any) -> HttpResponse:
    call.status = exc.status
    call.error_type = exc.code or exc.type
    call.error_message = exc.message
    response = front.error_response(exc)
    inbound.set_headers(response, call.request_id, call.deployment, None)
    mark_overhead(call, response)
    call.finish()
    return response


def mark_overhead(call: Call, response: HttpResponse) -> None:
    """x-gateway-overhead-ms: the time spent in the gateway so far, the upstream attempts' time excluded
    (for a stream, what is known when its headers go out). Logged with the call for /metrics."""
    upstream_ms = sum(attempt["latency_ms"] for attempt in call.attempts)
    call.overhead_ms = overhead = round(max((time.perf_counter() - call.started) * 1000 - upstream_ms, 0.0), 3)
    response["x-gateway-overhead-ms"] = f"{overhead:.3f}"


def _gateway_headers(call: Call) -> dict[str, str]:
    headers = {"x-gateway-attempts": str(len(call.attempts))}
    if call.cache_status:
        headers["x-gateway-cache"] = call.cache_status
    if call.fallback:
        headers["x-gateway-fallback"] = call.fallback
    return headers


async def handle(
    request: HttpRequest, endpoint: str, front: Any = inbound.OPENAI, label: str | None = None
) -> HttpResponse:
    """Serve one call. `front` is the wire format the client speaks (proxy.inbound): it reads the
    credential and the body (as an OpenAI-format payload) and writes answers, stream events and
    errors back in that format; everything between works in OpenAI's format."""
    ensure_background()
    # `label` names the endpoint the client called in the call log (e.g. "messages" for Anthropic's
    # format, served as chat/completions inside).
    call = Call(inbound.request_id(request), label or endpoint, time.perf_counter())
    call.traceparent = request.META.get("HTTP_TRACEPARENT", "")[:64]  # for the trace built after the fact
    limit_headers: dict[str, str] = {}
    try:
        if request.method != "POST":
            raise ProxyError(405, f"Method {request.method} is not allowed on /v1/{endpoint}; use POST.")
        call.key = key = await inbound.authenticate_secret(front.credential(request))
        call.tenant = tenant = await inbound.tenant_of(key)
        # A front end whose format an upstream kind also speaks (Anthropic's) keeps the client's own
        # body, for relaying to that kind; the OpenAI front's payload is already the body it relays.
        native_kind = getattr(front, "native_kind", "")
        if native_kind:
            payload, native = front.parse_native(request, endpoint)
        else:
            payload, native = front.parse(request, endpoint), None
        call.model = model = payload["model"]
        user = payload.get("user")
        if isinstance(user, str):
            call.user = user
        call.tags = inbound.tags(request, key)
        no_fallback = inbound.no_fallback(request)
        timeout = inbound.timeout_header(request)
        call.cache_headers = inbound.cache_headers(request)
        # The tenant's policy steps; a request may turn the prompt cache on for itself (x-gateway-cache).
        steps = prompt_cache.with_request_cache(tenant.steps, call.cache_headers)
        if key.pii_override:
            steps = with_key_policy(steps, key.pii_step)  # the key's own pii policy replaces the tenant's
        if model not in tenant.routes or not key.may_use(model):
            raise errors.model_not_found(model)
        body = request.body
        call.prompt_estimate = len(body) // 3 + 1
        for step in steps:
            reply = await step.on_request(call, payload)
            if reply is not None:
                return _reply(call, front.render(call, reply))
        plan = router.plan(
            tenant, key, model, user=call.user, tags=call.tags, prompt_bytes=len(body), no_fallback=no_fallback
        )
        call.variant = plan.variant or ""
        if plan.model != model:
            call.route = plan.model
        call.deployment = first = plan.first
        if first is None:
            raise errors.model_not_found(model)
        call.reservation, limit_headers = await money.admit(
            call, key, tenant, first, payload, body, plan.prices(), deployment_limits=not plan.per_attempt_limits
        )
    except ProxyError as exc:
        exc.headers = {**limit_headers, **exc.headers}
        return _error_response(call, exc, front)
    except Exception:
        # A database or Redis failure while loading config must still answer in OpenAI's format.
        logger.exception("request setup failed")
        return _error_response(call, internal_error(), front)

    stream = endpoint == "chat/completions" and payload.get("stream") is True
    options = payload.get("stream_options") if stream else None
    ctx = CallContext(
        request_id=call.request_id,
        endpoint=endpoint,
        stream=stream,
        client_wants_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        started=call.started,
    )
    if native_kind and not steps:
        # Policy steps read and rewrite the OpenAI-format payload and answers: with any, translate
        # both ways so that they see (and govern) everything; without, relay to same-format upstreams.
        ctx.native = native
        ctx.native_kind = native_kind
    call.stream = stream
    timeout_s = plan.timeout_s if timeout is None else min(plan.timeout_s, timeout)
    try:
        if call.cache is not None and call.cache.hit is not None:
            # Answered from the prompt cache (found during admission): relayed below like an upstream's.
            result = call.cache.replay(call, stream, ctx.client_wants_usage)
        else:
            result = await run(call, plan, payload, ctx, call.started + timeout_s)
    except asyncio.CancelledError:
        call.status = 499
        call.error_type = "client_disconnected"
        call.disconnected = True
        call.finish()
        raise
    if isinstance(result, UpstreamStream):
        # Answers pass the steps in reverse order: the last to rewrite the request (the cache, after PII)
        # is the first to see the answer, so it stores what the upstream sent, before any restore.
        filters = [f for step in reversed(steps) if (f := step.stream_filter(call)) is not None]
        # A relayed stream (result.native) is already in the client's format.
        if not result.native and (translate := front.stream_filter(call)) is not None:
            filters.append(translate)
        return _stream_response(call, result, {**limit_headers, **_gateway_headers(call)}, filters)
    deployment = call.deployment
    if result.status >= 400 and deployment is not None:
        # A provider may quote the deployment's own key in its error: never relay it. (The stored
        # error_message is scrubbed once, in Call.finish, with every other way a call can end.)
        result.body = redact_bytes(result.body, secrets_of(deployment))
    call.ttfb = time.perf_counter()
    call.status = result.status
    call.set_usage(result.usage)
    if call.prompt_tokens is None and result.status < 400:
        call.content_events = len(result.body) // 4 + 1
    call.error_type = result.error_type
    call.error_message = result.error_message
    if result.native:
        pass  # relayed from a same-format upstream: already what the client expects, answer or error
    elif result.status < 400:
        for step in reversed(steps):
            result.body = step.on_response(call, result.body)
        result.body = front.render(call, result.body)
    else:
        result.body = front.render_upstream_error(call, result.status, result.body)
    response = HttpResponse(result.body, status=result.status, content_type=result.content_type)
    inbound.set_headers(
        response, call.request_id, deployment, {**limit_headers, **result.headers, **_gateway_headers(call)}
    )
    mark_overhead(call, response)
    call.finish()
    return response


def _reply(call: Call, body: bytes) -> HttpResponse:
    """A step answered the call itself (a cache hit, a block): no provider was called."""
    call.status = 200
    call.ttfb = time.perf_counter()
    response = HttpResponse(body, content_type="application/json")
    inbound.set_headers(response, call.request_id, None, {"x-gateway-attempts": "0"})
    mark_overhead(call, response)
    call.finish()
    return response


def _stream_response(
    call: Call, upstream: UpstreamStream, headers: dict[str, str], filters: list[StreamFilter]
) -> HttpResponse:
    call.status = 200
    closed = False

    async def close(disconnected: bool = False) -> None:
        """Close the upstream, settle and log: once, whether the relay ran, failed or never started."""
        nonlocal closed
        if closed:
            return
        closed = True
        if disconnected:
            call.disconnected = True
            call.error_type = call.error_type or "client_disconnected"
        try:
            await upstream.aclose()
        finally:
            call.set_usage(upstream.usage)
            if upstream.error_type and not call.error_type:
                # The client saw a 200 and then an error event: the log records the failure.
                call.status = 502
                call.error_type = upstream.error_type
                call.error_message = upstream.error_message
            if call.cache is not None:
                call.cache.stream_ended(call, upstream)  # stores a stream that ended cleanly
            call.finish()

    async def relay() -> AsyncIterator[bytes]:
        disconnected = False
        try:
            async for event in upstream:
                if call.ttfb is None:
                    call.ttfb = time.perf_counter()
                # What was generated, for the estimate if the usage chunk never comes.
                call.content_events += 1
                start = event.find(b'"content":"')
                if start >= 0:
                    end = event.find(b'"', start + 11)
                    call.content_bytes += max(end - start - 11, 0)
                if not filters:
                    yield event
                    continue
                for out in apply_filters(filters, event):
                    yield out
        except (asyncio.CancelledError, GeneratorExit):
            disconnected = True
            raise
        except Exception as exc:
            logger.exception("stream relay failed")
            call.error_type = "gateway_error"
            call.error_message = f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            await close(disconnected)

    gen = relay()
    response = StreamingHttpResponse(gen, content_type="text/event-stream")
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"
    inbound.set_headers(response, call.request_id, call.deployment, {**headers, **upstream.headers})
    mark_overhead(call, response)
    # ProxyHandler iterates (and closes) this generator itself, so a disconnect closes it at once;
    # if the generator never starts (the client left before the first byte), it calls close().
    response.gateway_stream = gen  # type: ignore[attr-defined]
    response.gateway_close = close  # type: ignore[attr-defined]
    return response


def models_response(body: dict) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), content_type="application/json")
