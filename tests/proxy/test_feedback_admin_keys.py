"""Admin keys and POST /v1/feedback: Alice's acme has an app key and an admin key. Her app key scores only
its own calls (another key's call is the 404 another tenant's call gets); her admin key scores the calls
of every acme key; Bob's admin key in globex still cannot score Alice's calls."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from observability.models import CallLog, CallScore
from proxy import background as tasks
from proxy import lifecycle, pipeline, views
from proxy.configcache import state
from tenants.config import apply_config
from tenants.models import VirtualKey

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: {slug}
name: {slug} Corp
providers:
  - {{name: mock, kind: mock}}
models:
  - name: local
    deployments: [{{provider: mock, model: mock-chat}}]
"""


@pytest.fixture
def people(mint, monkeypatch, settings):
    monkeypatch.setattr(lifecycle, "_started", True)
    # The calls' rows are written before any score is sent here: a refused score need not wait the default
    # 5 s for a row that will never match.
    settings.GATEWAY_RESPONSE_STORE_WAIT = 0.5
    acme, _ = apply_config(YAML.format(slug="acme"))
    globex, _ = apply_config(YAML.format(slug="globex"))
    state.clear()
    return {
        "alice_app": mint(acme, name="alice-app"),
        "alice_batch": mint(acme, name="alice-batch"),
        "alice_admin": mint(acme, name="alice-admin", admin=True),
        "bob_admin": mint(globex, name="bob-admin", admin=True),
    }


def _chat(secret: str) -> str:
    async def go():
        request = RequestFactory().post(
            "/v1/chat/completions",
            data=orjson.dumps({"model": "local", "messages": [{"role": "user", "content": "Hi"}]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        response = await pipeline.handle(request, "chat/completions")
        await tasks.drain()
        assert response.status_code == 200
        return response["x-gateway-call-id"]

    call_id = asyncio.run(go())
    buffer.flush_sync()
    return call_id


def _request_id_of(call_id: str) -> str:
    return CallLog.objects.get(call_id=call_id).request_id


def _feedback(secret: str, body: dict) -> tuple[int, dict]:
    request = RequestFactory().post(
        "/v1/feedback", data=orjson.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    response = asyncio.run(views.feedback(request))
    return response.status_code, orjson.loads(response.content)


def test_alices_app_key_cannot_score_a_call_made_with_her_other_key(people):
    call_id = _chat(people["alice_batch"])
    status, error = _feedback(people["alice_app"], {"call_id": call_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found", error
    assert error["error"]["type"] == "invalid_request_error"  # OpenAI's error shape, as for another tenant's call
    assert not CallScore.objects.exists()


def test_alices_admin_key_scores_the_calls_of_every_acme_key(people):
    by_call_id = _chat(people["alice_app"])
    status, body = _feedback(people["alice_admin"], {"call_id": by_call_id, "value": 1})
    assert status == 200, body
    (score,) = CallScore.objects.filter(call_id=by_call_id)
    # The score belongs to the call (and its key); the admin key is recorded as the one that scored it.
    assert score.virtual_key_id == VirtualKey.objects.get(name="alice-app").id
    assert score.scored_by_key_id == VirtualKey.objects.get(name="alice-admin").id

    request_id = _request_id_of(_chat(people["alice_batch"]))
    status, body = _feedback(people["alice_admin"], {"request_id": request_id, "value": 0})
    assert status == 200 and body["request_id"] == request_id, body


def test_bobs_admin_key_cannot_score_alices_calls(people):
    call_id = _chat(people["alice_app"])
    status, error = _feedback(people["bob_admin"], {"call_id": call_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found", error
    request_id = _request_id_of(call_id)
    status, error = _feedback(people["bob_admin"], {"request_id": request_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found", error
    assert not CallScore.objects.exists()
