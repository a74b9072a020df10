"""Traces: one span per call with a child per upstream attempt, exported over OTLP/HTTP to a collector
(a loopback fake that parses the protobuf), with the GenAI semantic conventions' attributes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from django.test import RequestFactory

from observability import logbuffer, traces
from observability.logbuffer import buffer
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tests.fakes.otlp_collector import FakeCollector
from tests.helpers import wait_for

SERVER, CLIENT = 2, 3  # OTLP's SpanKind numbers
# The client's own trace: the call's span joins it as a child of the client's span.
CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
ERROR = 2  # Status.STATUS_CODE_ERROR


@pytest.fixture(scope="module")
def collector() -> Iterator[FakeCollector]:
    server = FakeCollector().start()
    yield server
    server.stop()


def _chat(secret: str, request_id: str) -> int:
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_X_REQUEST_ID=request_id,
        HTTP_TRACEPARENT=TRACEPARENT,
    )
    return asyncio.run(pipeline.handle(request, "chat/completions")).status_code


@pytest.mark.django_db(transaction=True)
def test_a_retried_call_becomes_a_server_span_with_one_client_span_per_attempt(
    acme, mint, upstream, collector, monkeypatch, settings
):
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on this short-lived loop
    settings.GATEWAY_RETRY_BACKOFF = 0.01
    state.clear()
    secret = mint(acme)
    upstream.script("gpt-4o-mini", {"status": 500})
    assert _chat(secret, "req-trace-1") == 200
    records = [r for r in buffer._records if r["request_id"] == "req-trace-1"]
    buffer.flush_sync()
    state.clear()
    assert len(records) == 1

    exporter = traces.TraceExporter(collector.url, "gateway-test")
    exporter.export(records)
    assert exporter.flush()
    exporter.shutdown()
    assert wait_for(lambda: len([s for s in collector.spans if s["resource"]["service.name"] == "gateway-test"]) == 3)
    spans = [s for s in collector.spans if s["resource"]["service.name"] == "gateway-test"]
    assert collector.content_types[-1] == "application/x-protobuf"

    (call,) = [s for s in spans if s["kind"] == SERVER]
    attempts = sorted((s for s in spans if s["kind"] == CLIENT), key=lambda s: s["start"])
    assert len(attempts) == 2
    assert call["name"] == "chat gpt-4o-mini"
    assert (call["trace_id"], call["parent_span_id"]) == (CLIENT_TRACE, CLIENT_SPAN)
    for child in attempts:
        assert child["trace_id"] == call["trace_id"] and child["parent_span_id"] == call["span_id"]
        assert call["start"] <= child["start"] <= child["end"] <= call["end"]
        assert child["attributes"]["gen_ai.system"] == "openai"
        assert child["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempts[0]["end"] <= attempts[1]["start"]  # the retry came after the failure
    assert attempts[0]["attributes"]["http.response.status_code"] == 500 and attempts[0]["status"] == ERROR
    assert attempts[1]["attributes"]["http.response.status_code"] == 200

    a = call["attributes"]
    log = records[0]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == log["prompt_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == log["completion_tokens"] > 0
    assert a["gateway.request_id"] == "req-trace-1"
    assert a["http.response.status_code"] == 200
    assert (call["end"] - call["start"]) / 1e6 == pytest.approx(log["latency_ms"], abs=0.01)


def test_the_hook_sends_batches_when_an_endpoint_is_set_and_is_not_registered_otherwise(collector, settings,
                                                                                       monkeypatch):  # fmt: skip
    # The test settings have no OTEL endpoint: the app registered no trace hook (tracing off costs nothing).
    assert traces.export_batch not in logbuffer._hooks
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = collector.url
    settings.OTEL_SERVICE_NAME = "gateway-hook-test"
    monkeypatch.setattr(traces, "_exporter", None)
    failed = {
        "created_at": datetime(2026, 12, 1, 12, tzinfo=UTC),
        "request_id": "req-trace-2",
        "endpoint": "embeddings",
        "requested_model": "embed",
        "status_code": 429,
        "error_type": "rate_limit_exceeded",
        "latency_ms": 1.5,
        "attempts": [],
    }
    traces.export_batch([failed])
    assert traces.exporter().flush()
    traces.exporter().shutdown()
    assert wait_for(lambda: any(s["resource"]["service.name"] == "gateway-hook-test" for s in collector.spans))
    (span,) = [s for s in collector.spans if s["resource"]["service.name"] == "gateway-hook-test"]
    assert span["name"] == "embeddings embed" and span["status"] == ERROR
    assert span["attributes"]["error.type"] == "rate_limit_exceeded"
    assert span["start"] == int(failed["created_at"].timestamp() * 1e9)
    assert span["parent_span_id"] == ""  # no traceparent: a trace of its own


def test_a_malformed_traceparent_is_ignored():
    assert traces.parent_context("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None  # all-zero trace id
    assert traces.parent_context("not a trace context") is None
    assert traces.parent_context("") is None
    assert traces.parent_context(TRACEPARENT) is not None
