"""A database outage is not a proxy outage: with PostgreSQL unreachable (the path to it cut by the
test), Alice's key that the gateway has served keeps working from the last loaded snapshot, even past
the cache TTL; Bob's new key, never loaded, gets a clear 503 at once; /readyz says degraded; and the
calls answered during the outage are in the call log once the database is back."""

from __future__ import annotations

import time

import httpx
import pytest
from django.conf import settings

from observability.models import CallLog
from tests.faults.tcpcut import TcpCut
from tests.helpers import database_url, wait_for


@pytest.fixture
def cut():
    db = settings.DATABASES["default"]
    relay = TcpCut((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    yield relay
    relay.close()


def _chat(client: httpx.Client, secret: str) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
    )


def test_served_keys_keep_working_while_the_database_is_unreachable(gateway_factory, make_tenant, mint, cut):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    alice, bob = mint(acme, name="alice-app"), mint(globex, name="bob-app")
    url = database_url().replace(f":{settings.DATABASES['default']['PORT'] or 5432}/", f":{cut.port}/")
    server = gateway_factory(extra_env={"DATABASE_URL": url, "GATEWAY_CACHE_TTL": "1"}, redis=False)
    with httpx.Client(base_url=server.url, timeout=15) as client:
        assert _chat(client, alice).status_code == 200  # loaded
        assert client.get("/readyz").json()["status"] == "ok"  # (a load balancer probes from the start)
        cut.cut()
        time.sleep(1.5)  # past the cache TTL: the entry is due for a reload that cannot happen
        answered = []
        for _ in range(5):
            response = _chat(client, alice)
            assert response.status_code == 200, response.text
            answered.append(response.headers["x-request-id"])
        started = time.monotonic()
        refused = _chat(client, bob)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "gateway_unavailable"
        assert "has not served it before" in refused.json()["error"]["message"]
        assert time.monotonic() - started < 10
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        cut.restore()
        assert wait_for(lambda: _chat(client, bob).status_code == 200, timeout=15)
    assert wait_for(lambda: CallLog.objects.filter(request_id__in=answered).count() == 5, timeout=20)


@pytest.mark.django_db(transaction=True)
def test_a_loader_thread_whose_connection_broke_loads_again_once_the_database_is_back(acme, mint):
    """The database restarts under a loader thread: that thread's connection is dead, and Django drops
    dead connections only on request signals, which the proxy's threads never see. With one executor
    thread every load lands on it: the first load after the restart fails (the key is not served, 503),
    the next one reconnects and loads Alice's key."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import psycopg
    from django.db import connection

    from proxy.configcache import ConfigState, ConfigUnavailable
    from tenants.models import hash_secret

    alice = hash_secret(mint(acme, name="alice-app"))
    pool = ThreadPoolExecutor(1)

    def connection_close() -> None:  # run in the pool's thread: that thread's connection
        connection.close()

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(pool)
        state = ConfigState()
        assert (await state.key(alice)) is not None
        backend = await asyncio.get_running_loop().run_in_executor(None, lambda: connection.connection.info.backend_pid)
        with psycopg.connect(database_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        state.keys.clear()  # not loaded in this process: it must come from the database
        with pytest.raises(ConfigUnavailable):
            await state.key(alice)
        state._retry_at = 0.0  # past the pause after a failure
        try:
            assert (await state.key(alice)) is not None
        finally:
            await asyncio.get_running_loop().run_in_executor(None, connection_close)

    asyncio.run(scenario())  # shuts the executor down at the end
