"""Telling every gateway process that cached configuration changed.

Writers call record_change() inside their transaction. The row in ConfigChange is what processes
poll on the embedded default; with REDIS_URL the event is also published on commit, so processes
drop stale entries within milliseconds instead of a poll interval.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from tenants.models import ConfigChange

logger = logging.getLogger("gateway.changes")

CHANNEL_PREFIX = "gateway:config-changes"


def channel() -> str:
    """The pub/sub channel of this deployment's changes. Channels ignore Redis databases, so the name
    carries the database number: two gateways sharing one Redis server on different databases must not
    drop each other's caches."""
    from redis.connection import parse_url

    return f"{CHANNEL_PREFIX}:{parse_url(settings.REDIS_URL).get('db', 0)}"


_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return _redis_client


def _publish(kind: str, ref: str) -> None:
    try:
        _redis().publish(channel(), f"{kind}:{ref}")
    except Exception:
        # The change is in ConfigChange and cache entries expire after GATEWAY_CACHE_TTL; processes also
        # poll the table when pub/sub is down, so a failed publish delays, never loses, invalidation.
        logger.exception("could not publish config change %s:%s", kind, ref)


def record_change(kind: str, ref: str | int = "") -> None:
    ref = str(ref)
    ConfigChange.objects.create(kind=kind, ref=ref)
    if settings.REDIS_URL:
        transaction.on_commit(lambda: _publish(kind, ref))
