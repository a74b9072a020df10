"""The proxy's request pipeline, in the fixed order every call goes through:

authenticate -> parse and validate -> policy steps (PII, body log, prompt cache) -> route (rules,
split, strategy, fallbacks) -> admit (limits, budget reservation, cache lookup) -> attempt loop ->
the steps' answer side -> the front end renders -> settle and log (Call.finish).

Each phase is a small function in its own module (inbound, router, admission, attempts, steps,
relay, call); `handle` only orders them and turns the outcome into a response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from gateway_project.common.redact import redact_bytes, secrets_of
from proxy import errors, router
from proxy.attempts import admit_planned, run
from proxy.call import Call
from proxy.errors import ProxyError, internal_error
from proxy.inbound import Front
from proxy.inbound import openai as inbound
from proxy.lifecycle import ensure_background
from proxy.providers.base import CallContext, UpstreamResult, UpstreamStream
from proxy.relay import GatewayStreamResponse
from proxy.router import Plan
from proxy.steps import cache as prompt_cache
from proxy.steps.guardrails import GuardrailStep, guard_for, with_key_guardrails
from proxy.steps.pii import with_key_policy

logger = logging.getLogger("gateway.proxy")


def _error_response(call: Call, exc: ProxyError, front: Front) -> HttpResponse:
    call.status = exc.status
    call.error_type = exc.code or exc.type
    call.error_message = exc.message
    response = front.error_response(exc)
    inbound.set_headers(response, call.request_id, call.deployment, {"x-gateway-call-id": call.call_id})
    mark_overhead(call, response)
    call.finish()
    return response


def mark_overhead(call: Call, response: HttpResponseBase) -> None:
    """x-gateway-overhead-ms: the time spent in the gateway so far, the upstream attempts' time excluded
    (for a stream, what is known when its headers go out). Logged with the call for /metrics."""
    upstream_ms = sum(attempt["latency_ms"] for attempt in call.attempts)
    call.overhead_ms = overhead = round(max((time.perf_counter() - call.started) * 1000 - upstream_ms, 0.0), 3)
    response["x-gateway-overhead-ms"] = f"{overhead:.3f}"


def _gateway_headers(call: Call) -> dict[str, str]:
    headers = {"x-gateway-attempts": str(len(call.attempts)), "x-gateway-call-id": call.call_id}
    if call.cache_status:
        headers["x-gateway-cache"] = call.cache_status
    if call.fallback:
        headers["x-gateway-fallback"] = call.fallback
    return headers


@dataclass(slots=True)
class Admitted:
    """What the phases before the attempt loop decided: the request, the route plan, the policy steps
    that apply, the upstream call's context and deadline, and the limit headers to answer with."""

    payload: dict[str, Any]
    plan: Plan
    steps: tuple
    ctx: CallContext
    deadline: float
    limit_headers: dict[str, str]
    # The guardrails step when one applies: it has work between the upstream's answer and the answer side.
    guard: GuardrailStep | None = None


async def handle(request: HttpRequest, endpoint: str, front: Front = inbound.OPENAI, label: str | None = None) -> Any:
    """Serve one call. `front` is the wire format the client speaks (proxy.inbound): it reads the
    credential and the body (as an OpenAI-format payload) and writes answers, stream events and
    errors back in that format; everything between works in OpenAI's format. `label` names the
    endpoint the client called in the call log ("messages" for Anthropic's format, served as
    chat/completions inside)."""
    ensure_background()
    call = Call(inbound.request_id(request), label or endpoint, time.perf_counter())
    call.traceparent = request.META.get("HTTP_TRACEPARENT", "")[:64]  # for the trace built after the fact
    try:
        admitted = await _admit(call, request, endpoint, front)
    except ProxyError as exc:
        return _error_response(call, exc, front)
    except Exception:
        # A database or Redis failure while loading config must still answer in the client's format.
        logger.exception("request setup failed")
        return _error_response(call, internal_error(), front)
    if isinstance(admitted, bytes):
        return _reply(call, front.render(call, admitted))  # a policy step answered (a cache hit, a block)
    try:
        result = await _attempt(call, admitted)
        if admitted.guard is not None:
            result = await _guarded(call, result, admitted, admitted.guard)
    except asyncio.CancelledError:
        call.status = 499
        call.error_type = "client_disconnected"
        call.disconnected = True
        call.finish()
        raise
    if isinstance(result, UpstreamStream):
        return _stream_response(call, result, admitted, front)
    return _answer(call, result, admitted, front)


async def _admit(call: Call, request: HttpRequest, endpoint: str, front: Front) -> Admitted | bytes:
    """Authenticate, parse, run the policy steps' request side, plan the route and admit the call
    (limits, budget reservation, the prompt cache lookup). Bytes when a step answered the call itself."""
    if request.method != "POST":
        raise ProxyError(405, f"Method {request.method} is not allowed on /v1/{endpoint}; use POST.")
    call.key = key = await inbound.authenticate_secret(front.credential(request))
    call.tenant = tenant = await inbound.tenant_of(key)
    # A front end whose format an upstream kind also speaks (Anthropic's) keeps the client's own body,
    # for relaying to that kind; the OpenAI front's payload is already the body it relays.
    if front.native_kind:
        payload, native = front.parse_native(request, endpoint)
    else:
        payload, native = front.parse(request, endpoint), None
    if front.stateful:
        await front.prepare(call, payload)
    call.model = model = payload["model"]
    call.payload = payload
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
    if key.guardrails_override:
        steps = with_key_guardrails(steps, key.guardrail_step)
    if model not in tenant.routes or not key.may_use(model):
        raise errors.model_not_found(model)
    body = request.body
    call.prompt_estimate = len(body) // 3 + 1
    for step in steps:
        reply = await step.on_request(call, payload)
        if reply is not None:
            return reply
    plan = router.plan(
        tenant, key, model, user=call.user, tags=call.tags, prompt_bytes=len(body), no_fallback=no_fallback
    )
    if front.native_kind:
        front.check_plan(call, plan, native is not None and not steps)
    call.variant = plan.variant or ""
    if plan.model != model:
        call.route = plan.model
    timeout_s = plan.timeout_s if timeout is None else min(plan.timeout_s, timeout)
    limit_headers = await admit_planned(call, plan, payload, body, hold_s=timeout_s)
    stream = endpoint == "chat/completions" and payload.get("stream") is True
    options = payload.get("stream_options") if stream else None
    ctx = CallContext(
        request_id=call.request_id,
        endpoint=endpoint,
        stream=stream,
        client_wants_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        started=call.started,
    )
    if native is not None and not steps:
        # Policy steps read and rewrite the OpenAI-format payload and answers: with any, translate
        # both ways so that they see (and govern) everything; without, relay to same-format upstreams.
        ctx.native = native
        ctx.native_kind = front.native_kind
    call.stream = stream
    return Admitted(payload, plan, steps, ctx, call.started + timeout_s, limit_headers, guard_for(key, tenant))


