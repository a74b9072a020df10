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

from asgiref.sync import sync_to_async
from django.conf import settings

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
        self.ttl = settings.GATEWAY_CACHE_TTL

    # -- lookups --------------------------------------------------------------------------------------

    async def key(self, key_hash: str) -> KeyEntry | None:
        entry = self.keys.get(key_hash)
        now = time.monotonic()
        if entry is not None and now - entry.loaded_at < self.ttl:
            return entry
        neg = self.negative.get(key_hash)
        if neg is not None and now - neg < NEGATIVE_TTL:
            return None
        generation = self._generation
        entry = await self._single_flight(self._key_loads, key_hash, load_key)
        if generation != self._generation:
            return entry
        if entry is None:
            if len(self.negative) > MAX_NEGATIVE:
                self.negative.clear()
            self.negative[key_hash] = now
        else:
            self.keys[key_hash] = entry
        return entry

    async def tenant(self, tenant_id: int) -> TenantEntry | None:
        entry = self.tenants.get(tenant_id)
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry
        generation = self._generation
        entry = await self._single_flight(self._tenant_loads, tenant_id, load_tenant)
        if entry is not None and generation == self._generation:
            self.tenants[tenant_id] = entry
        return entry

    async def _single_flight(self, pending: dict, ident: Any, loader: Any) -> Any:
        # The load runs as its own task and every caller (the first included) awaits it shielded:
        # a client that hangs up cancels only its own wait, never the load the others wait for.
        task = pending.get(ident)
        if task is None:
            task = asyncio.get_running_loop().create_task(sync_to_async(loader, thread_sensitive=False)(ident))
            pending[ident] = task
            task.add_done_callback(lambda _t: pending.pop(ident, None))
        return await asyncio.shield(task)

    # -- invalidation ---------------------------------------------------------------------------------

    def apply_event(self, kind: str, ref: str) -> None:
        self._generation += 1
        if kind == "key":
            self.keys.pop(ref, None)
            self.negative.pop(ref, None)
        elif kind == "tenant":
            try:
                self.tenants.pop(int(ref), None)
            except ValueError:
                pass
        else:
            self.clear()

    def clear(self) -> None:
        self._generation += 1
        self.keys.clear()
        self.negative.clear()
        self.tenants.clear()

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
        while True:
            try:
                if last_id is None:
                    last_id = await sync_to_async(_max_change_id, thread_sensitive=False)()
                    # Anything cached before we knew where the log stood may be stale.
                    self.clear()
                since = max(last_id - TRAILING_IDS, 0)
                for change_id, kind, ref in await sync_to_async(_changes_since, thread_sensitive=False)(since):
                    if change_id in seen or change_id <= since:
                        continue
                    seen.add(change_id)
                    self.apply_event(kind, ref)
                    last_id = max(last_id, change_id)
                floor = last_id - TRAILING_IDS
                seen = {i for i in seen if i > floor}
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("polling config changes failed; clearing the cache")
                self.clear()
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
