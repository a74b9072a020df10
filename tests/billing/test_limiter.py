"""The sliding-window limiter, Redis and in-process alike, on a controlled clock."""

from __future__ import annotations

import asyncio

import pytest

from proxy import limits
from proxy.limits import LocalLimiter, RateCheck, RedisLimiter


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 1_900_000_000.0}
    monkeypatch.setattr(limits.time, "time", lambda: now["t"])
    return now


@pytest.fixture(params=["redis", "local"])
def limiter(request, settings):
    if request.param == "local":
        return LocalLimiter()
    import redis

    redis.Redis.from_url(settings.REDIS_URL).delete("gw:rl:t:tpm-test:r", "gw:rl:t:tpm-test:t")
    return RedisLimiter(settings.REDIS_URL)


def test_a_settled_token_correction_never_opens_the_window_beyond_the_limit(limiter, clock):
    rate = [RateCheck("t:tpm-test", None, 10_000)]

    async def scenario():
        ok, reservation = await limiter.admit("a", rate, 9_000, None, [], 0)
        assert ok.ok
        clock["t"] += 30
        await limiter.settle(reservation, 100, 0)  # the call used 100 tokens, not 9000
        clock["t"] += 31  # the admission bucket has left the window
        first, _ = await limiter.admit("b", rate, 9_000, None, [], 0)
        second, _ = await limiter.admit("c", rate, 9_000, None, [], 0)
        return first, second

    first, second = asyncio.run(scenario())
    assert first.ok
    assert not second.ok and second.reason == "tpm"
    assert second.headers["x-ratelimit-remaining-tokens"] == "1000"


def test_the_correction_lands_in_the_admission_bucket(limiter, clock):
    rate = [RateCheck("t:tpm-test", None, 10_000)]

    async def scenario():
        _, reservation = await limiter.admit("a", rate, 9_000, None, [], 0)
        clock["t"] += 5
        await limiter.settle(reservation, 100, 0)
        return await limiter.admit("b", rate, 9_900, None, [], 0)

    admitted, _ = asyncio.run(scenario())
    assert admitted.ok  # 100 used + 9900 = the limit exactly


def test_a_call_that_never_settles_frees_its_slot_and_reservation_after_its_own_hold(limiter, clock, settings):
    # Alice's call was admitted by a process that then died: nothing will settle it. Its parallel slot
    # and its reservation are held for the call's deadline plus a margin (hold_ms), not for an hour.
    from proxy.limits import BudgetCheck

    key = "gw:b:hold-test:p"
    if isinstance(limiter, RedisLimiter):
        import redis

        r = redis.Redis.from_url(settings.REDIS_URL)
        r.delete("gw:par:k:hold-test", key, key + ":res", key + ":exp")
        r.set(key, 0)
    else:
        limiter.spent[key] = 0
    budget = BudgetCheck(1, key, 1_000, True, (), "key:alice", "p")
    parallel = ("k:hold-test", 1)

    async def scenario():
        first, _ = await limiter.admit("dead", [], 0, parallel, [budget], 800, hold_ms=5_000)
        clock["t"] += 4
        held, _ = await limiter.admit("b", [], 0, parallel, [budget], 800, hold_ms=5_000)
        clock["t"] += 2  # past the dead call's hold
        freed, _ = await limiter.admit("c", [], 0, parallel, [budget], 800, hold_ms=5_000)
        return first, held, freed

    first, held, freed = asyncio.run(scenario())
    assert first.ok
    assert not held.ok and held.reason == "parallel"
    assert freed.ok
