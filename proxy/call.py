"""One `Call` per proxied request: everything the pipeline learns on the way, and the call log row.

The steps fill it in (key, tenant, model, decisions, attempts, usage, timings); `finish()` turns it into
one row for the log buffer and settles the budget reservation, once, whatever way the request ended.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

from gateway_project.common.ids import timed_id
from gateway_project.common.money import pico_to_nanos_ceil, to_pico
from gateway_project.common.redact import redact, secrets_of
from observability.logbuffer import buffer
from observability.text import storable
from proxy import admission
from proxy.background import spawn
from proxy.snapshot import Deployment, KeyEntry, TenantEntry
from proxy.tokens import chars_per_token, estimate_request_tokens

MAX_TOKENS_REPORTED = 2**31 - 1


def int_or_none(value: Any) -> int | None:
    # An upstream may report anything: an absurd count would fail the call log insert, so it is
    # treated as "no usage reported" (and the cost is estimated) instead.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS_REPORTED:
        return value
    return None


class CacheHeaders(NamedTuple):
    """The prompt cache's request headers (proxy.steps.cache)."""

    use: bool | None  # x-gateway-cache: true | false; None when absent (the tenant's policy decides)
    ttl_s: int | None  # x-gateway-cache-ttl: SECONDS
    no_cache: bool  # Cache-Control: no-cache (skip the lookup)
    no_store: bool  # Cache-Control: no-store (skip the write)


