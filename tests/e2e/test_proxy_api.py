"""End to end: the real ASGI server, the real openai SDK, a fake upstream on loopback."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from observability.models import CallLog
from tests.helpers import wait_for
from tests.openapi import validate

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def logs_for(request_id: str) -> list[CallLog]:
    return list(CallLog.objects.filter(request_id=request_id))


def test_the_openai_sdk_completes_a_chat_through_the_gateway(gateway, acme, mint, upstream):
    key = mint(acme)
    raw = client_for(gateway, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], user="end-user-7"
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6
    assert raw.headers["x-gateway-model"] == "main/gpt-4o-mini"
    assert raw.headers["x-request-id"].startswith("req_")
    validate(json.loads(raw.http_response.content), "CreateChatCompletionResponse")

    # The upstream saw its own key and model id, never the virtual key.
    sent = upstream.requests[-1]
    assert sent.headers["Authorization"] == "Bearer sk-upstream-test-0001"
    assert key not in json.dumps(sent.headers)
    assert sent.body["model"] == "gpt-4o-mini"

    request_id = raw.headers["x-request-id"]
    assert wait_for(lambda: len(logs_for(request_id)) == 1)
    log = logs_for(request_id)[0]
    assert log.tenant_id == acme.id
    assert log.status_code == 200
    assert log.prompt_tokens == completion.usage.prompt_tokens
    assert log.completion_tokens == 6
    assert log.end_user == "end-user-7"
    assert log.upstream_model == "gpt-4o-mini"
    assert log.latency_ms > 0 and log.ttfb_ms is not None and log.ttfb_ms <= log.latency_ms
    assert log.attempts and log.attempts[0]["status"] == 200


def test_a_stream_is_relayed_chunk_by_chunk_and_logged_with_usage(gateway, acme, mint, upstream):
    key = mint(acme)
    stream = client_for(gateway, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    # The client did not ask for usage, so it gets no usage chunk, but the gateway asked upstream for it.
    assert all(c.choices for c in chunks)
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}
    request_id = stream.response.headers["x-request-id"]
    assert wait_for(lambda: len(logs_for(request_id)) == 1)
    log = logs_for(request_id)[0]
    assert log.stream and log.status_code == 200
    assert log.completion_tokens == 6 and log.prompt_tokens > 0


def test_stream_chunks_conform_to_the_openai_spec_and_keep_usage_when_asked(gateway, acme, mint):
    key = mint(acme)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


def test_embeddings_and_models_work_with_the_sdk(gateway, acme, mint):
    key = mint(acme, models=["embed", "gpt-4o-mini"])
    client = client_for(gateway, key)
    raw = client.embeddings.with_raw_response.create(model="embed", input=["a", "b"], encoding_format="float")
    validate(json.loads(raw.http_response.content), "CreateEmbeddingResponse")
    assert len(raw.parse().data) == 2
    models = client.models.list()
    assert sorted(m.id for m in models.data) == ["embed", "gpt-4o-mini"]
    validate(models.model_dump(), "ListModelsResponse")
    assert client.models.retrieve("embed").id == "embed"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("local")


def test_the_builtin_mock_serves_chat_streams_and_base64_embeddings(gateway, acme, mint):
    client = client_for(gateway, mint(acme))
    completion = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "ping"}])
    assert "ping" in completion.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "ping"}], stream=True
        )
        if c.choices
    )
    assert streamed == completion.choices[0].message.content
    # The SDK asks for base64 embeddings by default and decodes them.
    acme_models = client.embeddings.create(model="local", input="x")
    assert len(acme_models.data[0].embedding) == 16


def test_api_key_header_is_accepted_like_azure_clients_send_it(gateway, acme, mint):
    response = httpx.get(f"{gateway.url}/v1/models", headers={"api-key": mint(acme)})
    assert response.status_code == 200


def test_x_api_key_authenticates_on_every_v1_route_like_anthropic_clients_send_it(gateway, acme, mint):
    key = {"x-api-key": mint(acme)}
    assert httpx.get(f"{gateway.url}/v1/models", headers=key).status_code == 200
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=key,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200, chat.text
    assert httpx.get(f"{gateway.url}/v1/models", headers={"x-api-key": "sk-gw-wrong"}).status_code == 401


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer sk-gw-not-a-real-key"}, "invalid_api_key"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, "missing_api_key"),
        ({"Authorization": "Bearer sk-proj-openai-key"}, "invalid_api_key"),
    ],
)
def test_missing_or_unknown_keys_get_401_in_openai_format(gateway, acme, headers, code):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )
    assert response.status_code == 401
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == code


def test_revoked_and_expired_keys_get_401(gateway, acme, mint):
    from datetime import timedelta

    from django.utils import timezone

    from tenants.audit import Actor
    from tenants.models import VirtualKey
    from tenants.services import virtual_key_revoke, virtual_key_update

    revoked = mint(acme, name="old")
    virtual_key_revoke(acme, key=VirtualKey.objects.get(name="old"), actor=Actor.cli())
    expiring = mint(acme, name="expiring")
    virtual_key_update(
        acme,
        key=VirtualKey.objects.get(name="expiring"),
        expires_at=timezone.now() - timedelta(seconds=1),
        actor=Actor.cli(),
    )
    for key, message in ((revoked, "revoked"), (expiring, "expired")):
        response = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401
        assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": "gpt-4o-mini"}).encode(), "messages"),
        (json.dumps({"model": "gpt-4o-mini", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "gpt-4o-mini", "messages": ["hi"]}).encode(), "messages[0]"),
        (json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}).encode(), "stream"),
        (json.dumps({"model": 7, "messages": [{"role": "user"}]}).encode(), "model"),
        (json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user"}], "max_tokens": -1}).encode(), "max_tokens"),
    ],
)
def test_malformed_requests_get_400_naming_the_parameter(gateway, acme, mint, upstream, body, param):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {mint(acme)}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_embeddings_need_an_input(gateway, acme, mint):
    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "embed", "input": []},
        headers={"Authorization": f"Bearer {mint(acme)}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_wrong_method_and_unknown_paths_answer_in_openai_format(gateway, acme, mint):
    key = mint(acme)
    response = httpx.get(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 405
    validate(response.json(), "ErrorResponse")
    response = httpx.post(f"{gateway.url}/v1/assistants", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404
    validate(response.json(), "ErrorResponse")


@pytest.mark.parametrize(
    ("model", "status", "error_class"),
    [
        ("limited", 429, openai.RateLimitError),
        ("broken", 500, openai.InternalServerError),
        ("bad-temp", 400, openai.BadRequestError),
    ],
)
def test_upstream_errors_pass_through_with_their_status(gateway, acme, mint, model, status, error_class):
    client = client_for(gateway, mint(acme))
    with pytest.raises(error_class) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    response = info.value.response
    assert response.status_code == status
    validate(response.json(), "ErrorResponse")
    if status == 429:
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    request_id = response.headers["x-request-id"]
    assert wait_for(lambda: len(logs_for(request_id)) == 1)
    assert logs_for(request_id)[0].status_code == status


def test_a_non_json_upstream_error_is_wrapped_in_openai_format(gateway, acme, mint):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "html", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {mint(acme)}"},
    )
    assert response.status_code == 502
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "upstream_502"


def test_an_unreachable_upstream_is_a_502_and_is_logged(gateway_factory, make_tenant, mint):
    from tenants.config import apply_config
    from tests.helpers import free_port

    tenant = make_tenant("deadend")
    apply_config(
        "tenant: deadend\nproviders:\n  - name: gone\n    kind: openai-compatible\n"
        f"    base_url: http://127.0.0.1:{free_port()}/v1\nmodels:\n  - name: m\n    deployments:\n"
        "      - provider: gone\n        model: m\n"
    )
    gateway = gateway_factory()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {mint(tenant)}"},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"


def test_the_client_request_id_is_kept(gateway, acme, mint):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {mint(acme)}", "x-request-id": "trace-abc-123"},
    )
    assert response.headers["x-request-id"] == "trace-abc-123"
    assert wait_for(lambda: len(logs_for("trace-abc-123")) == 1)


def test_an_oversized_body_is_refused_with_413_before_it_is_read(gateway_factory, acme, mint):
    gateway = gateway_factory(extra_env={"GATEWAY_MAX_BODY_BYTES": "1000"})
    key = mint(acme)
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=big, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 413
    validate(response.json(), "ErrorResponse")

    def chunked():
        for _ in range(10):
            yield b"x" * 500

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", content=chunked(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_non_ascii_request_id_is_replaced_not_fatal(gateway, acme, mint):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {mint(acme)}", "x-request-id": "caf\u00e9-1".encode()},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
