"""Faults injected mid-load into two gateway processes sharing PostgreSQL and Redis, as an operator
would try them: mixed JSON and streamed calls at c=16 with a hard budget on Alice's tenant that
refuses part of them, a fault at a third of the way, then the books:

1. every 200 the clients got is one call-log row (matched by request id);
2. the ledger equals the call logs;
3. the Redis budget counter equals the ledger (to the nanodollar of rounding per call);
4. no reservation or parallel slot is left held;
and the hard budget was not exceeded.

Faults: Redis killed without persistence and started again (counters, reservations and the call-log
stream's backlog are gone), and one gateway process SIGKILLed with calls in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import redis
from django.db.models import Sum

from billing.models import RateLimit, SpendLedger
from billing.periods import period_key
from billing.services import budget_upsert
from observability.models import CallLog
from proxy.admission import budget_counter_key
from tenants.audit import Actor
from tenants.config import apply_config
from tenants.models import VirtualKey
from tests.e2e.test_billing_money import money_yaml
from tests.helpers import UPSTREAM_KEY, free_port, wait_for
from tests.helpers.redis_server import start_redis

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = 240
CONCURRENCY = 16
FAST = {
    "GATEWAY_SPOOL_GRACE": "1",
    "GATEWAY_SPOOL_SEGMENT": "0.5",
    "GATEWAY_LEASE_TTL": "2",
    "GATEWAY_REBUILD_DELAY": "2",
}


def _body(i: int) -> dict:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": f"count to three ({i})"}],
        "stream": i % 4 == 0,
        **({"stream_options": {"include_usage": True}} if i % 4 == 0 else {}),
    }


def _load(urls: list[str], secret: str, fault, fault_after: int) -> dict[str, list]:
    """CALLS calls over the gateways at CONCURRENCY; `fault()` runs (in a thread) once `fault_after`
    have been answered. Returns request ids of the 200s, and the other statuses."""
    out: dict[str, list] = {"ok": [], "refused": [], "failed": []}
    done = 0
    fired = threading.Event()

    async def run() -> None:
        nonlocal done
        gate = asyncio.Semaphore(CONCURRENCY)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> None:
                nonlocal done
                async with gate:
                    url = urls[i % len(urls)]
                    try:
                        response = await client.post(
                            f"{url}/v1/chat/completions", json=_body(i), headers={"Authorization": f"Bearer {secret}"}
                        )
                        body = await response.aread()
                    except httpx.HTTPError:
                        out["failed"].append(i)  # a killed process's connections: never answered
                        return
                    finally:
                        done += 1
                        if done >= fault_after and not fired.is_set():
                            fired.set()
                            threading.Thread(target=fault).start()
                    if response.status_code == 200 and b'"error"' not in body:
                        out["ok"].append(response.headers["x-request-id"])
                    elif response.status_code == 429:
                        out["refused"].append(response.json()["error"]["code"])
                    else:
                        out["failed"].append(response.status_code)

            await asyncio.gather(*(one(i) for i in range(CALLS)))

    asyncio.run(run())
    return out


def _the_books_balance(tenant, budget, ok_ids: list[str], redis_url: str) -> None:
    # 1. client 200s = call-log rows
    assert wait_for(
        lambda: CallLog.objects.filter(tenant=tenant, request_id__in=ok_ids).count() == len(ok_ids), timeout=30
    ), (CallLog.objects.filter(tenant=tenant, request_id__in=ok_ids).count(), len(ok_ids))
    assert CallLog.objects.filter(tenant=tenant, request_id__in=ok_ids, status_code=200).count() == len(ok_ids)
    # 2. ledger = call logs
    logged = CallLog.objects.filter(tenant=tenant).aggregate(s=Sum("cost_picodollars"))["s"]
    billed = SpendLedger.objects.filter(tenant=tenant).aggregate(s=Sum("cost_picodollars"))["s"]
    assert logged == billed
    # 3. counter = ledger (each settlement rounds its call up to the nanodollar)
    client = redis.Redis.from_url(redis_url)
    counter = budget_counter_key(budget.id, period_key("month", datetime.now(UTC), UTC))
    calls = CallLog.objects.filter(tenant=tenant, cost_picodollars__gt=0).count()

    def counter_matches() -> bool:
        raw = client.get(counter)
        return raw is not None and 0 <= int(raw) * 1000 - billed < 1000 * max(calls, 1)

    assert wait_for(counter_matches, timeout=15), (client.get(counter), billed)

    # 4. no reservation or parallel slot left held
    def nothing_held() -> bool:
        reserved = [int(client.hget(k, "_total") or 0) for k in client.scan_iter("gw:b:*:res")]
        slots = [client.zcard(k) for k in client.scan_iter("gw:par:*")]
        return not any(reserved) and not any(slots)

    assert wait_for(nothing_held, timeout=15)
    # and the hard budget held
    assert Decimal(billed) / 10**12 <= budget.limit_usd


@pytest.fixture
def acme(upstream, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    tenant, _ = apply_config(money_yaml(upstream.base_url))
    # Part of the calls fit (hard budgets reserve each call's worst case, then settle its cost).
    budget, _ = budget_upsert(
        tenant, scope="tenant", limit_usd=Decimal("5"), period="month", mode="hard", actor=Actor.cli()
    )
    return tenant, budget


def _alice_key(tenant, mint) -> str:
    """Alice's key, with a parallel cap the load reaches now and then (slots to leak, if any did)."""
    secret = mint(tenant, name="alice-app")
    key = VirtualKey.objects.get(tenant=tenant, name="alice-app")
    RateLimit.objects.create(tenant=tenant, scope="key", ref=str(key.id), max_parallel=CONCURRENCY - 2)
    return secret


def _kill_tree(pid: int) -> None:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def test_redis_killed_without_persistence_mid_load(gateway_factory, acme, mint, tmp_path):
    tenant, budget = acme
    secret = _alice_key(tenant, mint)
    port = free_port()
    (tmp_path / "redis-data").mkdir()
    procs = [start_redis(port, tmp_path / "redis-data")]
    url = f"redis://127.0.0.1:{port}/0"
    env = {"REDIS_URL": url, **FAST}
    first, second = gateway_factory(extra_env=env, redis=False), gateway_factory(extra_env=env, redis=False)

    def fault() -> None:
        procs[0].kill()  # counters, reservations and the stream's backlog die with it
        procs[0].wait(5)
        procs.append(start_redis(port, tmp_path / "redis-data"))

    try:
        result = _load([first.url, second.url], secret, fault, CALLS // 3)
        assert result["ok"] and result["refused"], result
        assert "budget_exceeded" in result["refused"]
        assert set(result["refused"]) <= {"budget_exceeded", "rate_limit_exceeded"}  # the parallel cap
        _the_books_balance(tenant, budget, result["ok"], url)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)


def test_a_gateway_process_sigkilled_mid_load(gateway_factory, acme, mint, settings):
    tenant, budget = acme
    secret = _alice_key(tenant, mint)
    first, second = gateway_factory(extra_env=FAST), gateway_factory(extra_env=FAST)

    def fault() -> None:
        _kill_tree(first.proc.pid)

    result = _load([first.url, second.url], secret, fault, CALLS // 3)
    assert result["ok"] and result["failed"], result  # the killed process's calls in flight failed
    _the_books_balance(tenant, budget, result["ok"], settings.REDIS_URL)
