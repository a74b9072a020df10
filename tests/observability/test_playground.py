"""The playground: one short-lived key per person and tenant, reused until it expires; a conversation
(system prompt, temperature, max tokens, earlier turns) sent through the gateway in process; two models
side by side with each one's latency and cost; gateway errors in their own column; bad settings as form
errors. Alice owns acme, Bob owns globex: Bob never uses acme's models nor sees acme's playground key.

acme's "gpt-4o-mini" is served by the fake OpenAI upstream (which records what it got), "local" by the
built-in mock provider, "broken" by an upstream that answers 500 (tests.helpers.ACME_MODELS).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway_project.common.crypto import decrypt
from observability import playground
from observability.logbuffer import buffer
from observability.models import CallLog, PlaygroundKey
from observability.playground import Answer, Turn, messages_for, parse_conversation, playground_key_get_or_create
from proxy import lifecycle
from proxy.configcache import state
from tenants.audit import Actor
from tenants.models import Membership, Role, VirtualKey
from tenants.services import virtual_key_revoke

# The gateway reads keys and config from threads of its own: the data must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("console_defaults", "gateway")]


@pytest.fixture
def gateway(monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    state.clear()
    yield
    buffer.flush_sync()
    state.clear()


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _send(client: Client, slug: str = "acme", **fields):
    data = {"model": "gpt-4o-mini", "message": "Hello", **fields}
    return client.post(reverse("playground-send", args=[slug]), data, headers={"HX-Request": "true"})


def _conversation(response) -> str:
    """The conversation the answered form carries to the next post (its hidden field)."""
    return response.context["form"].initial["conversation"]


def _playground_keys(tenant) -> list[VirtualKey]:
    return list(VirtualKey.objects.filter(tenant=tenant, metadata__source="playground").order_by("id"))


# --- The key: one per person and tenant, while it is valid ------------------------------------------


def test_two_sends_use_one_key_and_an_expired_or_revoked_key_is_replaced(alice, acme, upstream):
    client = _client(alice)
    assert _send(client).status_code == 200
    assert _send(client, message="Again").status_code == 200
    (key,) = _playground_keys(acme)
    assert key.created_by == alice and key.expires_at is not None
    assert timedelta(minutes=14) < key.expires_at - timezone.now() <= timedelta(minutes=15)
    # Both calls went out with that key (the call log names it).
    buffer.flush_sync()
    assert list(CallLog.objects.filter(tenant=acme).values_list("virtual_key_id", flat=True)) == [key.id, key.id]

    # Once it has expired, the next send makes a second one; the first is left to be what it was.
    VirtualKey.objects.filter(id=key.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _send(client, message="After expiry").status_code == 200
    first, second = _playground_keys(acme)
    assert first.id == key.id and second.expires_at > timezone.now()
    assert PlaygroundKey.objects.get(tenant=acme, user=alice).key_id == second.id

    # A revoked key is not reused either.
    virtual_key_revoke(acme, key=second, actor=Actor(user=alice))
    assert _send(client, message="After revocation").status_code == 200
    assert len(_playground_keys(acme)) == 3


def test_the_key_service_returns_the_same_secret_until_expiry_and_stores_it_encrypted(alice, acme):
    actor = Actor(user=alice)
    key, secret = playground_key_get_or_create(acme, actor=actor)
    again, secret_again = playground_key_get_or_create(acme, actor=actor)
    assert (again.id, secret_again) == (key.id, secret)
    slot = PlaygroundKey.objects.get(tenant=acme, user=alice)
    assert secret not in slot.secret and decrypt(slot.secret) == secret
    # A key about to expire is not handed out: a call started with it could outlive it.
    VirtualKey.objects.filter(id=key.id).update(expires_at=timezone.now() + timedelta(seconds=30))
    fresh, fresh_secret = playground_key_get_or_create(acme, actor=actor)
    assert fresh.id != key.id and fresh_secret != secret


def test_bobs_send_in_globex_never_reuses_alices_key(alice, bob, acme, globex, upstream):
    alice_key, _ = playground_key_get_or_create(acme, actor=Actor(user=alice))
    bob_client = _client(bob)
    response = _send(bob_client, "globex")
    assert response.status_code == 200
    assert "Hello from the fake upstream." in response.content.decode()
    (bob_key,) = _playground_keys(globex)
    assert bob_key.id != alice_key.id and bob_key.created_by == bob
    assert _playground_keys(acme) == [alice_key]
    # Bob's page names his key, never Alice's.
    page = bob_client.get(reverse("playground", args=["globex"])).content.decode()
    assert bob_key.prefix in page and alice_key.prefix not in page and alice_key.name not in page


# --- What a turn sends ------------------------------------------------------------------------------


def test_a_turn_sends_the_system_prompt_temperature_max_tokens_and_the_earlier_turns(alice, upstream):
    client = _client(alice)
    settings = {"system": "Answer like a pirate.", "temperature": "0.3", "max_tokens": "50"}
    first = _send(client, message="Hello", **settings)
    assert first.status_code == 200
    sent = upstream.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Hello"},
    ]
    assert (sent["temperature"], sent["max_tokens"]) == (0.3, 50)
    # The answered form keeps the settings and the conversation, and empties the message box.
    form = first.context["form"]
    assert form.initial["system"] == "Answer like a pirate." and not form.initial.get("message")

    second = _send(client, message="And again?", conversation=_conversation(first), **settings)
    assert second.status_code == 200
    assert upstream.requests[-1].body["messages"] == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello from the fake upstream."},
        {"role": "user", "content": "And again?"},
    ]
    # Both turns are shown, in order.
    page = second.content.decode()
    assert page.count('class="pg-turn"') == 2 and page.index("Hello") < page.index("And again?")
    # Without the optional settings, none is sent (the model's defaults apply).
    _send(client, message="Plain")
    assert not {"temperature", "max_tokens"} & set(upstream.requests[-1].body)


def test_new_conversation_drops_the_turns_and_keeps_the_settings(alice, upstream):
    client = _client(alice)
    first = _send(client, system="Be brief.", temperature="1")
    reset = _send(client, system="Be brief.", temperature="1", conversation=_conversation(first), reset="1")
    assert reset.status_code == 200 and 'class="pg-turn"' not in reset.content.decode()
    assert reset.context["form"].initial["system"] == "Be brief."
    assert len(upstream.requests) == 1  # resetting calls nobody


# --- Side by side -----------------------------------------------------------------------------------


def test_two_models_answer_side_by_side_with_latency_and_cost(alice, acme, upstream):
    client = _client(alice)
    response = _send(client, model="gpt-4o-mini", compare_with="local", message="Compare us")
    assert response.status_code == 200
    (turn,) = response.context["turns"]
    fake, mock = turn.answers
    assert (fake.model, fake.content) == ("gpt-4o-mini", "Hello from the fake upstream.")
    assert mock.model == "local" and mock.content.startswith("This is the gateway's mock model answering: Compare us")
    assert fake.latency_ms > 0 and mock.latency_ms > 0
    assert fake.served_by == "main/gpt-4o-mini" and mock.served_by == "mock/mock-chat"
    page = response.content.decode()
    assert 'class="pg-answers pg-side-by-side"' in page and page.count('class="pg-answer"') == 2
    assert f"{fake.latency_ms:.0f} ms" in page.replace(",", "")
    # Until the call log has the rows, each column asks for its cost again (htmx, once a second).
    assert page.count("reading the call log") == 2
    cost_url = reverse("playground-cost", args=["acme", fake.request_id])
    assert cost_url in page

    buffer.flush_sync()
    cost = client.get(cost_url, {"try": "1"}, headers={"HX-Request": "true"}).content.decode()
    assert "$" in cost and "hx-get" not in cost  # the amount, and no more asking
    assert "$" in client.get(reverse("playground-cost", args=["acme", mock.request_id])).content.decode()
    # The next turn goes to both again, each with its own earlier answer.
    _send(client, model="gpt-4o-mini", compare_with="local", message="Once more", conversation=_conversation(response))
    assert upstream.requests[-1].body["messages"][1] == {
        "role": "assistant",
        "content": "Hello from the fake upstream.",
    }


def test_the_two_models_are_asked_at_the_same_time(alice, upstream):
    client = _client(alice)
    _send(client)  # warm up: the gateway's first call in this process loads more than the others
    upstream.script("gpt-4o-mini", {"delay": 1.5}, {"delay": 1.5})
    started = time.monotonic()
    response = _send(client, model="gpt-4o-mini", compare_with="gpt-4o-mini")
    elapsed = time.monotonic() - started
    assert [a.error for a in response.context["turns"][0].answers] == ["", ""]
    assert all(a.latency_ms >= 1500 for a in response.context["turns"][0].answers)
    # One after the other would take 3 s or more; the margin is for a loaded machine.
    assert elapsed < 2.8, f"took {elapsed:.2f} s"


def test_cost_polling_stops_after_a_while_and_another_tenant_never_reads_it(alice, bob, upstream):
    response = _send(_client(alice))
    request_id = response.context["turns"][0].answers[0].request_id
    buffer.flush_sync()
    bob_client = _client(bob)
    assert bob_client.get(reverse("playground-cost", args=["acme", request_id])).status_code == 404
    through_globex = bob_client.get(reverse("playground-cost", args=["globex", request_id]))
    assert through_globex.status_code == 200 and "$" not in through_globex.content.decode()
    last = bob_client.get(reverse("playground-cost", args=["globex", request_id]), {"try": "15"}).content.decode()
    assert "not in the call log yet" in last and "hx-get" not in last


# --- Errors -------------------------------------------------------------------------------------------


def test_a_gateway_error_is_a_message_in_its_column_not_a_500(alice, upstream):
    response = _send(_client(alice), model="broken", compare_with="gpt-4o-mini")
    assert response.status_code == 200
    broken, fine = response.context["turns"][0].answers
    assert broken.error.startswith("5") and not broken.content
    assert fine.content == "Hello from the fake upstream." and not fine.error
    page = response.content.decode()
    assert 'class="alert alert-error pg-error"' in page and broken.error.split(":", 1)[1].strip() in page
    # The next turn sends the model that failed the other model's answer in its place.
    _send(
        _client(alice), model="broken", compare_with="gpt-4o-mini", message="Next", conversation=_conversation(response)
    )
    to_broken = [r.body for r in upstream.requests if r.body["model"] == "fail-500"][-1]
    assert to_broken["messages"][1] == {"role": "assistant", "content": "Hello from the fake upstream."}


def test_the_models_offered_are_those_the_playground_key_may_call(alice, acme, upstream):
    key, _ = playground_key_get_or_create(acme, actor=Actor(user=alice))
    client = _client(alice)
    assert 'value="broken"' in client.get(reverse("playground", args=["acme"])).content.decode()
    # An admin narrowed the playground key on the keys page: the list follows, and the form refuses the rest.
    VirtualKey.objects.filter(id=key.id).update(allowed_models=["local"])
    page = client.get(reverse("playground", args=["acme"])).content.decode()
    assert 'value="local"' in page and 'value="broken"' not in page
    response = _send(client, model="gpt-4o-mini")
    assert response.status_code == 200 and "model" in response.context["form"].errors
    assert not upstream.requests


def test_an_exception_while_asking_is_a_message_too(alice, upstream, monkeypatch):
    def broken_app():
        raise RuntimeError("no gateway here")

    monkeypatch.setattr(playground, "_gateway_app", broken_app)
    response = _send(_client(alice))
    assert response.status_code == 200
    assert response.context["turns"][0].answers[0].error == "The gateway could not be asked: RuntimeError."


# --- The form -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": "3"}, "temperature"),
        ({"temperature": "-0.1"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"temperature": "nan"}, "temperature"),
        ({"max_tokens": "0"}, "max_tokens"),
        ({"max_tokens": "1000000"}, "max_tokens"),
        ({"message": ""}, "message"),
        ({"model": "gpt-5-imaginary"}, "model"),
        ({"conversation": "not json"}, "conversation"),
        ({"conversation": json.dumps([{"user": "hi", "answers": []}])}, "conversation"),
    ],
)
def test_bad_settings_are_form_errors_and_nothing_is_sent(alice, acme, upstream, fields, field):
    response = _send(_client(alice), **fields)
    assert response.status_code == 200  # htmx swaps it in, errors and all
    assert field in response.context["form"].errors
    assert not upstream.requests and not _playground_keys(acme)


def test_a_temperature_out_of_bounds_reads_clearly(alice, upstream):
    response = _send(_client(alice), temperature="3", message="Keep this")
    page = response.content.decode()
    assert "Ensure this value is less than or equal to 2" in page
    assert "Keep this" in page  # the message is not lost


def test_a_conversation_is_bounded(alice, upstream):
    turn = {"user": "hi", "answers": [{"model": "gpt-4o-mini", "content": "hello", "error": ""}]}
    full = json.dumps([turn] * playground.MAX_TURNS)
    response = _send(_client(alice), conversation=full)
    assert f"up to {playground.MAX_TURNS} turns" in str(response.context["form"].errors["conversation"])
    with pytest.raises(ValueError, match="too long"):
        parse_conversation("x" * (playground.MAX_CONVERSATION_CHARS + 1))
    with pytest.raises(ValueError, match="could not be read"):
        parse_conversation(json.dumps([{**turn, "answers": [{"model": "m", "latency_ms": "fast"}]}]))
    assert not upstream.requests


def test_each_model_sees_its_own_answers_and_the_first_stands_in_where_it_has_none():
    turns = [
        Turn("one", [Answer("a", content="a1"), Answer("b", content="b1")]),
        Turn("two", [Answer("a", content="a2"), Answer("b", error="500: down")]),
        Turn("three", [Answer("a", content="a3")]),  # b was added after this turn
        Turn("four", [Answer("a", error="429: slow down"), Answer("b", error="500: down")]),  # nobody answered
    ]
    assert messages_for("", turns, "five", 1) == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "b1"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "a3"},
        {"role": "user", "content": "five"},
    ]
    assert [m["content"] for m in messages_for("sys", turns, "five", 0)] == [
        "sys", "one", "a1", "two", "a2", "three", "a3", "five",
    ]  # fmt: skip


# --- Who may do what ------------------------------------------------------------------------------------


def test_bob_cannot_use_acmes_playground_nor_its_models(alice, bob, acme, globex, upstream):
    playground_key_get_or_create(acme, actor=Actor(user=alice))
    client = _client(bob)
    assert client.get(reverse("playground", args=["acme"])).status_code == 404
    assert _send(client, "acme").status_code == 404
    # acme's mock-served model is no model of globex's: a form error, and nothing is called or minted.
    response = _send(client, "globex", model="local")
    assert "model" in response.context["form"].errors
    page = client.get(reverse("playground", args=["globex"])).content.decode()
    assert 'value="local"' not in page and 'value="globex-secret-model"' in page
    assert not upstream.requests and not _playground_keys(globex)


def test_a_viewer_sees_the_page_but_cannot_send(acme, upstream):
    charlie = get_user_model().objects.create_user(username="charlie", email="charlie@acme.test")
    Membership.objects.create(user=charlie, tenant=acme, role=Role.VIEWER)
    client = _client(charlie)
    page = client.get(reverse("playground", args=["acme"]))
    assert page.status_code == 200 and "does not allow keys" in page.content.decode()
    assert _send(client).status_code == 403
    assert not upstream.requests and not _playground_keys(acme)
