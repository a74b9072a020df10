"""The attempt loop: try a plan's deployments until one answers, within one deadline.

For each deployment in the plan's order (the model's, then its fallbacks'): skip it while its
breaker is open; call it; on a retryable error retry it (exponential backoff with jitter, or the
provider's Retry-After when that fits the deadline, else move on at once); on a context-length
error go straight to the context-window fallbacks. A stream counts as answered only once its first
event has arrived, so a stream that fails before its first byte fails over like any other call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator

import orjson
from django.conf import settings

from proxy import admission, errors
from proxy.breakers import health
from proxy.call import Call
from proxy.errors import ProxyError
from proxy.providers import adapter_for
from proxy.providers.base import CallContext, ErrorKind, UpstreamResult, UpstreamStream, failure
from proxy.router import Group, Plan
from proxy.snapshot import Deployment

logger = logging.getLogger("gateway.attempts")

MAX_JSON_DEPTH = 254  # orjson's encoding limit
MAX_BACKOFF = 8.0


# Worth another try on the same deployment, and counted by its breaker.
RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.UNREACHABLE}
)
# The request's own fault: answer at once, whatever deployments are left.
FINAL = frozenset({ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_POLICY})


async def admit_planned(call: Call, plan: Plan, payload: dict, body: bytes, *, hold_s: float) -> dict[str, str]:
    """Admit an authenticated call under its route plan (admission.admit): at the plan's first deployment, a hard
    budget reserving the worst price the call may fall back to, with the prompt cache's lookup when the call
    has one. Sets call.deployment and call.reservation; returns the limit headers."""
    key, tenant = call.key, call.tenant
    assert key is not None and tenant is not None
    call.deployment = first = plan.first
    if first is None:
        raise errors.model_not_found(call.model)
    call.reservation, limit_headers = await admission.admit(
        key=key,
        tenant=tenant,
        deployment=first,
        payload=payload,
        body=body,
        endpoint=call.endpoint,
        user=call.user,
        tags=call.tags,
        prompt_estimate=call.prompt_estimate,
        now=call.at,
        prices=plan.prices(),
        deployment_limits=not plan.per_attempt_limits,
        cache=call.cache,
        cache_key=call.cache.lookup_key(call) if call.cache is not None else "",
        hold_s=hold_s,
        unpriced=plan.unpriced,
    )
    return limit_headers


def retry_after(result: UpstreamResult) -> float | None:
    """Seconds the provider asked us to wait (retry-after-ms, then retry-after), if any."""
    headers = result.headers
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            value = float(raw) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            value = float(raw)
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            return None  # an HTTP date: rare from LLM APIs; treat as no advice
    return None


def backoff(attempt: int, rng: random.Random = random._inst) -> float:
    base = settings.GATEWAY_RETRY_BACKOFF * (2**attempt)
    return min(base + rng.uniform(0, base), MAX_BACKOFF)


class PrimedStream(UpstreamStream):
    """A stream whose first event already arrived: it replays that event, then relays the rest."""

    def __init__(self, inner: UpstreamStream, events: AsyncIterator[bytes], first: bytes) -> None:
        self.inner = inner
        self._events = events
        self._first = first
        self.headers = inner.headers
        self.native = inner.native
        self.call: Call | None = None  # told the provider's stop reason when the stream closes

    @property
    def usage(self) -> dict | None:  # type: ignore[override]
        return self.inner.usage

    @property
    def error_type(self) -> str:  # type: ignore[override]
        return self.inner.error_type

    @property
    def error_message(self) -> str:  # type: ignore[override]
        return self.inner.error_message

    @property
    def finish_reason(self) -> str:  # type: ignore[override]
        return self.inner.finish_reason

    async def events(self) -> AsyncIterator[bytes]:
        yield self._first
        async for event in self._events:
            yield event

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            await self.inner.aclose()
            if self.call is not None and self.inner.finish_reason:
                self.call.finish_reason = self.inner.finish_reason


async def _prime(stream: UpstreamStream) -> UpstreamResult | PrimedStream:
    """Wait for the first event; a stream that fails or ends before it is a failed attempt."""
    events = stream.__aiter__()
    try:
        first = await anext(events, None)
    except BaseException:
        await stream.aclose()
        raise
    if first is None or stream.error_type:
        await stream.aclose()
        message = stream.error_message or "The upstream stream ended before its first event"
        return failure(502, message, stream.error_type or "upstream_stream_empty")
    return PrimedStream(stream, events, first)


async def _call(dep: Deployment, payload: dict, ctx: CallContext) -> UpstreamResult | UpstreamStream:
    adapter = adapter_for(dep.kind)
    try:
        if ctx.stream:
            result = await adapter.open_stream(dep, payload, ctx)
            if isinstance(result, UpstreamStream):
                return await _prime(result)
            return result
        return await adapter.send(dep, payload, ctx)
    except orjson.JSONEncodeError as exc:
        # orjson parses up to 1024 levels of nesting but encodes at most 254 (and refuses some
        # numbers): the body cannot be forwarded as it is, which is the client's error, not ours.
        reason = "it is nested too deeply" if "ecursion" in str(exc) else str(exc)
        result = failure(
            400,
            f"The request body cannot be forwarded: {reason} (JSON may nest at most {MAX_JSON_DEPTH} levels).",
            "invalid_json",
            "invalid_request_error",
        )
        result.error_message = f"JSONEncodeError: {exc}"
        return result


def _all_cooling(wait_s: float, rate_limited: bool) -> UpstreamResult:
    """Every deployment was skipped: resting after its provider's 429 (then a 429 saying for as long as
    the provider asked) or cooling down after failures (a 503: the provider is down, not busy)."""
    retry = str(max(1, math.ceil(wait_s)))
    if rate_limited:
        result = failure(
            429,
            f"Every deployment of this model is rate-limited by its provider; retry in {retry} s.",
            "deployments_rate_limited",
            "rate_limit_exceeded",
        )
    else:
        result = failure(
            503,
            f"Every deployment of this model is cooling down after recent failures; retry in {retry} s.",
            "deployments_cooling_down",
            "server_error",
        )
    result.headers = {"retry-after": retry}
    return result


async def run(  # noqa: C901
    call: Call, plan: Plan, payload: dict, ctx: CallContext, deadline: float
) -> UpstreamResult | UpstreamStream:
    """Try the plan; return the first success, or the last failure (with its status)."""
    last: UpstreamResult | None = None
    skipped_cooling = 0
    cooldown_s = 0.0
    only_rate_limited = True
    groups: list[Group] = plan.groups
    g = 0
    context_jumped = False
    while g < len(groups):
        group = groups[g]
        g += 1
        route = group.route
        for index, dep in enumerate(group.deployments):
            # Other deployments (or fallback models) left after this one: see the attempt limit below.
            others_left = index + 1 < len(group.deployments) or g < len(groups)
            if dep.blocked:
                call.deployment = dep
                last = failure(502, f"Upstream refused: {dep.blocked}", "upstream_blocked")
                call.add_attempt(dep, 502, 0.0, "upstream_blocked")
                continue
            if (dep.rpm or dep.tpm) and plan.per_attempt_limits:
                try:
                    tokens = call.prompt_estimate + (admission.requested_output(call.endpoint, payload) or 0)
                    reservation = await admission.admit_deployment(dep, tokens=tokens)
                except ProxyError as exc:
                    # At its own limit: the next deployment, without calling this one.
                    call.deployment = dep
                    last = failure(429, exc.message, "deployment_rate_limited", "rate_limit_exceeded")
                    last.headers = dict(exc.headers)
                    call.add_attempt(dep, 429, 0.0, "deployment_rate_limited")
                    continue
                if reservation is not None:
                    call.deployment_reservations.append((dep.id, reservation))
            # Asked right before sending: in half-open state this claims the one probe.
            if not health.available(dep.id):
                skipped_cooling += 1
                left, limited = health.resting(dep.id)
                # The client waits for the first deployment to come back, not the longest.
                cooldown_s = left if skipped_cooling == 1 else min(cooldown_s, left)
                only_rate_limited = only_rate_limited and limited
                continue
            kind = ErrorKind.NONE
            for attempt in range(1 + max(route.retries, 0)):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return last or failure(504, "The gateway's deadline for this request passed", "deadline_exceeded")
                call.deployment = dep
                started = time.perf_counter()
                # While another attempt could follow (a retry, another deployment, a fallback), one that
                # hangs may use at most half of what is left, so a hanging deployment cannot use up the
                # whole deadline before its fallbacks are tried. The last candidate gets all of it.
                limit = remaining / 2 if others_left or attempt < route.retries else remaining
                health.begin(dep.id)
                adapter_bug = False
                try:
                    async with asyncio.timeout(limit):
                        result = await _call(dep, payload, ctx)
                except TimeoutError:
                    if limit < remaining:
                        message = f"The upstream provider did not answer within {limit:.3g} s; trying the next"
                    else:
                        message = "The gateway's deadline for this request passed"
                    result = failure(504, message, "deadline_exceeded")
                    result.error_type = "upstream_timeout"
                except Exception as exc:  # a bug in an adapter must not become an HTML 500
                    logger.exception("adapter %s failed", dep.kind)
                    adapter_bug = True
                    result = UpstreamResult(
                        status=500,
                        body=errors.error_body(
                            "The gateway failed to call the upstream provider.", type="server_error"
                        ),
                        error_type="gateway_error",
                        error_message=f"{type(exc).__name__}: {exc}"[:1000],
                    )
                finally:
                    health.end(dep.id)
                elapsed = time.perf_counter() - started
                if adapter_bug:
                    call.add_attempt(dep, result.status, elapsed, result.error_type)
                    return result
                if isinstance(result, UpstreamStream):
                    call.add_attempt(dep, 200, elapsed, "")
                    if isinstance(result, PrimedStream):
                        result.call = call
                    health.success(dep.id, elapsed)
                    call.fallback = group.model if group.fallback else ""
                    return result
                call.add_attempt(dep, result.status, elapsed, result.error_type)
                kind = adapter_for(dep.kind).classify(result)
                if kind is ErrorKind.NONE:
                    call.finish_reason = result.finish_reason
                    health.success(dep.id, elapsed)
                    call.fallback = group.model if group.fallback else ""
                    return result
                last = result
                asked = retry_after(result) if kind is ErrorKind.RATE_LIMITED else None
                if asked is not None:
                    health.rest(dep.id, asked)  # as long as the provider asked, not the breaker's cooldown
                elif kind in RETRYABLE:
                    health.failure(dep.id, route.cooldown)
                else:
                    break
                if attempt == route.retries:
                    break
                wait = retry_after(result)
                if wait is None:
                    wait = backoff(attempt)
                if time.perf_counter() + wait >= deadline:
                    break  # the wait does not fit the deadline: the next deployment, at once
                await asyncio.sleep(wait)
            if kind in FINAL:
                return last  # type: ignore[return-value]
            if kind is ErrorKind.CONTEXT_WINDOW:
                if not context_jumped and plan.context_window:
                    # A bigger window, not another copy of the same one: no retry, no same-size fallback.
                    context_jumped = True
                    groups = plan.context_window
                    g = 0
                    break
                return last  # type: ignore[return-value]
    if last is None:
        return _all_cooling(cooldown_s or 1.0, only_rate_limited)
    if last.status == 429 and "retry-after" not in last.headers and cooldown_s:
        last.headers = {**last.headers, "retry-after": str(max(1, math.ceil(cooldown_s)))}
    return last
