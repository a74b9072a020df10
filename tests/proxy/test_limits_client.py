"""The Redis limiter's own client: one pipelined connection per process, replies matched in order."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis

from proxy.limits import BudgetCheck, RateCheck, RedisLimiter

ALICE_RATES = [RateCheck("k:alice-client", 1_000, 1_000_000), RateCheck("t:acme-client", 1_000, 1_000_000)]
ALICE_BUDGET = BudgetCheck(990001, "gw:b:990001:test", 10**15, True, (50, 100), "tenant acme", "test")


@pytest.fixture
def server(settings):
    r = redis.Redis.from_url(settings.REDIS_URL)
    r.delete(*[k for scope in ("k:alice-client", "t:acme-client") for k in (f"gw:rl:{scope}:r", f"gw:rl:{scope}:t")])
    r.delete("gw:par:k:alice-client", ALICE_BUDGET.key, ALICE_BUDGET.key + ":res", ALICE_BUDGET.key + ":exp")
    r.set(ALICE_BUDGET.key, 0)
    return r


def _our_connections(server: redis.Redis, before: set[str] = frozenset()) -> list[dict]:
    """The limiter connections of this process opened since `before` (earlier tests' loops left theirs)."""
    return [c for c in server.client_list() if c.get("name") == f"gw-limiter-{os.getpid()}" and c["id"] not in before]


def _ids(server: redis.Redis) -> set[str]:
    return {c["id"] for c in _our_connections(server)}


async def _one_call(limiter: RedisLimiter, rid: str) -> list[tuple[int, int]]:
    admission, reservation = await limiter.admit(rid, ALICE_RATES, 100, ("k:alice-client", 500), [ALICE_BUDGET], 1000)
    assert admission.ok, admission
    return await limiter.settle(reservation, 80, 700)


def test_concurrent_calls_share_one_connection_and_get_their_own_replies(server, settings):
    limiter = RedisLimiter(settings.REDIS_URL)

    before = _ids(server)

    async def scenario():
        results = await asyncio.gather(*(_one_call(limiter, f"alice-{i}") for i in range(40)))
        return results, _our_connections(server, before)

    results, connections = asyncio.run(scenario())
    # redis-py's pool opened a connection per concurrent command: ~80 sockets and 80 writes for 40 calls.
    assert len(connections) == 1
    # Each settle saw its own 700 nanos land on the counter: 40 distinct (before, after) steps.
    steps = sorted(results, key=lambda r: r[0][0])
    assert [s[0] for s in steps] == [(i * 700, (i + 1) * 700) for i in range(40)]
    assert int(server.get(ALICE_BUDGET.key)) == 40 * 700
    assert server.zcard("gw:par:k:alice-client") == 0
    assert int(server.hget(ALICE_BUDGET.key + ":res", "_total")) == 0


def test_a_cancelled_call_does_not_shift_the_replies_of_the_next(server, settings):
    limiter = RedisLimiter(settings.REDIS_URL)

    async def scenario():
        admission, reservation = await limiter.admit("alice-a", ALICE_RATES, 100, None, [ALICE_BUDGET], 1000)
        settle = asyncio.ensure_future(limiter.settle(reservation, 80, 700))
        await asyncio.sleep(0)  # the settle is written...
        settle.cancel()  # ...and its caller leaves before the reply
        # The next caller must get an admission reply, not the orphaned settle's list.
        admission, _ = await limiter.admit("alice-b", ALICE_RATES, 100, None, [ALICE_BUDGET], 1000)
        return admission

    admission = asyncio.run(scenario())
    assert admission.ok
    assert admission.headers["x-ratelimit-remaining-requests"] == "998"


def test_a_lost_connection_and_a_flushed_script_cache_are_recovered(server, settings):
    limiter = RedisLimiter(settings.REDIS_URL)

    before = _ids(server)

    async def scenario():
        await _one_call(limiter, "alice-1")
        [ours] = _our_connections(server, before)
        server.client_kill_filter(_id=ours["id"])
        await asyncio.sleep(0.05)
        server.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
        after_kill = await _one_call(limiter, "alice-2")
        return after_kill, _our_connections(server, before)

    after_kill, connections = asyncio.run(scenario())
    assert after_kill == [(700, 1400)]
    assert len(connections) == 1


def test_redis_unreachable_raises_for_the_caller_to_decide(settings):
    # money.admit turns this into a 503 for hard budgets and fails open for rate limits.
    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    with pytest.raises((OSError, redis.ConnectionError)):
        asyncio.run(limiter.admit("alice-x", ALICE_RATES, 1, None, [], 0))
