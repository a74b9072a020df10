"""Scores of calls through POST /v1/feedback, in process: Alice's acme defines `helpfulness` (1-5) and
has the built-in `thumbs`; her app scores its own call right after the answer (before the call's row is
stored: the feedback waits for it), a later score replaces the earlier, bad input is a 400 naming the
field, Bob's globex key cannot score Alice's call, and the management API shows and filters scores. Admin
keys: Alice's app key scores only its own calls (another key's call is the 404 another tenant's call gets),
her admin key the calls of every acme key; Bob's admin key in globex still cannot score Alice's calls."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest
from django.test import Client, RequestFactory

from observability.logbuffer import buffer
from observability.models import CallLog, CallScore
from proxy import background as tasks
from proxy import lifecycle, pipeline, views
from proxy.configcache import state
from tenants.audit import Actor
from tenants.config import apply_config, export_config
from tenants.models import Role, VirtualKey
from tenants.services import management_token_create

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: {slug}
name: {slug} Corp
providers:
  - {{name: mock, kind: mock}}
models:
  - name: local
    deployments: [{{provider: mock, model: mock-chat}}]
{extra}
"""
SCORES = """scores:
  - {name: helpfulness, kind: numeric, min: 1, max: 5, description: How helpful the answer was}
  - {name: tone, kind: categorical, values: [-1, 0, 1]}
"""


@pytest.fixture
def people(mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)
    acme, _ = apply_config(YAML.format(slug="acme", extra=SCORES))
    globex, _ = apply_config(YAML.format(slug="globex", extra=""))
    state.clear()
    return {"acme": acme, "globex": globex, "alice": mint(acme, name="alice-app"), "bob": mint(globex, name="bob-app")}


