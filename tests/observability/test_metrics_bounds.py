"""/metrics cannot be broken by a tenant: every label value a tenant names (models, providers, custom
detectors, deployments) is capped per metric with an `other` bucket, and the whole scrape, with many
entities and odd but printable names, parses with prometheus_client's own text parser."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from observability import exposition
from routing.models import ModelDeployment

TOKEN = "metrics-token-0123456789"
# Printable, yet everything the text format must escape or carry through: quotes, backslashes, braces,
# the label syntax itself, commas, non-ASCII letters and an emoji.
ODD = '"q" \\b {x="1"} =, é 漢 🙂'


def record(model: str, provider: str, deployment_id: int, *, detector: str = "email") -> dict:
    return {
        "requested_model": model,
        "deployment_id": deployment_id,
        "provider": provider,
        "status_code": 200,
        "latency_ms": 420.0,
        "ttfb_ms": 120.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_picodollars": 1_000_000,
        "cache_status": "miss",
        "fallback_reason": "rate_limited",
        "attempts": [{"deployment": deployment_id, "provider": provider, "status": 200, "error": ""}],
        "pii_actions": {detector: {"redact": 1}},
    }


def label_values(text: str) -> dict[tuple[str, str], set[str]]:
    """(family, label) -> the values the scrape shows, for the labels tenants name; parsed by prometheus_client."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label in exposition.MAX_LABEL_VALUES:
                    seen[(family.name, label)].add(value)
    return seen


def assert_capped(text: str) -> dict[tuple[str, str], set[str]]:
    seen = label_values(text)
    for (family, label), values in seen.items():
        assert len(values) <= exposition.MAX_LABEL_VALUES[label] + 1, (family, label, len(values))
    return seen


def test_every_tenant_named_label_is_capped_per_metric_and_totals_still_add_up():
    n_models, n_providers, n_detectors = 260, 130, 120
    batch = [
        record(f"m{i:03d}", f"p{i % n_providers:03d}", i, detector=f"cust_{i % n_detectors:03d}")
        for i in range(n_models)
    ] + [record("busy", "p000", 9999)] * 5
    text = exposition.render(dict(exposition.collect(batch)))
    seen = assert_capped(text)
    assert len(seen[("gateway_requests", "provider")]) == exposition.MAX_LABEL_VALUES["provider"] + 1
    assert len(seen[("gateway_upstream_attempts", "provider")]) == exposition.MAX_LABEL_VALUES["provider"] + 1
    assert len(seen[("gateway_pii_actions", "detector")]) == exposition.MAX_LABEL_VALUES["detector"] + 1
    for family, label in (("gateway_requests", "model"), ("gateway_cache", "model"), ("gateway_fallbacks", "model")):
        assert len(seen[(family, label)]) == exposition.MAX_MODELS + 1 and "other" in seen[(family, label)]
    assert "busy" in seen[("gateway_requests", "model")]  # the most used are kept
    totals: Counter = Counter()
    buckets: dict[tuple, float] = {}
    counts: dict[tuple, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] += s.value
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name == "gateway_request_duration_seconds_bucket" and s.labels["le"] == "+Inf":
                buckets[key] = s.value
            if s.name == "gateway_request_duration_seconds_count":
                counts[key] = s.value
    calls = n_models + 5
    assert totals["gateway_requests_total"] == calls  # folded into "other", never dropped
    assert totals["gateway_pii_actions_total"] == calls
    assert totals["gateway_upstream_attempts_total"] == calls
    assert buckets == counts and sum(counts.values()) == calls  # histogram parts folded together


def test_breaker_gauges_are_capped_per_deployment_with_an_other_bucket():
    from proxy.breakers import health
    from proxy.snapshot import CooldownSpec

    ids = range(880_000, 880_000 + exposition.MAX_LABEL_VALUES["deployment"] + 50)
    try:
        for dep_id in ids:
            health.failure(dep_id, CooldownSpec(failures=1, window_s=60, cooldown_s=30))
        text = exposition.render({})
        seen = assert_capped(text)
        assert "other" in seen[("gateway_breaker_state", "deployment")]
        open_total = sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "gateway_breaker_state" and s.labels["state"] == "open"
        )
        assert open_total >= len(ids)  # every open breaker still counted, some under deployment="other"
    finally:
        for dep_id in ids:
            health._deps.pop(dep_id, None)


@pytest.mark.django_db
def test_the_whole_scrape_parses_with_many_entities_and_odd_names(client, settings, monkeypatch):
    from tenants.config import apply_config

    providers = [{"name": f"p{i} {ODD}", "kind": "mock"} for i in range(exposition.MAX_LABEL_VALUES["provider"] + 5)]
    models = [
        {
            "name": f"m{i} {ODD}",
            "deployments": [{"provider": providers[i % len(providers)]["name"], "model": "mock-chat"}],
        }
        for i in range(exposition.MAX_MODELS + 5)
    ]
    apply_config(yaml.safe_dump({"tenant": "acme", "providers": providers, "models": models}, allow_unicode=True))
    # The numbers of this test only: this process's counters, not the Redis hash other tests share.
    settings.REDIS_URL = ""
    monkeypatch.setattr(exposition, "_local", Counter())
    deployments = list(ModelDeployment.objects.filter(tenant__slug="acme").select_related("provider"))
    assert len(deployments) == exposition.MAX_MODELS + 5
    batch = [record(d.model_name, d.provider.name, d.id) for d in deployments]
    batch += [record(deployments[0].model_name, deployments[0].provider.name, deployments[0].id)] * 3
    exposition.record_batch(batch)
    settings.GATEWAY_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    text = response.content.decode()
    seen = assert_capped(text)  # parses as a whole, and no tenant-named label grows past its cap
    assert deployments[0].model_name in seen[("gateway_requests", "model")]  # odd names come back verbatim
    assert deployments[0].provider.name in seen[("gateway_requests", "provider")]
    assert "other" in seen[("gateway_requests", "model")] and "other" in seen[("gateway_requests", "provider")]
