"""Change events are published per Redis database: pub/sub channels are server-wide, so two gateways
sharing one Redis server on different databases must not drop each other's caches."""

from __future__ import annotations

from tenants.changes import channel


def test_each_redis_database_has_its_own_change_channel(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/3"
    on_three = channel()
    settings.REDIS_URL = "redis://127.0.0.1:6379/4"
    assert channel() != on_three
    assert on_three.endswith(":3")
