"""Circuit breakers, latency averages and in-flight counts per deployment (proxy/health.py).

Alice's acme gateway sends to deployment 7; the clock is a fake one so the windows are exact. The last
tests run two Health instances against the real Redis, as two gateway processes would.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import pytest
from django.conf import settings

from proxy.breakers import Health

DEP = 7


@dataclass(frozen=True)
class Cooldown:  # the fields of proxy.snapshot.CooldownSpec
    failures: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health("", clock=clock, wall=lambda: clock.now + 1_700_000_000)


def fail(health: Health, clock: Clock, times: int, every: float = 0.0, spec: Cooldown = Cooldown()) -> None:
    for _ in range(times):
        health.failure(DEP, spec)
        clock.advance(every)


# -- the breaker ------------------------------------------------------------------------------------------


def test_a_new_deployment_is_closed_and_available(health):
    assert health.state(DEP) == "closed"
    assert health.available(DEP)


def test_the_breaker_opens_after_n_failures_within_the_window(health, clock):
    fail(health, clock, 2, every=10)
    assert health.state(DEP) == "closed" and health.available(DEP)
    health.failure(DEP, Cooldown())
    assert health.state(DEP) == "open"
    assert not health.available(DEP)
    clock.advance(29.9)
    assert not health.available(DEP)


def test_n_failures_spread_beyond_the_window_do_not_open_it(health, clock):
    # Three failures, but never three within 60 s of each other.
    fail(health, clock, 6, every=31)
    assert health.state(DEP) == "closed"
    assert health.available(DEP)


def test_the_window_slides_over_the_latest_failures(health, clock):
    fail(health, clock, 1, every=50)  # t=0
    fail(health, clock, 2, every=5)  # t=50, 55: three within 60 s counting the first
    assert health.state(DEP) == "open"


def test_failures_zero_disables_the_breaker(health, clock):
    fail(health, clock, 10, spec=Cooldown(failures=0))
    assert health.state(DEP) == "closed"


def test_half_open_lets_exactly_one_probe_through(health, clock):
    fail(health, clock, 3)
    clock.advance(30)
    assert health.state(DEP) == "half_open"
    # Looking does not claim the probe; asking does, once.
    assert health.state(DEP) == "half_open"
    assert health.available(DEP) is True
    assert [health.available(DEP) for _ in range(5)] == [False] * 5
    assert health.state(DEP) == "half_open"


def test_a_successful_probe_closes_the_breaker(health, clock):
    fail(health, clock, 3)
    clock.advance(30)
    assert health.available(DEP)
    health.success(DEP, 0.2)
    assert health.state(DEP) == "closed"
    assert all(health.available(DEP) for _ in range(3))
    # The old failures are forgotten: two more do not reopen it.
    fail(health, clock, 2)
    assert health.state(DEP) == "closed"


def test_a_failed_probe_reopens_for_another_cooldown(health, clock):
    fail(health, clock, 3)
    clock.advance(30)
    assert health.available(DEP)
    health.failure(DEP, Cooldown())
    assert health.state(DEP) == "open"
    clock.advance(29)
    assert not health.available(DEP)
    clock.advance(1)
    assert health.state(DEP) == "half_open" and health.available(DEP)


def test_a_probe_that_never_reports_loses_its_claim_after_a_cooldown(health, clock):
    fail(health, clock, 3)
    clock.advance(30)
    assert health.available(DEP)  # claimed, then the client hung up: no success, no failure
    clock.advance(29)
    assert not health.available(DEP)
    clock.advance(1)
    assert health.available(DEP)  # a new probe
    assert not health.available(DEP)


def test_a_late_success_during_the_cooldown_does_not_close_it(health, clock):
    fail(health, clock, 3)
    clock.advance(5)
    health.success(DEP, 0.1)  # a request sent before the breaker opened
    assert health.state(DEP) == "open"


def test_breakers_are_per_deployment(health, clock):
    fail(health, clock, 3)
    assert health.state(DEP) == "open"
    assert health.state(DEP + 1) == "closed" and health.available(DEP + 1)


def test_an_announcement_from_another_process_opens_the_breaker(health, clock):
    wall = clock.now + 1_700_000_000
    health.apply(json.dumps({"dep": DEP, "until": wall + 20, "cooldown_s": 20, "origin": "other"}))
    assert health.state(DEP) == "open"
    clock.advance(20)
    assert health.state(DEP) == "half_open"


def test_stale_own_and_malformed_announcements_are_ignored(health, clock):
    wall = clock.now + 1_700_000_000
    health.apply(json.dumps({"dep": DEP, "until": wall - 1, "origin": "other"}))
    health.apply(json.dumps({"dep": DEP, "until": wall + 20, "origin": health._origin}))
    health.apply(b"not json")
    health.apply(json.dumps({"until": wall + 20}))
    assert health.state(DEP) == "closed"


# -- latency and in-flight --------------------------------------------------------------------------------


def test_latency_is_an_exponential_moving_average_of_time_to_first_byte(health):
    assert health.latency(DEP) is None
    health.success(DEP, 1.0)
    assert health.latency(DEP) == pytest.approx(1.0)
    health.success(DEP, 2.0)
    assert health.latency(DEP) == pytest.approx(1.3)  # 1.0 + 0.3 * (2.0 - 1.0)
    health.success(DEP, None)  # no first byte measured (e.g. an embedding): unchanged
    assert health.latency(DEP) == pytest.approx(1.3)
    health.success(DEP, 0.3)
    assert health.latency(DEP) == pytest.approx(1.0)  # 1.3 + 0.3 * (0.3 - 1.3)


def test_in_flight_counts_begin_and_end_and_never_go_negative(health):
    assert health.in_flight(DEP) == 0
    health.begin(DEP)
    health.begin(DEP)
    health.begin(DEP + 1)
    assert (health.in_flight(DEP), health.in_flight(DEP + 1)) == (2, 1)
    health.end(DEP)
    assert health.in_flight(DEP) == 1
    health.end(DEP)
    health.end(DEP)
    assert health.in_flight(DEP) == 0
    health.end(DEP + 99)  # never begun
    assert health.in_flight(DEP + 99) == 0


# -- across processes -------------------------------------------------------------------------------------


def test_opening_does_not_wait_for_redis():
    # Redis unreachable: the breaker still opens at once, the announcement fails in the background.
    async def run() -> float:
        health = Health("redis://127.0.0.1:1/0")
        started = time.perf_counter()
        for _ in range(3):
            health.failure(DEP, Cooldown())
        elapsed = time.perf_counter() - started
        assert health.state(DEP) == "open"
        await asyncio.sleep(0.05)
        return elapsed

    assert asyncio.run(run()) < 0.005


needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is not set")


async def _wait(predicate, within: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    return None


@needs_redis
def test_a_breaker_opened_in_one_process_is_open_in_another_within_a_second():
    dep = random.randrange(10**9, 2 * 10**9)  # no collision with earlier runs on this Redis

    async def run() -> None:
        import redis.asyncio as aioredis

        first, second = Health(settings.REDIS_URL), Health(settings.REDIS_URL)
        probe = aioredis.Redis.from_url(settings.REDIS_URL)
        channel = second._channel_name()
        try:
            before = dict(await probe.pubsub_numsub(channel)).get(channel.encode(), 0)
            first.start()
            second.start()
            subscribed = False
            for _ in range(200):
                if dict(await probe.pubsub_numsub(channel)).get(channel.encode(), 0) >= before + 2:
                    subscribed = True
                    break
                await asyncio.sleep(0.01)
            assert subscribed, "listeners did not subscribe"
            assert second.state(dep) == "closed"

            for _ in range(2):
                first.failure(dep, Cooldown(failures=2, cooldown_s=30))
            assert first.state(dep) == "open"
            seen_after = await _wait(lambda: second.state(dep) == "open", within=1.0)
            assert seen_after is not None, "the other process did not see the breaker open within 1 s"
            assert not second.available(dep)

            # A process that starts later (or reconnects) learns of the opening too.
            third = Health(settings.REDIS_URL)
            third.start()
            assert await _wait(lambda: third.state(dep) == "open", within=1.0) is not None
            await third.stop()
        finally:
            await first.stop()
            await second.stop()
            await probe.aclose()

    asyncio.run(run())
