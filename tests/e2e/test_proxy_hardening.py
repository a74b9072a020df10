"""Hostile inputs and hostile upstreams, end to end through a real gateway process.

Alice's acme calls a fake OpenAI upstream on loopback that misbehaves on purpose: it quotes the
credential it got, redirects, answers a stream request with JSON, ends a stream without [DONE], puts
NUL characters in its errors. Every such call must be answered in OpenAI's format, logged and billed.
"""

from __future__ import annotations

import json

import httpx
import pytest

from billing.models import SpendLedger
from billing.selectors import reconcile
from observability.models import CallLog
from tenants.config import apply_config
from tests.helpers import UPSTREAM_KEY, tenant_yaml, wait_for
from tests.openapi import validate

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = {
    "gpt-4o-mini": "gpt-4o-mini",
    "echo": "echo-key",
    "stream-echo": "stream-echo-key",
    "redirect": "redirect",
    "json-200": "json-200",
    "no-done": "no-done",
    "nul-error": "nul-error",
}


def acme_yaml(base_url: str, extra: str = "") -> str:
    lines = [tenant_yaml("acme", base_url, {**MODELS, "local": "mock-chat"}).rstrip("\n")]
    lines += ["prices:"] + [f"  - model: {m}\n    input: 1000\n    output: 2000" for m in MODELS.values()]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def acme(upstream, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    tenant, _ = apply_config(acme_yaml(upstream.base_url))
    return tenant


def chat(gateway, key: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


def body(model: str = "gpt-4o-mini", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def log_of(response: httpx.Response) -> CallLog:
    request_id = response.headers["x-request-id"]
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists()), "the call was never logged"
    return CallLog.objects.get(request_id=request_id)


def stream_events(gateway, key: str, model: str) -> tuple[httpx.Response, list[str]]:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body(model, stream=True),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        response.read()
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return response, events


# --- 1. NUL characters never hide a billed call --------------------------------------------------------


def test_a_nul_in_the_end_user_is_logged_and_billed_and_reconciles(gateway, acme, mint):
    key = mint(acme, name="web")
    response = chat(gateway, key, body(user="evil\u0000user"))
    assert response.status_code == 200
    log = log_of(response)
    assert log.end_user == "evil\ufffduser"
    assert log.cost_picodollars and log.cost_picodollars > 0
    ledger = SpendLedger.objects.get(tenant=acme, end_user="evil\ufffduser")
    assert ledger.cost_picodollars == log.cost_picodollars and ledger.requests == 1
    assert reconcile(acme) == []


def test_an_unknown_model_with_a_nul_answers_404_and_is_logged(gateway, acme, mint):
    response = chat(gateway, mint(acme), body("gpt\u0000-4o"))
    assert response.status_code == 404
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "model_not_found"
    log = log_of(response)
    assert log.status_code == 404 and log.requested_model == "gpt\ufffd-4o"


def test_an_upstream_error_full_of_nuls_is_relayed_and_logged(gateway, acme, mint):
    response = chat(gateway, mint(acme), body("nul-error", user="a\u0000b"))
    assert response.status_code == 400
    validate(response.json(), "ErrorResponse")
    log = log_of(response)
    assert log.error_message == "bad\ufffdinput" and log.error_type == "invalid\ufffdrequest"
    assert log.attempts[0]["error"] == "invalid\ufffdrequest"
    assert reconcile(acme) == []


# --- 2. the deployment's own key is never relayed nor stored -------------------------------------------


def _assert_no_key(text: str) -> None:
    assert UPSTREAM_KEY not in text
    assert UPSTREAM_KEY[:6] not in text and UPSTREAM_KEY[-4:] not in text  # nor its masked form


def test_an_upstream_401_quoting_the_key_is_scrubbed_from_the_answer_and_the_log(gateway, acme, mint, upstream):
    response = chat(gateway, mint(acme), body("echo"))
    assert response.status_code == 401
    validate(response.json(), "ErrorResponse")
    message = response.json()["error"]["message"]
    assert message.startswith("Incorrect API key provided: [redacted]")
    _assert_no_key(response.text)
    log = log_of(response)
    assert log.error_message.startswith("Incorrect API key provided:")
    _assert_no_key(log.error_message)
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"  # the fake did see it


def test_a_streamed_error_event_quoting_the_key_is_scrubbed_and_ends_the_stream(gateway, acme, mint):
    response, events = stream_events(gateway, mint(acme), "stream-echo")
    assert response.status_code == 200
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
    error = json.loads(events[-1])
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert "[DONE]" not in events
    _assert_no_key(response.text)
    log = log_of(response)
    assert log.status_code == 502 and log.error_type == "invalid_request_error"
    assert "[redacted]" in log.error_message
    _assert_no_key(log.error_message)
    assert log.cost_picodollars and log.cost_picodollars > 0  # what was relayed is still billed


# --- 3. a stream that is not a stream is an upstream error ---------------------------------------------


@pytest.mark.parametrize(("model", "words"), [("redirect", "redirect (HTTP 302"), ("json-200", "application/json")])
def test_a_stream_request_answered_without_an_event_stream_is_a_502(gateway, acme, mint, model, words):
    key = mint(acme)
    response = chat(gateway, key, body(model, stream=True))
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    validate(response.json(), "ErrorResponse")
    assert words in response.json()["error"]["message"]
    log = log_of(response)
    assert log.status_code == 502 and log.error_type == "upstream_bad_response"
    assert reconcile(acme) == []


def test_a_stream_that_ends_without_done_ends_with_an_error_event_and_is_logged_as_an_error(gateway, acme, mint):
    response, events = stream_events(gateway, mint(acme), "no-done")
    assert response.status_code == 200
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
    assert json.loads(events[-1])["error"]["code"] == "upstream_stream_incomplete"
    assert "[DONE]" not in events
    log = log_of(response)
    assert log.status_code == 502 and log.error_type == "upstream_stream_incomplete"


def test_a_complete_stream_is_still_a_success(gateway, acme, mint):
    response, events = stream_events(gateway, mint(acme), "gpt-4o-mini")
    assert events[-1] == "[DONE]"
    log = log_of(response)
    assert log.status_code == 200 and log.error_type == ""


# --- 4. deeply nested JSON ------------------------------------------------------------------------------


def nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("model", "stream"), [("gpt-4o-mini", False), ("gpt-4o-mini", True), ("local", True)])
def test_json_nested_too_deeply_to_forward_is_a_400(gateway, acme, mint, upstream, model, stream):
    key = mint(acme)
    sent = len(upstream.requests)
    response = chat(
        gateway, key, {"model": model, "stream": stream, "messages": [{"role": "user", "content": nested(300)}]}
    )
    assert response.status_code == 400
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "invalid_json"
    assert "nested too deeply" in response.json()["error"]["message"]
    assert len(upstream.requests) == sent  # never forwarded
    assert log_of(response).status_code == 400


# --- 5. nosniff on every /v1/ answer ----------------------------------------------------------------------


def test_every_api_answer_carries_nosniff(gateway, acme, mint):
    key = mint(acme)
    auth = {"Authorization": f"Bearer {key}"}
    answers = [
        chat(gateway, key, body()),  # JSON
        chat(gateway, key, body("nope")),  # 404 error
        chat(gateway, "sk-gw-nope", body()),  # 401
        httpx.get(f"{gateway.url}/v1/models", headers=auth),
        httpx.get(f"{gateway.url}/v1/unknown", headers=auth),
        httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{", headers=auth),
        stream_events(gateway, key, "gpt-4o-mini")[0],  # event stream
    ]
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", response.request.url


# --- 7. rate limit messages name what the caller knows ---------------------------------------------------


def test_rate_limit_messages_name_the_key_the_model_or_the_tenant(gateway, acme, mint, upstream):
    from billing.models import LimitScope
    from billing.services import rate_limit_set
    from tenants.audit import Actor
    from tenants.models import VirtualKey

    def refusal(key: str, model: str) -> str:
        # Config changes reach the gateway through an invalidation event: call until refused.
        for _ in range(50):
            response = chat(gateway, key, body(model))
            if response.status_code == 429:
                validate(response.json(), "ErrorResponse")
                return response.json()["error"]["message"]
            assert response.status_code == 200, response.text
        raise AssertionError("never rate limited")

    key = mint(acme, name="billing-app")
    key_id = VirtualKey.objects.get(name="billing-app").id
    rate_limit_set(acme, scope=LimitScope.KEY, ref=str(key_id), rpm=1, tpm=None, actor=Actor.cli())
    message = refusal(key, "gpt-4o-mini")
    assert "requests per minute (RPM) on key 'billing-app'." in message and f"k:{key_id}" not in message

    apply_config(
        acme_yaml(upstream.base_url, "limits:\n  deployments:\n    - {model: local, provider: mock, rpm: 1}\n")
    )
    assert "on model 'local'." in refusal(mint(acme, name="other"), "local")

    apply_config(acme_yaml(upstream.base_url, "limits:\n  tenant: {rpm: 1}\n"))
    message = refusal(mint(acme, name="third"), "gpt-4o-mini")
    assert "on tenant 'acme'." in message and f"t:{acme.id}" not in message


def test_a_body_trickled_slower_than_the_read_deadline_gets_a_408(gateway_factory):
    """Slowloris on the body: a client that sends its headers and a few bytes, then nothing."""
    import socket
    import time

    server = gateway_factory(extra_env={"GATEWAY_BODY_READ_TIMEOUT": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Authorization: Bearer sk-gw-nope\r\nContent-Length: 1000\r\n\r\n{"model":'
        )
        started = time.monotonic()
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer and b"GATEWAY_BODY_READ_TIMEOUT" in answer
    assert time.monotonic() - started < 5
