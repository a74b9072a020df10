"""Live call logs over /ws/logs/: each tenant's calls reach its own people only, per flushed batch."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import channels
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import Client

from gateway_project.asgi import application
from observability.consumers import SESSION_TENANT
from observability.live import LiveSink
from observability.logbuffer import DatabaseSink, LogBuffer
from observability.models import CallLog
from tenants.audit import Actor
from tenants.models import Membership, Role
from tenants.services import virtual_key_create
from tests.helpers.billing import record

if importlib.util.find_spec("daphne") is None and "channels.testing" not in sys.modules:
    # channels.testing's package __init__ imports daphne for its live-server test case, which we do not
    # install; load the package without it so its WebsocketCommunicator module imports on its own.
    _testing = types.ModuleType("channels.testing")
    _testing.__path__ = [str(Path(channels.__file__).parent / "testing")]
    sys.modules["channels.testing"] = _testing
from channels.testing.websocket import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://127.0.0.1:8000"


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def run(coro):
    """asyncio.run, closing the database connections of its worker threads at the end."""

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        try:
            return await coro
        finally:
            await loop.run_in_executor(None, connections.close_all)
            await sync_to_async(connections.close_all)()  # the thread of database_sync_to_async

    return asyncio.run(main())


async def open_socket(path: str = "/ws/logs/", *, cookie: bytes | None = None, origin: bytes | None = ORIGIN):
    headers = [(b"origin", origin)] if origin else []
    if cookie:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def receive_calls(communicator) -> list[dict]:
    message = await communicator.receive_json_from(timeout=3)
    assert message["type"] == "calls"
    return message["calls"]


@pytest.fixture
def carol(acme, django_user_model):
    """A `member` of acme: she sees the calls of her own keys only."""
    user = django_user_model.objects.create_user(username="carol", email="carol@acme.test", password="pw-carol-123!")
    Membership.objects.create(user=user, tenant=acme, role=Role.MEMBER)
    return user


def test_each_socket_receives_its_own_tenants_calls_and_a_member_only_her_keys(alice, bob, carol, acme, globex):
    alice_key, _ = virtual_key_create(acme, name="web", actor=Actor(user=alice))
    carol_key, _ = virtual_key_create(acme, name="carols-notebook", actor=Actor(user=carol))
    globex_key, _ = virtual_key_create(globex, name="globex-app", actor=Actor(user=bob))
    calls = [
        record(acme, alice_key, cost=1_500_000_000, user="u-alice"),
        record(acme, carol_key, cost=None),
        record(globex, globex_key, cost=7),
    ]
    for row, rid in zip(calls, ["acme-web", "acme-carol", "globex-1"], strict=True):
        row["request_id"] = rid
    cookies = {name: session_cookie(user) for name, user in [("alice", alice), ("bob", bob), ("carol", carol)]}

    async def go():
        sockets = {}
        for name, tenant in [("alice", "acme"), ("bob", "globex"), ("carol", "acme")]:
            communicator, connected = await open_socket(f"/ws/logs/?tenant={tenant}", cookie=cookies[name])
            assert connected, name
            hello = await communicator.receive_json_from(timeout=3)
            assert hello["type"] == "hello" and hello["tenant"] == tenant
            sockets[name] = communicator
        assert "carols-notebook" in hello["keys"] and "web" not in hello["keys"]  # carol's socket came last

        # The real path: a flush of the log buffer stores the batch, then fans it out from the flush thread.
        buffer = LogBuffer(sink=DatabaseSink(), fanout=[LiveSink()])
        for row in calls:
            buffer.add(row)
        assert await sync_to_async(buffer.flush_sync, thread_sensitive=False)() == 3

        alice_sees = await receive_calls(sockets["alice"])
        carol_sees = await receive_calls(sockets["carol"])
        bob_sees = await receive_calls(sockets["bob"])
        for communicator in sockets.values():
            assert await communicator.receive_nothing(timeout=0.3)
            await communicator.disconnect()
        return alice_sees, carol_sees, bob_sees

    alice_sees, carol_sees, bob_sees = run(go())
    assert [c["request_id"] for c in alice_sees] == ["acme-web", "acme-carol"]
    web = alice_sees[0]
    assert (web["key"], web["model"], web["status"], web["end_user"]) == ("web", "gpt-4o-mini", 200, "u-alice")
    assert web["cost_usd"] == "0.0015"  # exact decimal string, never a float
    assert (web["total_tokens"], web["latency_ms"], web["deployment"]) == (15, 1.0, "main/gpt-4o-mini")
    assert alice_sees[1]["cost_usd"] is None
    assert [c["request_id"] for c in carol_sees] == ["acme-carol"]
    assert [c["request_id"] for c in bob_sees] == ["globex-1"]  # never one of acme's
    assert CallLog.objects.count() == 3


def test_anonymous_foreign_origin_and_foreign_tenant_sockets_are_refused(alice, bob, acme):
    alice_cookie = session_cookie(alice)
    bob_cookie = session_cookie(bob)

    async def go():
        results = {}
        for label, kwargs in {
            "anonymous": {},
            "foreign origin": {"cookie": alice_cookie, "origin": b"https://evil.example"},
            "another port of our host": {"cookie": alice_cookie, "origin": b"http://127.0.0.1:9999"},
            "the other scheme": {"cookie": alice_cookie, "origin": b"https://127.0.0.1:8000"},
            "no origin": {"cookie": alice_cookie, "origin": None},
            "bob in acme": {"cookie": bob_cookie, "path": "/ws/logs/?tenant=acme"},
            "alice in acme": {"cookie": alice_cookie, "path": "/ws/logs/?tenant=acme"},
        }.items():
            communicator, connected = await open_socket(**kwargs)
            results[label] = connected
            if connected:
                await communicator.disconnect()
        return results

    assert run(go()) == {
        "anonymous": False,
        "foreign origin": False,
        "another port of our host": False,
        "the other scheme": False,
        "no origin": False,
        "bob in acme": False,
        "alice in acme": True,
    }


def test_the_live_page_sets_the_current_tenant_the_socket_falls_back_to(alice, bob, acme, globex):
    client = Client()
    client.force_login(alice)
    response = client.get("/t/acme/logs/live/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-socket="/ws/logs/?tenant=acme"' in body and "/static/js/live_logs." in body
    assert "<script>" not in body  # the CSP allows our static files only
    assert client.session[SESSION_TENANT] == "acme"
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()

    bob_client = Client()
    bob_client.force_login(bob)
    assert bob_client.get("/t/acme/logs/live/").status_code == 404

    async def go():
        communicator, connected = await open_socket("/ws/logs/", cookie=cookie)
        assert connected
        hello = await communicator.receive_json_from(timeout=3)
        await communicator.disconnect()
        return hello

    assert run(go())["tenant"] == "acme"


def test_an_idle_socket_stays_open_past_the_channel_layers_wait_and_still_gets_calls(alice, acme):
    """A quiet tenant sends nothing for minutes: the socket must outlive the Redis channel layer's
    blocking wait for a message (BZPOPMIN, 5 s). When the layer's reads had redis-py's default 5 s read
    timeout, that wait timed out instead, and the idle consumer died with "Timeout reading from Redis".
    Without REDIS_URL the layer is in memory, and the test only checks the socket stays usable."""
    alice_key, _ = virtual_key_create(acme, name="web", actor=Actor(user=alice))
    row = record(acme, alice_key, cost=7)
    row["request_id"] = "after-the-quiet"
    cookie = session_cookie(alice)

    async def go():
        communicator, connected = await open_socket("/ws/logs/?tenant=acme", cookie=cookie)
        assert connected
        assert (await communicator.receive_json_from(timeout=3))["type"] == "hello"
        assert await communicator.receive_nothing(timeout=6.5)  # more than one blocking wait, nothing sent

        await communicator.send_json_to({"type": "ping"})
        assert await communicator.receive_json_from(timeout=3) == {"type": "pong"}
        buffer = LogBuffer(sink=DatabaseSink(), fanout=[LiveSink()])
        buffer.add(row)
        assert await sync_to_async(buffer.flush_sync, thread_sensitive=False)() == 1
        calls = await receive_calls(communicator)
        await communicator.disconnect()
        return calls

    assert [c["request_id"] for c in run(go())] == ["after-the-quiet"]
