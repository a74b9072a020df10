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
