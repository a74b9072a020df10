"""OpenTelemetry traces of proxied calls, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Spans are built after the fact from the call log's flushed batches (a log-buffer hook), never on the
request path: one SERVER span per call and one CLIENT child per upstream attempt, placed with the
call's timestamps (`created_at`, `latency_ms`, and each attempt's `start_ms`/`latency_ms`), named and
described after the OpenTelemetry GenAI semantic conventions (`gen_ai.*`). With tracing off the hook
is not even registered: zero cost.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import datetime
from typing import Any

from django.conf import settings

logger = logging.getLogger("gateway.traces")

OPERATIONS = {"chat/completions": "chat", "messages": "chat", "embeddings": "embeddings"}
# Provider kinds (routing) -> gen_ai.system values of the semantic conventions.
SYSTEMS = {
    "openai": "openai",
    "openai-compatible": "openai",
    "azure": "az.ai.openai",
    "azure-openai": "az.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
}
MS = 1_000_000  # nanoseconds per millisecond


TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parent_context(traceparent: str) -> Any:
    """The client's span (W3C `traceparent`, version 00) as the parent of the call's span; None if absent
    or malformed (then the call starts its own trace)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    match = TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if not trace_id or not span_id:
        return None
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16)))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def enabled() -> bool:
    return bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT)


class TraceExporter:
    """A tracer provider with a batching OTLP/HTTP exporter (its own thread does the network I/O)."""

    def __init__(self, endpoint: str, service_name: str = "llm-gateway", span_exporter: Any = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if span_exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # A signal-specific endpoint, if the operator set one, wins (the SDK reads it when given none).
            traces_url = None if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") else f"{endpoint}/v1/traces"
            span_exporter = OTLPSpanExporter(endpoint=traces_url)
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self.tracer = self.provider.get_tracer("gateway.observability")

    def export(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            try:
                self._call_span(record)
            except Exception:
                logger.exception("building the trace of call %s failed", record.get("request_id"))

    def _call_span(self, r: dict[str, Any]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        created = r.get("created_at")
        if not isinstance(created, datetime):
            return
        start = int(created.timestamp() * 1_000_000_000)
        end = start + int((r.get("latency_ms") or 0) * MS)
        operation = OPERATIONS.get(r.get("endpoint") or "", r.get("endpoint") or "chat")
        model = r.get("requested_model") or ""
        attempts = r.get("attempts") or []
        system = SYSTEMS.get(attempts[-1].get("kind", ""), "") if attempts else ""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "gateway.request_id": r.get("request_id") or "",
            "gateway.tenant_id": r.get("tenant_id") or 0,
            "gateway.stream": bool(r.get("stream")),
            "http.response.status_code": r.get("status_code") or 0,
        }
        optional = {
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "gen_ai.response.model": r.get("upstream_model"),
            "gen_ai.usage.input_tokens": r.get("prompt_tokens"),
            "gen_ai.usage.output_tokens": r.get("completion_tokens"),
            "gateway.key_id": r.get("virtual_key_id"),
            "gateway.provider": r.get("provider"),
            "gateway.deployment_id": r.get("deployment_id"),
            "gateway.route": r.get("route"),
            "gateway.variant": r.get("variant"),
            "gateway.fallback_reason": r.get("fallback_reason"),
            "gateway.cache_status": r.get("cache_status"),
            "gateway.ttfb_ms": r.get("ttfb_ms"),
            "gateway.overhead_ms": r.get("overhead_ms"),
            "gateway.cost_picodollars": r.get("cost_picodollars"),
            "gen_ai.usage.cached_tokens": r.get("cached_tokens"),
            "error.type": r.get("error_type"),
        }
        attributes.update({k: v for k, v in optional.items() if v not in (None, "")})
        span = self.tracer.start_span(
            f"{operation} {model}".strip(),
            context=parent_context(r.get("traceparent") or ""),
            kind=SpanKind.SERVER,
            start_time=start,
            attributes=attributes,
        )
        status = r.get("status_code") or 0
        if status >= 400 or r.get("error_type"):
            span.set_status(Status(StatusCode.ERROR, r.get("error_type") or f"status {status}"))
        context = trace.set_span_in_context(span)
        for attempt in attempts:
            a_start = start + int((attempt.get("start_ms") or 0) * MS)
            a_end = a_start + int((attempt.get("latency_ms") or 0) * MS)
            a_model = attempt.get("model") or ""
            a_status = attempt.get("status") or 0
            a_system = SYSTEMS.get(attempt.get("kind", ""), attempt.get("kind") or "")
            a_attributes = {
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": a_model,
                "http.response.status_code": a_status,
                "gateway.provider": attempt.get("provider") or "",
                "gateway.deployment_id": attempt.get("deployment") or 0,
            }
            if a_system:
                a_attributes["gen_ai.system"] = a_attributes["gen_ai.provider.name"] = a_system
            if attempt.get("error"):
                a_attributes["error.type"] = attempt["error"]
            child = self.tracer.start_span(
                f"{operation} {a_model}".strip(),
                context=context,
                kind=SpanKind.CLIENT,
                start_time=a_start,
                attributes=a_attributes,
            )
            if a_status >= 400 or a_status == 0 or attempt.get("error"):
                child.set_status(Status(StatusCode.ERROR, attempt.get("error") or f"status {a_status}"))
            child.end(end_time=max(a_end, a_start))
        span.end(end_time=max(end, start))

    def flush(self, timeout_ms: int = 5000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


_exporter: TraceExporter | None = None
_lock = threading.Lock()


def exporter() -> TraceExporter:
    global _exporter
    with _lock:
        if _exporter is None:
            _exporter = TraceExporter(settings.OTEL_EXPORTER_OTLP_ENDPOINT, settings.OTEL_SERVICE_NAME)
        return _exporter


def export_batch(records: list[dict[str, Any]]) -> None:
    """Log-buffer hook (registered only when tracing is on): the batch's calls as spans."""
    if enabled():
        exporter().export(records)
