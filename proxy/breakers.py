"""Per-deployment health for routing: circuit breakers, time-to-first-byte averages, in-flight counts.

Everything the router reads lives in process memory and costs O(1) per call: no Redis round trip, no
thread hop. With REDIS_URL set, a breaker that opens is announced on a pub/sub channel (from a
fire-and-forget task, after the decision) and every gateway process opens its own copy on receipt, so
a failing deployment is skipped everywhere within milliseconds. Latency and in-flight counts stay
per process: each process measures the traffic it sends.

Breaker: `failures` failures within `window_s` open it for `cooldown_s`. Then it is half-open: one
caller claims the probe and the others are refused until the probe reports; success closes it,
failure opens it for another cooldown. A probe that never reports (client hung up, task cancelled)
loses its claim after one more cooldown, so a breaker cannot stay stuck half-open.

Local times are monotonic; the time carried across processes is wall-clock (monotonic clocks of two
processes are unrelated) and is converted back to local monotonic time on receipt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from proxy.snapshot import CooldownSpec

logger = logging.getLogger("gateway.health")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
CHANNEL_PREFIX = "gateway:health"
# Latest opening per deployment, read when a listener (re)connects so that a process that starts, or
# that lost its subscription, while a breaker is open still skips the deployment.
SNAPSHOT_KEY = "gateway:health:open"
ALPHA = 0.3  # weight of the newest sample in the time-to-first-byte average
DEFAULT_COOLDOWN_S = 30.0


class _Dep:
    """One deployment's state. Plain attributes (slots) keep the per-call work to a few loads."""

    __slots__ = ("cooldown_s", "ewma", "in_flight", "open_until", "probe_until", "rate_limited", "recent")

    def __init__(self) -> None:
        # Times of the latest failures, at most `failures` of them: the oldest is the window's edge.
        self.recent: deque[float] = deque(maxlen=1)
        self.open_until = 0.0  # 0: closed; otherwise open until then, half-open after
        self.probe_until = 0.0  # half-open: the probe's claim holds until then (0: unclaimed)
        self.cooldown_s = DEFAULT_COOLDOWN_S
        self.in_flight = 0
        self.ewma: float | None = None
        # Open because the provider said "slow down" (429 with Retry-After), not because it failed.
        self.rate_limited = False


