"""Retries, fallbacks, breakers and per-request routing headers, end to end with the openai SDK.

Alice's acme has a model "smart" on two deployments (main/a-model, backup/b-model) that falls back to
"cheap", and to "long" on a context-length error. The fake upstream is scripted per upstream model:
`upstream.script("a-model", {"status": 503})` makes a-model's next answer a 503.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from observability.models import CallLog
from tenants.config import apply_config
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def acme_yaml(base_url: str) -> str:
    return f"""
tenant: acme
name: Acme Corp
providers:
  - {{name: main, kind: openai-compatible, base_url: "{base_url}", api_key: "env:FAKE_UPSTREAM_KEY"}}
  - {{name: backup, kind: openai-compatible, base_url: "{base_url}", api_key: "env:FAKE_UPSTREAM_KEY"}}
models:
  - name: smart
    retries: 1
    timeout_s: 30
    deployments:
      - {{provider: main, model: a-model}}
      - {{provider: backup, model: b-model}}
    fallbacks: [cheap]
    context_window_fallbacks: [long]
    cooldown: {{failures: 5, window_s: 60, cooldown_s: 30}}
  - name: cheap
    deployments: [{{provider: main, model: c-model}}]
  - name: long
    deployments: [{{provider: main, model: l-model}}]
  - name: fragile
    retries: 0
    deployments:
      - {{provider: main, model: d-model}}
      - {{provider: backup, model: e-model}}
    cooldown: {{failures: 1, window_s: 60, cooldown_s: 30}}
  - name: solo
    retries: 0
    deployments: [{{provider: main, model: s-model}}]
  - name: capped
    deployments:
      - {{provider: main, model: p-model}}
      - {{provider: backup, model: q-model}}
limits:
  deployments:
    - {{model: capped, provider: main, rpm: 1}}
"""


@pytest.fixture
def world(upstream, monkeypatch, mint, gateway_factory):
    from tests.helpers import UPSTREAM_KEY

    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    tenant, _ = apply_config(acme_yaml(upstream.base_url))
    gateway = gateway_factory(extra_env={"GATEWAY_RETRY_BACKOFF": "0.01"})
    key = mint(tenant)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    return gateway, key, client


def chat(client: openai.OpenAI, model: str = "smart", **kwargs):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **kwargs
    )


def logged(request_id: str) -> CallLog:
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists())
    return CallLog.objects.get(request_id=request_id)


def test_a_503_is_retried_on_the_same_deployment(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 503})
    raw = chat(client)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-gateway-model"] == "main/a-model"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert upstream.calls("a-model") == 2 and upstream.calls("b-model") == 0
    row = logged(raw.headers["x-request-id"])
    assert [a["status"] for a in row.attempts] == [503, 200]
    assert row.status_code == 200


def test_retry_after_is_honoured_when_it_fits_the_deadline(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 429, "headers": {"retry-after": "1"}})
    started = time.monotonic()
    raw = chat(client)
    assert raw.http_response.status_code == 200
    assert time.monotonic() - started >= 1.0
    assert raw.headers["x-gateway-model"] == "main/a-model"


def test_a_retry_after_beyond_the_deadline_moves_to_the_next_deployment_at_once(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 429, "headers": {"retry-after": "120"}})
    started = time.monotonic()
    raw = chat(client)
    assert time.monotonic() - started < 5
    assert raw.headers["x-gateway-model"] == "backup/b-model"
    assert raw.headers["x-gateway-attempts"] == "2"


def test_a_400_is_never_retried(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 400})
    with pytest.raises(openai.BadRequestError):
        chat(client)
    assert upstream.calls("a-model") == 1 and upstream.calls("b-model") == 0 and upstream.calls("c-model") == 0


def test_when_every_deployment_fails_the_fallback_model_answers(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 500}, {"status": 500})
    upstream.script("b-model", {"status": 502}, {"status": 502})
    raw = chat(client)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-gateway-fallback"] == "cheap"
    assert raw.headers["x-gateway-model"] == "main/c-model"
    assert raw.headers["x-gateway-attempts"] == "5"
    row = logged(raw.headers["x-request-id"])
    assert [(a["model"], a["status"]) for a in row.attempts] == [
        ("a-model", 500),
        ("a-model", 500),
        ("b-model", 502),
        ("b-model", 502),
        ("c-model", 200),
    ]


def test_no_fallback_header_returns_the_last_error(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 500}, {"status": 500})
    upstream.script("b-model", {"status": 500}, {"status": 500})
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client, extra_headers={"x-gateway-no-fallback": "true"})
    assert caught.value.response.headers["x-gateway-attempts"] == "4"
    assert upstream.calls("c-model") == 0


def test_a_context_length_error_goes_straight_to_the_context_window_fallback(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 400, "context": True})
    raw = chat(client)
    assert raw.headers["x-gateway-fallback"] == "long"
    assert raw.headers["x-gateway-model"] == "main/l-model"
    assert upstream.calls("a-model") == 1 and upstream.calls("b-model") == 0


def test_a_stream_fails_over_before_its_first_byte(world, upstream):
    _gateway, _key, client = world
    upstream.script("a-model", {"status": 500}, {"status": 500})
    raw = client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-gateway-model"] == "backup/b-model"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello from the fake upstream."


def test_the_timeout_header_lowers_the_deadline(world, upstream):
    gateway, key, _client = world
    upstream.script("s-model", {"hang": True})
    started = time.monotonic()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", "x-gateway-timeout": "1"},
        json={"model": "solo", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 504
    assert time.monotonic() - started < 10
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-gateway-timeout", "soon"), ("x-gateway-timeout", "-3"), ("x-gateway-no-fallback", "maybe")],
)
def test_invalid_routing_headers_get_a_400(world, header, value):
    gateway, key, _client = world
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", header: value},
        json={"model": "smart", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_header"
    assert header in response.json()["error"]["message"]


def test_an_open_breaker_is_shared_by_every_gateway_process(world, upstream, gateway_factory, settings):
    if not settings.REDIS_URL:
        pytest.skip("the shared breaker needs Redis")
    _gateway, key, client = world
    other = gateway_factory(extra_env={"GATEWAY_RETRY_BACKOFF": "0.01"})
    other_client = openai.OpenAI(base_url=f"{other.url}/v1", api_key=key, max_retries=0)
    chat(other_client, "fragile")  # both processes are up and listening before the failure
    chat(client, "fragile")
    before = upstream.calls("d-model")
    upstream.script("d-model", {"status": 500})
    raw = chat(client, "fragile")
    assert raw.headers["x-gateway-model"] == "backup/e-model"  # d failed once: its breaker opened
    time.sleep(1.0)
    for c in (client, other_client):
        assert chat(c, "fragile").headers["x-gateway-model"] == "backup/e-model"
    assert upstream.calls("d-model") == before + 1  # neither process called it during its cooldown


def test_a_deployment_at_its_own_rpm_passes_the_call_to_the_next_one(world, upstream):
    _gateway, _key, client = world
    assert chat(client, "capped").headers["x-gateway-model"] == "main/p-model"
    raw = chat(client, "capped")
    assert raw.http_response.status_code == 200
    assert raw.headers["x-gateway-model"] == "backup/q-model"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert upstream.calls("p-model") == 1  # refused by the gateway's own limit, never called
    row = logged(raw.headers["x-request-id"])
    assert [(a["model"], a["status"], a["error"]) for a in row.attempts] == [
        ("p-model", 429, "deployment_rate_limited"),
        ("q-model", 200, ""),
    ]