class Call:
    """What the call log row will say; filled in as the request goes."""

    __slots__ = (
        "at",
        "attempts",
        "bodies",
        "cache",
        "cache_headers",
        "cache_status",
        "call_id",
        "completion_tokens",
        "content_bytes",
        "content_events",
        "cost_saved",
        "deployment",
        "deployment_reservations",
        "disconnected",
        "endpoint",
        "error_message",
        "error_type",
        "fallback",
        "finish_reason",
        "finished",
        "guardrails",
        "key",
        "logged_user",
        "mcp",
        "model",
        "overhead_ms",
        "payload",
        "pii_actions",
        "prompt_estimate",
        "prompt_tokens",
        "request_id",
        "reservation",
        "route",
        "started",
        "status",
        "step_state",
        "stored",
        "stream",
        "tags",
        "tenant",
        "total_tokens",
        "traceparent",
        "ttfb",
        "usage",
        "user",
        "variant",
    )

    def __init__(self, request_id: str, endpoint: str, started: float) -> None:
        self.request_id = request_id
        # The gateway's own id of this call (x-gateway-call-id; client request ids may repeat): the
        # creation time in ms and 64 random bits, so that a score sent before the log row is stored
        # knows to wait for it (observability.scores).
        self.call_id = timed_id("call", 8)
        self.endpoint = endpoint
        self.started = started
        # One wall-clock instant per call: the log's time, its ledger day and its budget period all
        # come from it, so a call that spans midnight is booked to the same day everywhere.
        self.at = datetime.now(UTC)
        self.key: KeyEntry | None = None
        self.tenant: TenantEntry | None = None
        self.model = ""  # as the client asked for it
        self.variant = ""  # the other model of an A/B split, when this call was sent there
        self.fallback = ""  # the fallback model that served the call, if any
        self.route = ""  # the public model after rules and the A/B split, when not the one asked for
        self.cache_status = ""  # the exact cache: "hit", "miss", or "" when not consulted
        self.cost_saved: int | None = None  # picodollars a cache hit saved
        self.cache: Any = None  # proxy.steps.cache.CacheCall when the cache applies to this call
        self.cache_headers: CacheHeaders | None = None  # when the request sent any
        # Data-policy actions: {detector: {action: count}}; counts only, never the values.
        self.pii_actions: dict[str, dict[str, int]] | None = None
        # Guardrail verdicts by check name (proxy.steps.guardrails); never the text they read.
        self.guardrails: dict[str, dict[str, Any]] | None = None
        # What a policy step keeps between the request and the answer, by step (the PII step's pseudonyms).
        self.step_state: dict[str, Any] = {}
        self.deployment: Deployment | None = None  # the one that answered (or was tried last)
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
        self.logged_user = ""  # set when the data policy replaced the end-user id (proxy.steps.pii)
        self.tags: list[str] = []
        self.disconnected = False
        self.attempts: list[dict] = []
        # {"request_body", "response_body"} for the log writer, only when the tenant logs bodies (proxy.steps.bodylog).
        self.bodies: dict[str, Any] | None = None
        # A Responses API answer to keep (`store`), written with this call's row (proxy.inbound.responses).
        self.stored: dict[str, Any] | None = None
        self.reservation: Any = None
        # Per-deployment RPM/TPM admissions of the attempt loop: (deployment id, reservation).
        self.deployment_reservations: list[tuple[int, Any]] = []
        self.prompt_estimate = 0  # an upper bound on the prompt's tokens (body bytes / 3), for admission
        self.payload: dict[str, Any] | None = None  # the request as the steps left it, for billing estimates
        self.content_events = 0
        self.content_bytes = 0
        self.finished = False
        # The answering provider's stop reason in its own words; finish() files it with that attempt.
        self.finish_reason = ""
        # Time spent in the gateway itself when the answer's headers went out (x-gateway-overhead-ms).
        self.overhead_ms: float | None = None
        # The client's W3C trace context, so that the call's span joins the client's trace.
        self.traceparent = ""
        # An MCP tool call (proxy.mcp): (server, tool). Logged with the server as the provider and the
        # tool as the model; it costs nothing.
        self.mcp: tuple[str, str] | None = None

    def set_usage(self, usage: dict | None) -> None:
        if not usage:
            return
        self.usage = usage
        self.prompt_tokens = int_or_none(usage.get("prompt_tokens"))
        self.completion_tokens = int_or_none(usage.get("completion_tokens"))
        self.total_tokens = int_or_none(usage.get("total_tokens"))

    def add_attempt(self, deployment: Deployment, status: int, latency_s: float, error: str) -> None:
        self.attempts.append(
            {
                "deployment": deployment.id,
                "provider": deployment.provider_name,
                "model": deployment.upstream_model,
                "status": status,
                "latency_ms": round(latency_s * 1000, 3),
                "error": storable(error) if error else "",
                # When the attempt began, in ms after the call did: traces place their spans with it.
                "start_ms": round((time.perf_counter() - latency_s - self.started) * 1000, 3),
                "kind": deployment.kind,
            }
        )

    def _cost(self) -> tuple[int | None, bool, int]:
        """(cost in picodollars or None if unpriced, estimated?, tokens) of this call."""
        if self.cache_status == "hit" or self.mcp is not None:
            return 0, False, 0  # answered from the prompt cache: no provider was paid (cost_saved says what it saved)
        dep = self.deployment
        if dep is None or self.status == 0:
            return None, False, 0
        if self.prompt_tokens is not None:
            prompt, completion = self.prompt_tokens, self.completion_tokens or 0
            details = (self.usage or {}).get("prompt_tokens_details") or {}
            cached = int_or_none(details.get("cached_tokens")) or 0
            written = int_or_none(details.get("cache_write_tokens")) or 0
            estimated = False
        elif self.status >= 400 and not self.disconnected and not self.content_events:
            # Refused calls are not billed; a stream that failed after relaying content still is.
            return (0 if dep.price is not None else None), False, 0
        else:
            # No usage reported (the client left, or the stream was cut before its usage chunk): the
            # prompt by the model family's tokenizer estimate, the output by what was relayed (its text,
            # or one token per event past the role and finish frames, whichever is more, e.g. tool-call
            # arguments), never more than the request's own output cap: never more than the whole call.
            per = chars_per_token(dep.kind)
            completion = max(math.ceil(self.content_bytes / per), self.content_events - 2, 0)
            cap = admission.requested_output(self.endpoint, self.payload) if self.payload is not None else None
            if cap is not None:
                completion = min(completion, cap)
            if self.payload is not None:
                prompt = estimate_request_tokens(self.payload, dep.kind)
            else:
                prompt = self.prompt_estimate
            cached, written = 0, 0
            estimated = True
        if dep.price is None:
            return None, estimated, prompt + completion
        return to_pico(dep.price.cost(prompt, completion, cached, written)), estimated, prompt + completion

    def _settlement(self, cost: int | None) -> dict:
        reservation = self.reservation
        if reservation is None or not reservation.budgets or not reservation.reserve_nanos:
            return {}
        keys = [b.key for b in reservation.budgets]
        return {"settle": {"slot": reservation.request_id, "keys": keys, "nanos": pico_to_nanos_ceil(cost or 0)}}

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.key is None:
            return  # unauthenticated requests belong to no tenant
        now = time.perf_counter()
        dep = self.deployment
        created = self.at
        tz = self.tenant.tz if self.tenant is not None and self.tenant.tz is not None else UTC
        cost, estimated, tokens = self._cost()
        error_message = self.error_message
        if error_message and dep is not None:
            error_message = redact(error_message, secrets_of(dep))  # error path only
        usage = self.usage
        cached_tokens = None
        if usage:
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                cached_tokens = int_or_none(details.get("cached_tokens"))
        fallback_reason = ""
        if self.fallback and len(self.attempts) > 1:
            # The failure that sent the call to its fallback: the attempt just before the one that answered.
            before = self.attempts[-2]
            fallback_reason = (before["error"] or f"status {before['status']}")[:100]
        if self.finish_reason and self.attempts:
            self.attempts[-1]["finish_reason"] = storable(self.finish_reason[:100])
        tags = self.tags
        if tags:
            tags = [storable(t) for t in tags]
        buffer.add(
            {
                "created_at": created,
                "tenant_id": self.key.tenant_id,
                "virtual_key_id": self.key.key_id,
                "request_id": self.request_id,
                "call_id": self.call_id,
                "endpoint": self.endpoint,
                # Every string from the request or the upstream is made storable here, or PostgreSQL
                # would refuse the row and the spend ledger written with it (observability.text).
                "requested_model": storable(self.model[:200]),
                "variant": storable(self.variant[:200]),
                "deployment_id": dep.id if dep else None,
                "provider": dep.provider_name if dep else (self.mcp[0] if self.mcp else ""),
                "upstream_model": dep.upstream_model if dep else (storable(self.mcp[1][:200]) if self.mcp else ""),
                "stream": self.stream,
                "status_code": self.status,
                "latency_ms": round((now - self.started) * 1000, 3),
                "ttfb_ms": round((self.ttfb - self.started) * 1000, 3) if self.ttfb else None,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "error_type": storable(self.error_type[:100]),
                "error_message": storable(error_message[:2000]),
                # What was sent upstream when the data policy replaced the end-user id (proxy.steps.pii).
                "end_user": storable((self.logged_user or self.user)[:200]),
                "client_disconnected": self.disconnected,
                "attempts": self.attempts,
                "cost_picodollars": cost,
                "cost_estimated": estimated,
                "tags": tags,
                "day": created.astimezone(tz).date(),
                "route": storable(self.route[:200]),
                "fallback_reason": storable(fallback_reason),
                "key_metadata": self.key.metadata if isinstance(self.key.metadata, dict) else {},
                "cached_tokens": cached_tokens,
                "cache_status": self.cache_status,
                "cost_saved_picodollars": self.cost_saved,
                "pii_actions": self.pii_actions or {},
                "guardrails": self.guardrails or {},
                "overhead_ms": self.overhead_ms,  # not a column: read by /metrics (observability.exposition)
                "traceparent": self.traceparent,  # not a column either: read by observability.traces
                **(self.bodies or {}),
                # Not a column: written with the row by observability.stored_responses.
                **({"stored_response": self.stored} if self.stored is not None and self.status < 400 else {}),
                # Not a column: what settling the budgets takes, should this process die before it
                # does (proxy.limits.settle_lost, from the spool).
                **(self._settlement(cost) if self.reservation is not None else {}),
            }
        )
        if self.reservation is not None:
            # Settle after the answer is out: the client never waits for this round trip.
            self.reservation.call_ref = self.request_id
            spawn(admission.settle(self.reservation, tokens, pico_to_nanos_ceil(cost or 0)))
            self.reservation = None
        for dep_id, reservation in self.deployment_reservations:
            # The deployment that answered keeps its tokens; the ones that failed give theirs back.
            spawn(admission.settle(reservation, tokens if dep is not None and dep_id == dep.id else 0, 0))
        self.deployment_reservations = []
