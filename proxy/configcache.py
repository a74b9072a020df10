"""In-process cache of virtual keys and tenant snapshots, with cross-process invalidation.

The proxy never queries the database synchronously: a request finds its key and its tenant's
deployments in the dictionaries below. A miss (first request for a key in this process) loads from
the database through proxy.loader in a worker thread, once per key even under concurrency. Entries
are dropped when a change event arrives: through Redis pub/sub when REDIS_URL is set, otherwise by
polling the ConfigChange table. GATEWAY_CACHE_TTL bounds the damage if an event is ever missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

from gateway_project.common.dbconn import db_thread
from proxy.loader import load_key, load_tenant
from proxy.snapshot import KeyEntry, TenantEntry
from tenants.changes import channel
from tenants.models import ConfigChange

logger = logging.getLogger("gateway.state")

NEGATIVE_TTL = 30.0
# With Redis: how often the change log is polled as a safety net for lost pub/sub messages.
SAFETY_NET_POLL = 1.0
# How many ids back each poll looks for changes that committed late.
TRAILING_IDS = 200
MAX_NEGATIVE = 50_000
# After a failed load, how long expired entries are served as they are before a load is tried again.
RETRY_AFTER_FAILURE = 2.0
EXPIRED = float("-inf")


class ConfigUnavailable(Exception):
    """A key or tenant that is not loaded in this process could not be loaded (the database is away)."""


def _max_change_id() -> int:
    last = ConfigChange.objects.order_by("-id").values_list("id", flat=True).first()
    return last or 0


def _changes_since(last_id: int) -> list[tuple[int, str, str]]:
    return list(ConfigChange.objects.filter(id__gt=last_id).order_by("id").values_list("id", "kind", "ref")[:1000])


class ConfigState:
    def __init__(self) -> None:
        self.keys: dict[str, KeyEntry] = {}
        self.negative: dict[str, float] = {}
        self.tenants: dict[int, TenantEntry] = {}
        self._key_loads: dict[str, asyncio.Future] = {}
        self._tenant_loads: dict[int, asyncio.Future] = {}
        self._listener: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        # Bumped on every invalidation: a load that raced with an event is used once but not cached.
        self._generation = 0
        # The generation at which each key was last dropped by its own change (a load that raced with it
        # must not keep what it read).
        self._dropped: dict[str, int] = {}
        self._dropped_floor = -1
        self.ttl = settings.GATEWAY_CACHE_TTL
        # While the database is unreachable: since when (for /readyz and the log), and until when
        # expired entries are served without trying to reload them.
        self.degraded_since: float | None = None
        self._retry_at = 0.0

    # -- lookups --------------------------------------------------------------------------------------

    async def key(self, key_hash: str) -> KeyEntry | None:
        entry = self.keys.get(key_hash)
        now = time.monotonic()
        if entry is not None and (now - entry.loaded_at < self.ttl or now < self._retry_at):
            return entry
        neg = self.negative.get(key_hash)
        if neg is not None and now - neg < NEGATIVE_TTL:
            return None
        if entry is None and now < self._retry_at:
            raise ConfigUnavailable  # the database just failed: answer at once instead of waiting on it
        generation = self._generation
        try:
            loaded = await self._single_flight(self._key_loads, key_hash, load_key)
        except Exception as exc:
            return self._last_good(entry, exc)
        self._loaded()
        if generation != self._generation:
            dropped = self._dropped.get(key_hash, self._dropped_floor)
            if loaded is not None and dropped <= generation:
                # Raced with another change: used now, due for a reload on the next request, but kept as
                # the last good snapshot, so that an outage right after still serves a key just served.
                # (A change of this very key, a revocation maybe, leaves nothing to fall back on.)
                loaded.loaded_at = EXPIRED
                self.keys[key_hash] = loaded
            return loaded
        if loaded is None:
            self.keys.pop(key_hash, None)  # gone from the database: no fallback for it either
            if len(self.negative) > MAX_NEGATIVE:
                self.negative.clear()
            self.negative[key_hash] = now
        else:
            self.keys[key_hash] = loaded
        return loaded

    async def tenant(self, tenant_id: int) -> TenantEntry | None:
        entry = self.tenants.get(tenant_id)
        now = time.monotonic()
        if entry is not None and (now - entry.loaded_at < self.ttl or now < self._retry_at):
            return entry
        if entry is None and now < self._retry_at:
            raise ConfigUnavailable
        generation = self._generation
        try:
            loaded = await self._single_flight(self._tenant_loads, tenant_id, load_tenant)
        except Exception as exc:
            return self._last_good(entry, exc)
        self._loaded()
        if loaded is None:
            self.tenants.pop(tenant_id, None)
        else:
            # One that raced with an invalidation is kept as the last good snapshot, due for a reload.
            if generation != self._generation:
                loaded.loaded_at = EXPIRED
            self.tenants[tenant_id] = loaded
        return loaded

    def _last_good(self, entry: Any, exc: Exception) -> Any:
        """A load failed (the database is unreachable): serve the last good snapshot, and for a while
        serve it without trying again, so that an outage costs no request a database timeout. A key or
        tenant this process never loaded cannot be served: the caller answers 503."""
        if self.degraded_since is None:
            self.degraded_since = time.time()
            logger.warning(
                "config database unreachable (%s: %s); serving the last loaded keys and tenants",
                type(exc).__name__,
                exc,
            )
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE
        if entry is None:
            raise ConfigUnavailable from exc
        return entry

    def _loaded(self) -> None:
        if self.degraded_since is not None:
            logger.warning("config database reachable again after %.1f s", time.time() - self.degraded_since)
            self.degraded_since = None
            self._retry_at = 0.0

    async def _single_flight(self, pending: dict, ident: Any, loader: Any) -> Any:
        # The load runs as its own task and every caller (the first included) awaits it shielded:
        # a client that hangs up cancels only its own wait, never the load the others wait for.
        task = pending.get(ident)
        if task is None:
            task = asyncio.get_running_loop().create_task(db_thread(loader)(ident))
            pending[ident] = task
            task.add_done_callback(lambda _t: pending.pop(ident, None))
        return await asyncio.shield(task)

    # -- invalidation ---------------------------------------------------------------------------------

    def apply_event(self, kind: str, ref: str) -> None:
        self._generation += 1
        if kind == "key":
            # Dropped outright: a revoked key is never served from a fallback, even in an outage.
            self.keys.pop(ref, None)
            self.negative.pop(ref, None)
            if len(self._dropped) > MAX_NEGATIVE:
                self._dropped.clear()
                self._dropped_floor = self._generation  # forgotten: any load before now counts as raced
            self._dropped[ref] = self._generation
        elif kind == "tenant":
            try:
                entry = self.tenants.get(int(ref))
            except ValueError:
                return
            if entry is not None:
                entry.loaded_at = EXPIRED  # reloaded on next use; the fallback while the database is away
        else:
            self.clear()

    def clear(self) -> None:
        """Reload everything on next use. The entries stay as the last good snapshot: served only when
        reloading fails (the database is unreachable); a revoked key is dropped by its own event."""
        self._generation += 1
        self._retry_at = 0.0
        self.negative.clear()
        for entries in (self.keys, self.tenants):
            for entry in entries.values():
                entry.loaded_at = EXPIRED

    def start(self) -> None:
        """Start the invalidation listeners on the running loop (idempotent).

        Without Redis the change log is polled. With Redis, pub/sub brings changes in milliseconds and
        a slower poll of the same log is the safety net for a publish that failed.
        """
        if self._listener is None or self._listener.done():
            loop = asyncio.get_running_loop()
            if settings.REDIS_URL:
                self._listener = loop.create_task(self._listen_redis(), name="gateway-invalidation")
                self._poller = loop.create_task(self._poll_db(SAFETY_NET_POLL), name="gateway-invalidation-poll")
            else:
                self._listener = loop.create_task(
                    self._poll_db(settings.GATEWAY_INVALIDATION_POLL_INTERVAL), name="gateway-invalidation"
                )

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
            self._listener = None

    async def _poll_db(self, interval: float) -> None:
        last_id = None
        # Ids are handed out at insert but become visible at commit, so a lower id can appear after a
        # higher one: every poll re-reads a trailing window of ids and skips those already applied.
        seen: set[int] = set()
        failing = False
        while True:
            try:
                if last_id is None:
                    last_id = await db_thread(_max_change_id)()
                    # Anything cached before we knew where the log stood may be stale.
                    self.clear()
                since = max(last_id - TRAILING_IDS, 0)
                for change_id, kind, ref in await db_thread(_changes_since)(since):
                    if change_id in seen or change_id <= since:
                        continue
                    seen.add(change_id)
                    self.apply_event(kind, ref)
                    last_id = max(last_id, change_id)
                floor = last_id - TRAILING_IDS
                seen = {i for i in seen if i > floor}
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is away: keep serving what is loaded (the next poll that works reads every
                # change since last_id, so nothing is missed). Logged once per outage, not per poll.
                if not failing:
                    logger.warning("polling config changes failed (%s: %s); will retry", type(exc).__name__, exc)
                failing = True
            else:
                if failing:
                    logger.warning("polling config changes works again")
                failing = False
            await asyncio.sleep(interval)

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel())
                # Events published while we were not subscribed are lost: start from a clean slate.
                self.clear()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
                    kind, _, ref = data.partition(":")
                    self.apply_event(kind, ref)
            except asyncio.CancelledError:
                await client.aclose()
                raise
            except Exception:
                logger.warning("config change subscription lost; reconnecting", exc_info=True)
                self.clear()
                await client.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


state = ConfigState()
