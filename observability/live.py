"""Live call logs: each flushed batch of the log buffer fanned out to the tenants' WebSocket groups.

Nothing happens per request: `LiveSink.write` runs in the buffer's flush thread, once per batch, and
sends one channel-layer message per tenant (and per 200 calls). With REDIS_URL the channel layer is
Redis, so a socket on any gateway process sees the calls of every process; otherwise it is in memory
and sockets see the calls of their own process (a single `make run` process serves both).

Events carry ids (key, deployment) rather than names: the consumer (observability.consumers) keeps
the tenant's key names and owners, so it names the key and drops calls a `member` may not see.

Nobody watching, nothing built: sockets register their tenant in a small presence set (a Redis
sorted set with expiry times, or a dict without Redis), which the sink reads at most once a second;
calls of tenants nobody watches are skipped before any event is built.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger("gateway.logs")

MESSAGE_TYPE = "calllog.batch"  # handled by LiveLogsConsumer.calllog_batch
EVENTS_PER_MESSAGE = 200
ERROR_CHARS = 300


def group_name(tenant_id: int) -> str:
    return f"calllogs.{tenant_id}"


# --- who is watching ---------------------------------------------------------------------------------

WATCHING_KEY = "gateway:live:watching"
# A socket renews its entry every RECHECK_SECONDS (observability.consumers); one that vanished without
# unregistering (its process died) stops counting after this long.
WATCH_TTL = 120.0
WATCHED_CACHE_SECONDS = 1.0

_local_watchers: dict[str, float] = {}  # member -> expiry (time.time()), without Redis
_watched: tuple[float, frozenset[int]] = (0.0, frozenset())
_redis_lock = threading.Lock()
_redis_client: Any = None


def _redis() -> Any:
    global _redis_client
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        return _redis_client


def _member(tenant_id: int, channel_name: str) -> str:
    return f"{tenant_id}:{channel_name}"


def watch(tenant_id: int, channel_name: str) -> None:
    """Register (or renew) a socket watching `tenant_id`. Sync: call through sync_to_async."""
    global _watched
    now = time.time()
    member = _member(tenant_id, channel_name)
    if settings.REDIS_URL:
        pipe = _redis().pipeline(transaction=False)
        pipe.zadd(WATCHING_KEY, {member: now + WATCH_TTL})
        pipe.zremrangebyscore(WATCHING_KEY, "-inf", now)
        pipe.execute()
    else:
        _local_watchers[member] = now + WATCH_TTL
    _watched = (0.0, frozenset())  # this process sees a new socket at once


def unwatch(tenant_id: int, channel_name: str) -> None:
    member = _member(tenant_id, channel_name)
    if settings.REDIS_URL:
        _redis().zrem(WATCHING_KEY, member)
    else:
        _local_watchers.pop(member, None)


def watched_tenants() -> frozenset[int]:
    """Tenants with at least one live socket somewhere, read at most once a second."""
    global _watched
    checked_at, tenants = _watched
    now = time.monotonic()
    if now - checked_at < WATCHED_CACHE_SECONDS:
        return tenants
    wall = time.time()
    if settings.REDIS_URL:
        members = [m.decode() for m in _redis().zrangebyscore(WATCHING_KEY, wall, "+inf")]
    else:
        members = [m for m, expiry in list(_local_watchers.items()) if expiry > wall]
    tenants = frozenset(int(m.split(":", 1)[0]) for m in members)
    _watched = (now, tenants)
    return tenants


# --- events ------------------------------------------------------------------------------------------


def usd(picodollars: int | None) -> str | None:
    """Exact decimal string of a picodollar amount, by string arithmetic (a Decimal costs more per call)."""
    if picodollars is None:
        return None
    sign = "-" if picodollars < 0 else ""
    digits = str(abs(picodollars)).rjust(13, "0")
    return f"{sign}{digits[:-12]}.{digits[-12:]}".rstrip("0").rstrip(".")


def event(record: dict[str, Any]) -> dict[str, Any]:
    """What the console shows of one call: small, JSON-ready, never a body or a secret.

    Built for every call of a watched tenant in the flush thread, so only what the page shows.
    """
    get = record.get
    created = get("created_at")
    provider = get("provider")
    return {
        "request_id": get("request_id"),
        "at_ms": created.timestamp() * 1000 if created is not None else None,  # the page formats it
        "key_id": get("virtual_key_id"),
        "model": get("requested_model") or "",
        "route": get("route") or "",
        "variant": get("variant") or "",
        "deployment": f"{provider}/{get('upstream_model')}" if provider else "",
        "stream": bool(get("stream")),
        "status": get("status_code"),
        "latency_ms": get("latency_ms"),
        "ttfb_ms": get("ttfb_ms"),
        "prompt_tokens": get("prompt_tokens"),
        "completion_tokens": get("completion_tokens"),
        "total_tokens": get("total_tokens"),
        # Exact decimal strings (USD): money never goes through a float.
        "cost_usd": usd(get("cost_picodollars")),
        "cost_estimated": bool(get("cost_estimated")),
        "error": get("error_type") or "",
        "error_message": (get("error_message") or "")[:ERROR_CHARS],
        "end_user": get("end_user") or "",
        "cache": get("cache_status") or "",
        "pii": bool(get("pii_actions")),
        # Guardrails that did not pass: {check name: outcome}.
        "guardrails": {
            name: v.get("outcome")
            for name, v in (get("guardrails") or {}).items()
            if isinstance(v, dict) and v.get("outcome") != "pass"
        },
        "fallback": bool(get("fallback_reason")),
        "disconnected": bool(get("client_disconnected")),
    }


def messages_by_group(
    records: list[dict[str, Any]], watched: frozenset[int] | None = None
) -> dict[str, list[dict[str, Any]]]:
    by_tenant: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        tenant_id = record["tenant_id"]
        if watched is None or tenant_id in watched:
            by_tenant[tenant_id].append(event(record))
    out: dict[str, list[dict[str, Any]]] = {}
    for tenant_id, events in by_tenant.items():
        out[group_name(tenant_id)] = [
            {"type": MESSAGE_TYPE, "events": events[i : i + EVENTS_PER_MESSAGE]}
            for i in range(0, len(events), EVENTS_PER_MESSAGE)
        ]
    return out


async def publish(messages_for: dict[str, list[dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group, messages in messages_for.items():
        for message in messages:
            await layer.group_send(group, message)


class LiveSink:
    """A fan-out sink of the log buffer (observability.logbuffer): runs in the flush thread.

    async_to_sync from that thread runs `publish` on the server's event loop, where the channel
    layer's connections live.
    """

    def write(self, records: list[dict[str, Any]]) -> None:
        watched = watched_tenants()
        if not watched:
            return
        messages_for = messages_by_group(records, watched)
        if messages_for:
            async_to_sync(publish)(messages_for)

    def __repr__(self) -> str:
        return "LiveSink()"
