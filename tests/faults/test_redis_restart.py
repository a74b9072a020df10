"""A Redis that restarts with its data (AOF) while calls are in flight: their settlements fail during
the outage and are retried once the limiter answers again, so the budget counter does not stay below
what was spent for the rest of the period. Driven in process against a Redis this test starts, stops
and starts again on the same port and data directory."""

from __future__ import annotations

import asyncio

import pytest
import redis

from proxy import admission, limits
from proxy.limits import BudgetCheck, RedisLimiter
from tests.helpers import free_port
from tests.helpers.redis_server import start_redis


@pytest.fixture
def restartable_redis(tmp_path, monkeypatch):
    port = free_port()
    procs = [start_redis(port, tmp_path, aof=True)]
    url = f"redis://127.0.0.1:{port}/0"
    limiter = RedisLimiter(url)
    monkeypatch.setattr(admission, "limiter", lambda: limiter)
    monkeypatch.setattr(limits, "_limiter", limiter)

    def restart() -> None:
        procs.append(start_redis(port, tmp_path, aof=True))

    yield procs, url, restart
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_settlements_that_failed_during_the_outage_are_applied_when_redis_is_back(restartable_redis):
    procs, url, restart = restartable_redis
    counter = "gw:b:restart-test:p"
    redis.Redis.from_url(url).set(counter, 0)
    alice_budget = BudgetCheck(1, counter, 10**12, True, (), "key:alice", "p")

    async def scenario() -> int:
        lim = admission.limiter()
        ok, reservation = await lim.admit("alice-1", [], 0, None, [alice_budget], 5_000)
        assert ok.ok and reservation is not None
        procs[0].terminate()  # Redis stops mid-call; its data stays on disk
        procs[0].wait(10)
        await admission.settle(reservation, 10, 3_000)  # fails: Redis is away
        assert len(admission.unsettled) == 1
        restart()
        again, second = await lim.admit("alice-2", [], 0, None, [alice_budget], 5_000)
        assert again.ok
        admission.outage.ok()  # what the admission path does after a successful check
        for _ in range(100):
            if not admission.unsettled:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        await admission.settle(second, 10, 2_000)
        return int(redis.Redis.from_url(url).get(counter))

    admission.unsettled.clear()
    spent = asyncio.run(scenario())
    assert spent == 5_000  # both calls' spend, the first one's applied after the restart
    assert not admission.unsettled
