"""Body logging: the request (after PII redaction) and the answer are stored only when the tenant turned
it on. Driven in process through pipeline.handle with the built-in mock provider."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from observability.models import CallBody, CallLog
from observability.selectors import body_of
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tenants.config import apply_config
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: bodies
name: Bodies Corp
providers:
  - {name: mock, kind: mock}
models:
  - name: local
    deployments: [{provider: mock, model: mock-chat}]
pii:
  mode: enforce
  detectors: {email: pseudonymize}
"""


def _send(secret: str, content: str, stream: bool = False, request_id: str = "") -> tuple[int, bytes]:
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": "local", "messages": [{"role": "user", "content": content}], "stream": stream}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        **({"HTTP_X_REQUEST_ID": request_id} if request_id else {}),
    )

    async def go():
        response = await pipeline.handle(request, "chat/completions")
        if stream:
            return response.status_code, b"".join([chunk async for chunk in response.events])
        return response.status_code, response.content

    return asyncio.run(go())


@pytest.fixture
def tenant_and_secret(mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on this short-lived loop
    state.clear()
    tenant, _ = apply_config(YAML)
    yield tenant, mint(tenant)
    buffer.flush_sync()
    state.clear()


def test_bodies_are_stored_redacted_only_when_turned_on(tenant_and_secret):
    tenant, secret = tenant_and_secret
    assert _send(secret, "off: write to ann@example.com")[0] == 200
    Tenant.objects.filter(id=tenant.id).update(log_bodies=True)
    state.clear()
    assert _send(secret, "on: write to ann@example.com")[0] == 200
    status, streamed = _send(secret, "stream: write to ann@example.com", stream=True)
    assert status == 200 and b"data:" in streamed
    buffer.flush_sync()

    assert CallLog.objects.filter(tenant=tenant).count() == 3
    bodies = {b.request_id: b for b in CallBody.objects.filter(tenant_id=tenant.id)}
    assert len(bodies) == 2  # nothing for the call made while body logging was off
    logs = {log.request_id: log for log in CallLog.objects.filter(tenant=tenant)}
    for body in bodies.values():
        assert body.created_at == logs[body.request_id].created_at
        assert "ann@example.com" not in body.request_body  # stored after PII redaction
        assert "ann@example.com" not in body.response_body
        assert '"model":"local"' in body.request_body
        assert body.response_body


def test_a_reused_request_id_never_shows_one_call_the_body_of_another(tenant_and_secret, mint):
    """Erin (a member's key) reuses the id of Alice's call: each call still shows its own body."""
    tenant, alice = tenant_and_secret
    erin = mint(tenant, name="erin-app")
    Tenant.objects.filter(id=tenant.id).update(log_bodies=True)
    state.clear()
    assert _send(alice, "the confidential merger plan", request_id="req-shared")[0] == 200
    assert _send(erin, "nothing to see", request_id="req-shared")[0] == 200
    buffer.flush_sync()
    logs = list(CallLog.objects.filter(tenant=tenant, request_id="req-shared").order_by("id"))
    assert len(logs) == 2
    assert "merger" in body_of(logs[0]).request_body
    assert "merger" not in body_of(logs[1]).request_body and "nothing to see" in body_of(logs[1]).request_body


def test_json_nested_too_deep_to_log_is_a_400_not_a_retryable_503(tenant_and_secret):
    tenant, secret = tenant_and_secret
    Tenant.objects.filter(id=tenant.id).update(log_bodies=True)
    state.clear()
    # 300 levels: orjson reads them, but could not write the request back (to the upstream or the log).
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=b'{"model":"local","messages":[{"role":"user","content":"hi"}],"metadata":' + deep + b"}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    response = asyncio.run(pipeline.handle(request, "chat/completions"))
    assert response.status_code == 400, response.content
    error = orjson.loads(response.content)["error"]
    assert error["code"] == "invalid_json" and "nested too deeply (more than 128 levels)" in error["message"]
    assert "retry-after" not in response