@pytest.fixture
def admins(people, mint, settings):
    # The calls' rows are written before any score is sent here: a refused score need not wait the default
    # 5 s for a row that will never match.
    settings.GATEWAY_RESPONSE_STORE_WAIT = 0.5
    return {
        **people,
        "alice_batch": mint(people["acme"], name="alice-batch"),
        "alice_admin": mint(people["acme"], name="alice-admin", admin=True),
        "bob_admin": mint(people["globex"], name="bob-admin", admin=True),
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

    return asyncio.run(go())


def _feedback(secret: str, body: dict) -> tuple[int, dict]:
    request = RequestFactory().post(
        "/v1/feedback", data=orjson.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    response = asyncio.run(views.feedback(request))
    return response.status_code, orjson.loads(response.content)


def test_alice_scores_her_call_at_once_and_a_later_score_replaces_it(people):
    call_id = _chat(people["alice"])
    # The call's row is not stored yet: the log writer stores it 0.3 s later, and the feedback waits.
    writer = threading.Timer(0.3, buffer.flush_sync)
    writer.start()
    started = time.perf_counter()
    status, body = _feedback(people["alice"], {"call_id": call_id, "value": 1})
    writer.join()
    assert status == 200, body
    assert body["name"] == "thumbs" and body["value"] == 1 and time.perf_counter() - started >= 0.25
    status, _ = _feedback(people["alice"], {"call_id": call_id, "value": 0, "comment": "wrong city"})
    assert status == 200
    (score,) = CallScore.objects.filter(call_id=call_id, name="thumbs")
    assert score.value == 0 and score.comment == "wrong city"
    assert _feedback(people["alice"], {"call_id": call_id, "name": "helpfulness", "value": 4})[0] == 200
    assert _feedback(people["alice"], {"call_id": call_id, "name": "tone", "value": -1})[0] == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"value": 1}, "call_id"),
        ({"call_id": "x", "name": "helpfulness", "value": 7}, "value"),
        ({"call_id": "x", "name": "tone", "value": 0.5}, "value"),
        ({"call_id": "x", "value": 2}, "value"),  # thumbs is 0 or 1
        ({"call_id": "x", "name": "stars", "value": 1}, "name"),
        ({"call_id": "x", "value": 1, "weight": 2}, "weight"),
        ({"call_id": "x", "value": "good"}, "value"),
        ({"call_id": "x", "value": 1, "bogus": 1}, "bogus"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(people, body, param):
    status, error = _feedback(people["alice"], body)
    assert status == 400 and error["error"]["param"] == param, error


def test_bob_cannot_score_alices_call_and_unknown_calls_are_404(people, settings):
    settings.GATEWAY_RESPONSE_STORE_WAIT = 0.5  # Alice's row is written: Bob's refusal need not wait 5 s for it
    call_id = _chat(people["alice"])
    buffer.flush_sync()
    status, error = _feedback(people["bob"], {"call_id": call_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found"
    old = f"call_{int((time.time() - 60) * 1000):012x}{'0' * 16}"
    started = time.perf_counter()
    assert _feedback(people["alice"], {"call_id": old, "value": 1})[0] == 404
    assert time.perf_counter() - started < 0.5  # an old id is not waited for
    assert not CallScore.objects.exists()


def test_scores_are_in_the_management_api_and_the_yaml(people):
    first, second = _chat(people["alice"]), _chat(people["alice"])
    buffer.flush_sync()
    assert _feedback(people["alice"], {"call_id": first, "value": 0})[0] == 200
    assert _feedback(people["alice"], {"call_id": second, "value": 1})[0] == 200
    acme = people["acme"]
    _token, secret = management_token_create(acme, name="ci", role=Role.ADMIN, actor=Actor.cli())
    api = Client(headers={"Authorization": f"Bearer {secret}"})
    rows = api.get("/api/v1/calls/", {"score.thumbs": "0"}).json()["results"]
    assert len(rows) == 1
    detail = api.get(f"/api/v1/calls/{rows[0]['id']}/").json()
    assert detail["scores"] == [{"name": "thumbs", "value": 0.0, "weight": 1.0, "source": "feedback", "comment": ""}]
    exported = export_config(acme)
    assert "helpfulness" in exported and "categorical" in exported
    apply_config(exported)  # round trip: nothing changes
    assert api.get("/api/v1/calls/", {"score.thumbs": "x"}).status_code == 400


def _stored_chat(secret: str) -> str:
    """A call whose log row is already written."""
    call_id = _chat(secret)
    buffer.flush_sync()
    return call_id


def test_alices_app_key_cannot_score_a_call_made_with_her_other_key(admins):
    call_id = _stored_chat(admins["alice_batch"])
    status, error = _feedback(admins["alice"], {"call_id": call_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found", error
    assert error["error"]["type"] == "invalid_request_error"  # OpenAI's error shape, as for another tenant's call
    assert not CallScore.objects.exists()


def test_alices_admin_key_scores_the_calls_of_every_acme_key(admins):
    by_call_id = _stored_chat(admins["alice"])
    status, body = _feedback(admins["alice_admin"], {"call_id": by_call_id, "value": 1})
    assert status == 200, body
    (score,) = CallScore.objects.filter(call_id=by_call_id)
    # The score belongs to the call (and its key); the admin key is recorded as the one that scored it.
    assert score.virtual_key_id == VirtualKey.objects.get(name="alice-app").id
    assert score.scored_by_key_id == VirtualKey.objects.get(name="alice-admin").id

    request_id = CallLog.objects.get(call_id=_stored_chat(admins["alice_batch"])).request_id
    status, body = _feedback(admins["alice_admin"], {"request_id": request_id, "value": 0})
    assert status == 200 and body["request_id"] == request_id, body


def test_bobs_admin_key_cannot_score_alices_calls(admins):
    call_id = _stored_chat(admins["alice"])
    status, error = _feedback(admins["bob_admin"], {"call_id": call_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found", error
    request_id = CallLog.objects.get(call_id=call_id).request_id
    status, error = _feedback(admins["bob_admin"], {"request_id": request_id, "value": 1})
    assert status == 404 and error["error"]["code"] == "call_not_found", error
    assert not CallScore.objects.exists()
