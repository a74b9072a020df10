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
