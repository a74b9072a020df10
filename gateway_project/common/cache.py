"""Django's Redis cache, made to degrade instead of fail while Redis is away.

The console's cache users are conveniences (allauth's sign-in rate limit, cached fragments): with
Redis down they should behave as on a cold cache, not answer 500. Reads miss, writes are dropped,
and `add` reports success so that a lock taken through it (allauth's rate limiter loops on `add`)
never spins. One log line when Redis goes away and one when it is back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.exceptions
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger("gateway.cache")

AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class ResilientRedisCache(RedisCache):
    _away_since: float | None = None

    def _failed(self, exc: BaseException) -> Any:
        if ResilientRedisCache._away_since is None:
            ResilientRedisCache._away_since = time.monotonic()
            logger.warning("the cache's Redis is unreachable (%s); serving as a cold cache", type(exc).__name__)

    def _ok(self) -> Any:
        if ResilientRedisCache._away_since is not None:
            logger.warning("the cache's Redis is back after %.1f s", time.monotonic() - ResilientRedisCache._away_since)
            ResilientRedisCache._away_since = None

    def _try(self, op: Any, fallback: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = op(*args, **kwargs)
        except AWAY as exc:
            self._failed(exc)
            return fallback
        self._ok()
        return result

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._try(super().get, default, key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = 300, version: int | None = None) -> Any:
        self._try(super().set, None, key, value, timeout, version)

    def add(self, key: Any, value: Any, timeout: Any = 300, version: int | None = None) -> Any:
        return self._try(super().add, True, key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = 300, version: int | None = None) -> Any:
        return self._try(super().touch, False, key, timeout, version)

    def delete(self, key: Any, version: int | None = None) -> Any:
        return self._try(super().delete, False, key, version)

    def get_many(self, keys: Any, version: int | None = None) -> Any:
        return self._try(super().get_many, {}, keys, version)

    def set_many(self, data: Any, timeout: Any = 300, version: int | None = None) -> Any:
        return self._try(super().set_many, [], data, timeout, version)

    def delete_many(self, keys: Any, version: int | None = None) -> Any:
        self._try(super().delete_many, None, keys, version)

    def has_key(self, key: Any, version: int | None = None) -> Any:
        return self._try(super().has_key, False, key, version)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return self._try(super().incr, delta, key, delta, version)
