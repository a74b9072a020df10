"""Prometheus metrics: folded from the call-log batches, summed over processes, labels bounded by config.
Also the x-gateway-overhead-ms header every /v1 answer carries, and its histogram."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import orjson
import pytest
from django.test import RequestFactory

from observability import exposition
from observability.logbuffer import buffer
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tests.helpers.observability import samples, value

TOKEN = "metrics-token-0123456789"


def record(**fields) -> dict:
    base = {
        "requested_model": "gpt-4o-mini",
        "deployment_id": 1,
        "provider": "main",
        "status_code": 200,
        "latency_ms": 420.0,
        "ttfb_ms": 120.0,
        "overhead_ms": 0.8,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_picodollars": 1_500_000_001,
        "attempts": [{"deployment": 1, "provider": "main", "status": 200, "latency_ms": 419.0, "error": ""}],
    }
    return {**base, **fields}


def test_a_batch_becomes_counters_histograms_and_exact_spend():
    records = [
        record(),
        record(
            status_code=200,
            fallback_reason="rate_limited",
            attempts=[
                {"deployment": 1, "provider": "main", "status": 429, "error": "rate_limited"},
                {"deployment": 1, "provider": "main", "status": 429, "error": "rate_limited"},
                {"deployment": 2, "provider": "backup", "status": 200, "error": ""},
            ],
            pii_actions={"email": {"pseudonymize": 2}},
            cache_status="miss",
        ),
        # A model nobody configured, and a refusal by the budget: no new model label value.
        record(requested_model="made-up-model-9f8e", deployment_id=None, provider="", status_code=404,
               error_type="model_not_found", attempts=[], cost_picodollars=None, prompt_tokens=None),
        record(status_code=429, error_type="budget_exceeded", attempts=[], cost_picodollars=0),
        # A deployment at its own limit is skipped without a call: a refusal, not an upstream error.
        record(attempts=[
            {"deployment": 3, "provider": "main", "status": 429, "error": "deployment_rate_limited"},
            {"deployment": 1, "provider": "main", "status": 200, "error": ""},
        ]),
    ]  # fmt: skip
    found = samples(exposition.render(dict(exposition.collect(records))))
    assert value(found, "gateway_requests_total", model="gpt-4o-mini", provider="main", status=200) == 3
    assert value(found, "gateway_requests_total", model="other", provider="", status=404) == 1
    assert value(found, "gateway_refusals_total", reason="deployment_rate_limit") == 1
    assert value(found, "gateway_upstream_attempts_total", provider="main", status=200) == 2
    assert not [labels for (_n, labels) in found if ("model", "made-up-model-9f8e") in labels]
    assert value(found, "gateway_spend_usd_total", model="gpt-4o-mini", provider="main") == pytest.approx(0.0045)
    assert 'gateway_spend_usd_total{model="gpt-4o-mini",provider="main"} 0.004500000003' in exposition.render(
        dict(exposition.collect(records))
    )  # exact: 4,500,000,003 picodollars, never a float sum
    assert value(found, "gateway_upstream_errors_total", provider="main", status=429) == 2
    assert value(found, "gateway_retries_total", provider="main") == 1
    assert value(found, "gateway_fallbacks_total", model="gpt-4o-mini") == 1
    assert value(found, "gateway_pii_actions_total", detector="email", action="pseudonymize") == 2
    assert value(found, "gateway_cache_total", model="gpt-4o-mini", result="miss") == 1
    assert value(found, "gateway_refusals_total", reason="budget") == 1
    assert value(found, "gateway_refusals_total", reason="model_not_found") == 1
    # Histograms are cumulative: 0.42 s is above the 0.25 s bucket and within 0.5 s.
    assert value(found, "gateway_request_duration_seconds_bucket", model="gpt-4o-mini", le="0.25") == 0
    assert value(found, "gateway_request_duration_seconds_bucket", model="gpt-4o-mini", le="0.5") == 4
    assert value(found, "gateway_request_duration_seconds_count", model="gpt-4o-mini") == 4
    assert value(found, "gateway_overhead_seconds_bucket", le="0.001") == 5
    assert value(found, "gateway_overhead_seconds_sum") == pytest.approx(0.004)


def test_free_text_in_policy_names_does_not_become_a_label():
    found = samples(exposition.render(dict(exposition.collect([record(pii_actions={"a b\n{x}": {"block": 1}})]))))
    assert value(found, "gateway_pii_actions_total", detector="other", action="block") == 1


def test_a_model_name_with_control_characters_cannot_forge_labels_or_break_the_scrape():
    forged = "gpt\x1fstatus=999\x1fevil label=1"
    batch = [record(requested_model=forged), record(requested_model='line\nbreak "quoted" \\ slash', provider="p\x00")]
    text = exposition.render(dict(exposition.collect(batch)))
    found = samples(text)  # parses: every label well-formed
    assert value(found, "gateway_requests_total", model="gpt?status=999?evil label=1", provider="main", status=200) == 1
    assert "\x1f" not in text and "\x00" not in text
    # A field stored before names were cleaned (forged labels) is left out of the scrape, not rendered.
    stale = {exposition.SEP.join(["gateway_requests_total", "model=x", "evil label=1"]): 5}
    samples(exposition.render({**dict(exposition.collect(batch)), **stale}))


def test_hundreds_of_models_are_capped_with_an_other_bucket():
    batch = [record(requested_model=f"model-{i:03d}") for i in range(300)] + [record(requested_model="busy")] * 5
    found = samples(exposition.render(dict(exposition.collect(batch))))
    models = {dict(labels).get("model") for (name, labels) in found if name == "gateway_requests_total"}
    assert len(models) == exposition.MAX_MODELS + 1 and "other" in models and "busy" in models
    total = sum(v for (name, _labels), v in found.items() if name == "gateway_requests_total")
    assert total == 305  # folded, not dropped


@pytest.mark.django_db
def test_the_endpoint_is_off_without_a_token_and_needs_the_bearer_token(client, settings):
    settings.GATEWAY_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.GATEWAY_METRICS_TOKEN = TOKEN
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain; version=0.0.4")
    samples(ok.content.decode())  # parses


def _call(secret: str, model: str, stream: bool = False):
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    async def go():
        started = time.perf_counter()
        response = await pipeline.handle(request, "chat/completions")
        headers_at = time.perf_counter() - started
        if stream:
            body = b"".join([chunk async for chunk in response.events])
        else:
            body = response.content
        return response, body, headers_at

    return asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_overhead_header_on_json_and_stream_answers_excludes_upstream_time(acme, mint, upstream, monkeypatch, client,
                                                                           settings):  # fmt: skip
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    settings.GATEWAY_METRICS_TOKEN = TOKEN
    state.clear()
    secret = mint(acme)
    before = samples(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode())
    _call(secret, "gpt-4o-mini")  # warm: the key and tenant loaded, the upstream connection open
    upstream.script("gpt-4o-mini", {"delay": 0.3}, {"delay": 0.3})
    answers = [_call(secret, "gpt-4o-mini"), _call(secret, "gpt-4o-mini", stream=True)]
    for response, body, headers_at in answers:
        assert response.status_code == 200, body
        overhead = float(response["x-gateway-overhead-ms"])
        # The upstream took 300 ms before its first byte: none of it is counted as the gateway's.
        assert headers_at >= 0.3
        assert 0 < overhead < 250, overhead
        assert overhead < headers_at * 1000 - 250
    unknown, body, _ = _call(secret, "no-such-model-a1b2")
    assert unknown.status_code == 404 and float(unknown["x-gateway-overhead-ms"]) >= 0
    buffer.flush_sync()
    state.clear()
    after = samples(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode())

    def gained(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert gained("gateway_requests_total", model="gpt-4o-mini", provider="main", status=200) == 3
    assert gained("gateway_requests_total", model="other", provider="", status=404) == 1
    assert gained("gateway_overhead_seconds_count") == 4
    assert gained("gateway_ttfb_seconds_count", model="gpt-4o-mini") == 3
    assert gained("gateway_tokens_total", model="gpt-4o-mini", provider="main", type="prompt") > 0
    assert not [labels for (_n, labels) in after if ("model", "no-such-model-a1b2") in labels]


def test_spend_renders_as_an_exact_decimal():
    text = exposition.render({exposition._field("gateway_spend_usd_total:pico", model="m", provider="p"): 10**12 + 1})
    assert 'gateway_spend_usd_total{model="m",provider="p"} 1.000000000001' in text
    (line,) = [line for line in text.splitlines() if line.startswith("gateway_spend_usd_total{")]
    assert Decimal(line.split(" ")[-1]) == Decimal(10**12 + 1) / Decimal(10**12)


def test_breaker_states_are_gauges_read_at_scrape_time():
    from types import SimpleNamespace

    from proxy.breakers import health
    from proxy.configcache import state
    from proxy.snapshot import CooldownSpec

    dep_id, unknown = 987_654, 987_655
    # A deployment of a tenant this process has loaded is named by its provider and upstream model.
    deployment = SimpleNamespace(id=dep_id, provider_name="main", upstream_model="gpt-4o-mini")
    state.tenants[-1] = SimpleNamespace(models={"fast": [deployment]})  # type: ignore[assignment]
    try:
        for dep in (dep_id, unknown):
            health.failure(dep, CooldownSpec(failures=1, window_s=60, cooldown_s=30))
        found = samples(exposition.render({}))
        named = {"deployment": dep_id, "provider": "main", "model": "gpt-4o-mini"}
        assert value(found, "gateway_breaker_state", **named, state="open") == 1
        assert value(found, "gateway_breaker_state", **named, state="closed") == 0
        assert value(found, "gateway_breaker_state", deployment=unknown, provider="", model="", state="open") == 1
    finally:
        state.tenants.pop(-1, None)
        for dep in (dep_id, unknown):
            health._deps.pop(dep, None)


def test_the_log_writers_own_counters_are_pushed_once_each():
    from observability import metrics

    # An event of this test alone: the counters live in the Redis hash every test process pushes to
    # (another xdist worker's degraded rows moved calllog_rows_degraded under this test).
    event = f"calllog_test_{uuid.uuid4().hex[:8]}"
    field = exposition._field("gateway_internal_events_total", event=event)
    before = exposition.current().get(field, 0)
    metrics.incr(event, 2)
    exposition.record_batch([])
    exposition.record_batch([])  # nothing new: nothing added again
    assert exposition.current().get(field, 0) - before == 2


def test_every_other_v1_answer_carries_the_overhead_header_too(monkeypatch):
    from proxy import views

    monkeypatch.setattr(lifecycle, "_started", True)
    factory = RequestFactory()
    answers = [
        asyncio.run(views.models(factory.get("/v1/models"))),  # no key: 401
        asyncio.run(views.not_found(factory.get("/v1/nothing-here"), "nothing-here")),
        asyncio.run(views.count_tokens(factory.post("/v1/messages/count_tokens", data=b"{}", content_type="application/json"))),
    ]  # fmt: skip
    assert [a.status_code for a in answers] == [401, 404, 401]
    for answer in answers:
        assert float(answer["x-gateway-overhead-ms"]) >= 0