async def _attempt(call: Call, admitted: Admitted) -> UpstreamResult | UpstreamStream:
    """The answer: from the prompt cache when admission found it there, else from the attempt loop
    (retries, fallbacks, breakers, the deadline)."""
    if call.cache is not None and call.cache.hit is not None:
        return call.cache.replay(call, admitted.ctx.stream, admitted.ctx.client_wants_usage)
    return await run(call, admitted.plan, admitted.payload, admitted.ctx, admitted.deadline)


async def _guarded(
    call: Call, result: UpstreamResult | UpstreamStream, admitted: Admitted, guard: GuardrailStep
) -> UpstreamResult | UpstreamStream:
    """The guardrails' work once the upstream answered: checks that ran beside it are settled; a complete
    answer that misses the JSON schema the request asked for is asked for once more, with the validation
    errors (output_schema; both answers are billed); the model-calling output checks read the answer."""
    if isinstance(result, UpstreamResult) and _complete(result):
        if (retry := guard.schema_retry(call, result.body)) is not None:
            first = result.usage
            result = await run(call, admitted.plan, retry, admitted.ctx, admitted.deadline)
            if isinstance(result, UpstreamResult):
                result.usage = _summed(first, result.usage)
    body = result.body if isinstance(result, UpstreamResult) and _complete(result) else None
    await guard.after_upstream(call, body)
    return result


def _complete(result: UpstreamResult) -> bool:
    """An answer the steps read (not an error, not relayed in the client's own format)."""
    return result.status < 400 and not result.native


def _summed(first: dict | None, second: dict | None) -> dict | None:
    """Two answers' usage as one call's: the token counts added."""
    if not first or not second:
        return second or first
    total = dict(second)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        a, b = first.get(name), second.get(name)
        if isinstance(a, int) and isinstance(b, int):
            total[name] = a + b
    return total


def _answer(call: Call, result: UpstreamResult, admitted: Admitted, front: Front) -> HttpResponse:
    """A complete answer (or a failed attempt's error): the steps' response side, then the front end."""
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
        # Relayed from a same-format upstream: already what the client expects, answer or error.
        if result.status < 400:
            result.body = front.render_native(call, result.body)
    elif result.status < 400:
        # Answers pass the steps in reverse order: the last to rewrite the request (the cache, after
        # PII) is the first to see the answer, so it stores what the upstream sent, before any restore.
        try:
            for step in reversed(admitted.steps):
                result.body = step.on_response(call, result.body)
        except ProxyError as exc:
            # An output guardrail refused the answer: the client gets the error in its format (the call is
            # still billed for what the provider produced, from the usage already taken).
            call.status = result.status = exc.status
            call.error_type, call.error_message = exc.code or exc.type, exc.message
            result.body = front.render_upstream_error(call, exc.status, exc.body())
        else:
            result.body = front.render(call, result.body)
    else:
        result.body = front.render_upstream_error(call, result.status, result.body)
    response = HttpResponse(result.body, status=result.status, content_type=result.content_type)
    inbound.set_headers(
        response, call.request_id, deployment, {**admitted.limit_headers, **result.headers, **_gateway_headers(call)}
    )
    mark_overhead(call, response)
    call.finish()
    return response


def _reply(call: Call, body: bytes) -> HttpResponse:
    """A step answered the call itself (a cache hit, a block): no provider was called."""
    call.status = 200
    call.ttfb = time.perf_counter()
    response = HttpResponse(body, content_type="application/json")
    inbound.set_headers(response, call.request_id, None, {"x-gateway-attempts": "0", "x-gateway-call-id": call.call_id})
    mark_overhead(call, response)
    call.finish()
    return response


def _stream_response(call: Call, upstream: UpstreamStream, admitted: Admitted, front: Front) -> GatewayStreamResponse:
    # Events pass the steps in reverse order, like complete answers (see _answer).
    filters = [f for step in reversed(admitted.steps) if (f := step.stream_filter(call)) is not None]
    # A relayed stream (upstream.native) is already in the client's format.
    if not upstream.native and (translate := front.stream_filter(call)) is not None:
        filters.append(translate)
    elif upstream.native and (observe := front.native_stream_filter(call)) is not None:
        filters.append(observe)
    response = GatewayStreamResponse(call, upstream, filters, admitted.deadline)
    headers = {**admitted.limit_headers, **_gateway_headers(call), **upstream.headers}
    inbound.set_headers(response, call.request_id, call.deployment, headers)
    mark_overhead(call, response)
    return response


def models_response(body: dict) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), content_type="application/json")
