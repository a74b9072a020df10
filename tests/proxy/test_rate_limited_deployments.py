"""A provider's 429 with Retry-After rests the deployment for exactly the time asked, and the client is
told that time; a provider that is down surfaces as a 503 with the remaining cooldown, never a 429.
In process through pipeline.handle against the fake OpenAI upstream (a real HTTP server on loopback)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from proxy import lifecycle, pipeline
from proxy.breakers import health
from proxy.configcache import state
from tenants.config import apply_config

pytestmark = pytest.mark.django_db(transaction=True)


def _yaml(base_url: str) -> str:
    return f"""
tenant: acme
name: Acme Corp
providers:
  - {{name: main, kind: openai-compatible, base_url: "{base_url}", api_key: env:FAKE_UPSTREAM_KEY}}
models:
  - name: busy
    retries: 0
    cooldown: {{failures: 3, window_s: 60, cooldown_s: 30}}
    deployments: [{{provider: main, model: busy-model}}]
  - name: down
    retries: 0
    cooldown: {{failures: 1, window_s: 60, cooldown_s: 20}}
    deployments: [{{provider: main, model: down-model}}]
"""


@pytest.fixture
def alice_key(upstream, mint, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-test-0001")
    monkeypatch.setattr(lifecycle, "_started", True)
    state.clear()
    health._deps.clear()
    tenant, _ = apply_config(_yaml(upstream.base_url))
    yield mint(tenant, name="alice-app")
    buffer.flush_sync()
    health._deps.clear()
    state.clear()


def _call(secret: str, model: str):
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    response = asyncio.run(pipeline.handle(request, "chat/completions"))
    return response, orjson.loads(response.content)


def test_a_deployment_rests_for_the_time_its_provider_asked_and_the_client_is_told_so(alice_key, upstream):
    upstream.script("busy-model", {"status": 429, "headers": {"retry-after": "2"}})
    first, body = _call(alice_key, "busy")
    assert first.status_code == 429  # the provider's own answer, relayed
    second, body = _call(alice_key, "busy")  # within the 2 s: the deployment is not called
    assert second.status_code == 429
    assert body["error"]["code"] == "deployments_rate_limited"
    assert second["retry-after"] == "2"  # what the provider asked, not the breaker's 30 s cooldown
    assert upstream.calls("busy-model") == 1


def test_a_provider_that_is_down_is_a_503_with_the_remaining_cooldown(alice_key, upstream):
    upstream.script("down-model", {"status": 503})
    first, _ = _call(alice_key, "down")
    assert first.status_code >= 500
    second, body = _call(alice_key, "down")  # the breaker is open (one failure opens it here)
    assert second.status_code == 503
    assert body["error"]["code"] == "deployments_cooling_down" and body["error"]["type"] == "server_error"
    assert 18 <= int(second["retry-after"]) <= 20