class Health:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # redis_url None: read settings.REDIS_URL when first needed; "" forces in-process only.
        self._redis_url = redis_url
        self._clock = clock
        self._wall = wall
        self._deps: dict[int, _Dep] = {}
        # Lets a listener ignore its own announcements (it already opened the breaker locally).
        self._origin = os.urandom(8).hex()
        self._listener: asyncio.Task | None = None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._channel: str | None = None

    # -- reads (the router) ---------------------------------------------------------------------------

    def available(self, dep_id: int, now: float | None = None) -> bool:
        """May a request go to this deployment now? In half-open state this claims the single probe."""
        dep = self._deps.get(dep_id)
        if dep is None or not dep.open_until:
            return True
        if now is None:
            now = self._clock()
        if now < dep.open_until:
            return False
        if dep.probe_until > now:
            return False
        dep.probe_until = now + dep.cooldown_s
        return True

    def state(self, dep_id: int, now: float | None = None) -> str:
        dep = self._deps.get(dep_id)
        if dep is None or not dep.open_until:
            return CLOSED
        if now is None:
            now = self._clock()
        return OPEN if now < dep.open_until else HALF_OPEN

    def resting(self, dep_id: int, now: float | None = None) -> tuple[float, bool]:
        """Seconds until this deployment may be tried again (0 when it may now), and whether it rests
        because its provider rate-limited it (rather than because it failed)."""
        dep = self._deps.get(dep_id)
        if dep is None or not dep.open_until:
            return 0.0, False
        if now is None:
            now = self._clock()
        left = dep.open_until - now
        if left <= 0 and dep.probe_until > now:
            left = dep.probe_until - now  # half-open, its probe in flight
        return max(left, 0.0), dep.rate_limited

    def in_flight(self, dep_id: int) -> int:
        dep = self._deps.get(dep_id)
        return dep.in_flight if dep is not None else 0

    def latency(self, dep_id: int) -> float | None:
        dep = self._deps.get(dep_id)
        return dep.ewma if dep is not None else None

    # -- reports (the attempt loop) -------------------------------------------------------------------

    def _dep(self, dep_id: int) -> _Dep:
        dep = self._deps.get(dep_id)
        if dep is None:
            dep = self._deps[dep_id] = _Dep()
        return dep

    def begin(self, dep_id: int) -> None:
        self._dep(dep_id).in_flight += 1

    def end(self, dep_id: int) -> None:
        dep = self._deps.get(dep_id)
        if dep is not None and dep.in_flight > 0:
            dep.in_flight -= 1

    def success(self, dep_id: int, ttfb_s: float | None, *, now: float | None = None) -> None:
        dep = self._dep(dep_id)
        if ttfb_s is not None:
            dep.ewma = ttfb_s if dep.ewma is None else dep.ewma + ALPHA * (ttfb_s - dep.ewma)
        if dep.open_until:
            if now is None:
                now = self._clock()
            # Only a success after the cooldown (the probe) closes it: a request that started before
            # the breaker opened and succeeds during the cooldown says nothing about the deployment now.
            if now >= dep.open_until:
                dep.open_until = dep.probe_until = 0.0
                dep.rate_limited = False
                dep.recent.clear()

    def failure(self, dep_id: int, cooldown: CooldownSpec, *, now: float | None = None) -> None:
        """Count a failure; open the breaker after `failures` of them within `window_s` (failures < 1: never)."""
        if cooldown.failures < 1:
            return
        dep = self._dep(dep_id)
        if now is None:
            now = self._clock()
        if dep.open_until:
            if now < dep.open_until:
                return  # already open: late failures of requests sent before it opened change nothing
            self._open(dep_id, dep, now, cooldown.cooldown_s)  # the probe (or a straggler) failed
            return
        recent = dep.recent
        if recent.maxlen != cooldown.failures:
            recent = dep.recent = deque(recent, maxlen=cooldown.failures)
        recent.append(now)
        if len(recent) == cooldown.failures and now - recent[0] <= cooldown.window_s:
            self._open(dep_id, dep, now, cooldown.cooldown_s)

    def rest(self, dep_id: int, seconds: float, *, now: float | None = None) -> None:
        """The provider rate-limited this deployment and said for how long (Retry-After): skip it for
        exactly that long, in every process, rather than for the breaker's cooldown."""
        dep = self._dep(dep_id)
        if now is None:
            now = self._clock()
        if dep.open_until and now < dep.open_until and not dep.rate_limited:
            return  # already open for failing: that cooldown stands
        self._open(dep_id, dep, now, max(seconds, 0.001), rate_limited=True)

    def _open(self, dep_id: int, dep: _Dep, now: float, cooldown_s: float, *, rate_limited: bool = False) -> None:
        dep.open_until = now + cooldown_s
        dep.probe_until = 0.0
        dep.cooldown_s = cooldown_s
        dep.rate_limited = rate_limited
        dep.recent.clear()
        if self._url():
            self._announce(dep_id, self._wall() + cooldown_s, cooldown_s, rate_limited)

    # -- cross-process ---------------------------------------------------------------------------------

    def _url(self) -> str:
        if self._redis_url is None:
            self._redis_url = settings.REDIS_URL or ""
        return self._redis_url

    def _channel_name(self) -> str:
        # Pub/sub ignores the database number: two gateways sharing a Redis server on different
        # databases would otherwise open each other's breakers (deployment ids collide).
        if self._channel is None:
            from redis.connection import parse_url

            self._channel = f"{CHANNEL_PREFIX}:{parse_url(self._url()).get('db', 0)}"
        return self._channel

    def _announce(self, dep_id: int, until: float, cooldown_s: float, rate_limited: bool = False) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # called outside the event loop (a management command, a sync test): local only
        from proxy.background import spawn

        message = json.dumps(
            {
                "dep": dep_id,
                "until": until,
                "cooldown_s": cooldown_s,
                "rate_limited": rate_limited,
                "origin": self._origin,
            }
        )
        spawn(self._publish(loop, dep_id, message))

    def _redis(self, loop: asyncio.AbstractEventLoop) -> Any:
        # A client is bound to the loop it was created on (tests run several loops in one process).
        if self._client is None or self._client_loop is not loop:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self._url(), socket_timeout=2, health_check_interval=30)
            self._client_loop = loop
        return self._client

    async def _publish(self, loop: asyncio.AbstractEventLoop, dep_id: int, message: str) -> None:
        try:
            async with self._redis(loop).pipeline(transaction=False) as pipe:
                pipe.hset(SNAPSHOT_KEY, str(dep_id), message)
                pipe.publish(self._channel_name(), message)
                await pipe.execute()
        except Exception:
            # The breaker is open in this process; the others find out from their own failures.
            logger.warning("could not announce breaker opening for deployment %s", dep_id, exc_info=True)

    def apply(self, message: str | bytes) -> None:
        """Open a breaker from another process's announcement (ignored when stale or our own)."""
        try:
            data = json.loads(message)
            if data.get("origin") == self._origin:
                return
            dep_id, until = int(data["dep"]), float(data["until"])
            cooldown_s = float(data.get("cooldown_s") or DEFAULT_COOLDOWN_S)
            rate_limited = bool(data.get("rate_limited"))
        except (ValueError, TypeError, KeyError, AttributeError):
            logger.warning("ignoring malformed health message %r", message)
            return
        remaining = until - self._wall()
        if remaining <= 0:
            return
        dep = self._dep(dep_id)
        local_until = self._clock() + remaining
        if local_until > dep.open_until:
            dep.open_until = local_until
            dep.probe_until = 0.0
            dep.cooldown_s = cooldown_s
            dep.rate_limited = rate_limited
            dep.recent.clear()

    def start(self) -> None:
        """Start this process's listener on the running loop (idempotent; no-op without Redis)."""
        if not self._url():
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="gateway-health")

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            try:
                await listener
            except (asyncio.CancelledError, Exception):
                pass
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(self._url(), health_check_interval=30)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self._channel_name())
                # Subscribed first, then read the openings announced while we were not listening:
                # nothing falls between the two.
                for message in (await client.hgetall(SNAPSHOT_KEY)).values():
                    self.apply(message)
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.apply(message["data"])
            except asyncio.CancelledError:
                await client.aclose()
                raise
            except Exception:
                logger.warning("health subscription lost; reconnecting", exc_info=True)
                await client.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


health = Health()
