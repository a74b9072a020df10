"""Keeping the shared counters true when Redis loses data or a gateway process dies.

Every gateway process (with REDIS_URL) runs one task, once a second:

- **Lease.** It renews `gw:lease:<prefix>` (GATEWAY_LEASE_TTL), where the prefix is the random one its
  reservation ids start with (proxy.admission.slot_prefix). Every few seconds one process (whichever
  takes `gw:sweep`) frees the reservations and parallel slots whose process's lease has been gone for
  a whole lease period: a SIGKILLed worker's budget reservations come back within seconds instead of
  at the call's deadline. Calls it answered but never settled are settled from its spool segment
  (every row carries what its settlement takes), once: only reservations still held or swept count.
- **Epoch.** The same script reads the epoch (proxy.limits.EPOCH_LUA): Redis's run id and when the
  epoch began. If Redis lost its data or restarted (perhaps from data a second or more old), the
  script starts a new epoch and drops every budget counter. A process that sees the epoch change
  then, at once: stores its spooled call logs in the database itself (the Redis stream may have lost
  them), registers its open reservations and slots again, and retries its settlements that failed
  while Redis was away. Counters are rebuilt by the next admission once the epoch is
  GATEWAY_REBUILD_DELAY old: the ledger (now whole), plus what was settled while they were missing.

Without Redis (one process, in-process limiter) there is nothing to keep: this task does not run.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings

from observability import metrics
from observability.logbuffer import buffer
from proxy import admission
from proxy.limits import RedisLimiter, limiter

logger = logging.getLogger("gateway.limits")

TICK_S = 1.0
SWEEP_EVERY = 2  # ticks
SWEEP_LOCK = "gw:sweep"


class Recovery:
    def __init__(self) -> None:
        self.epoch: str | None = None
        self._task: asyncio.Task | None = None
        self._ticks = 0
        # Lease prefixes seen missing, and since when (monotonic): a reservation is freed only once its
        # process's lease has been missing for a whole lease period (a process that just started may
        # admit a call before its first renewal).
        self._missing: dict[str, float] = {}
        self.swept = 0

    def start(self) -> None:
        lim = limiter()
        if isinstance(lim, RedisLimiter):
            buffer.lost_settlements = lim.settle_lost
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            lim = limiter()
            if isinstance(lim, RedisLimiter):
                try:
                    await self.tick(lim)
                except Exception as exc:
                    admission.outage.failed("renewing this process's lease", exc)
            await asyncio.sleep(TICK_S)

    async def tick(self, lim: RedisLimiter) -> None:
        epoch = await lim.tick(admission.slot_prefix(), int(settings.GATEWAY_LEASE_TTL * 1000))
        if self.epoch is not None and epoch != self.epoch:
            self.epoch = epoch
            await self.rebuild(lim)
        self.epoch = epoch
        self._ticks += 1
        if self._ticks % SWEEP_EVERY == 0 and await lim.try_lock(SWEEP_LOCK, int(TICK_S * SWEEP_EVERY * 900)):
            await self.sweep(lim)

    async def rebuild(self, lim: RedisLimiter) -> None:
        """Redis lost data: make the ledger whole from the spool, put back what this process holds."""
        metrics.incr("redis_epoch_changed")
        logger.warning(
            "Redis lost data or restarted (new epoch %s): storing spooled call logs, registering %d open "
            "reservations again; budget counters are rebuilt from the ledger",
            self.epoch,
            len(admission.held),
        )
        if buffer.spool is not None:
            try:
                await sync_to_async(buffer.drain_spool, thread_sensitive=False)()
            except Exception:
                logger.exception("storing the spooled call logs after Redis lost data failed")
        for reservation in list(admission.held.values()):
            await lim.restore(reservation)
        if admission.unsettled:
            await admission.settle_again()

    async def sweep(self, lim: RedisLimiter) -> int:
        """Free the slots and reservations of processes whose lease ran out."""
        held = await lim.held()
        prefixes = sorted({m[: admission.PREFIX_LEN] for members in held.values() for m in members})
        alive = await lim.leases_alive(prefixes)
        now = time.monotonic()
        dead = set()
        for prefix, ok in alive.items():
            if ok:
                self._missing.pop(prefix, None)
            elif now - self._missing.setdefault(prefix, now) >= settings.GATEWAY_LEASE_TTL:
                dead.add(prefix)
        for prefix in [p for p in self._missing if p not in alive]:
            del self._missing[prefix]
        freed = 0
        for name, members in held.items():
            gone = [m for m in members if m[: admission.PREFIX_LEN] in dead]
            if gone or not members:
                freed += await lim.release(name, gone)
        if freed:
            self.swept += freed
            metrics.incr("reservations_swept", freed)
            logger.warning("freed %d reservations and slots of %d dead gateway processes", freed, len(dead))
        return freed


recovery = Recovery()
