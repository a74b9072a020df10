"""A key load that races with an invalidation: used for the request that asked, kept (due for a reload)
as the fallback for an outage right after, unless the change was to that very key (a revocation is
never served from a fallback). Found by the database-outage fault test, which failed when the first
poll of the change log landed during the first load of Alice's key."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy import configcache
from proxy.configcache import EXPIRED, ConfigState, ConfigUnavailable
from proxy.snapshot import KeyEntry


def entry(name: str) -> KeyEntry:
    return KeyEntry(
        key_id=1,
        tenant_id=1,
        name=name,
        allowed_models=frozenset(),
        expires_at=None,
        revoked=False,
        metadata={},
        loaded_at=time.monotonic(),
    )


@pytest.mark.parametrize(("event_ref", "kept"), [("someone-elses-hash", True), ("alice-hash", False)])
def test_a_load_that_raced_with_a_change_is_kept_for_an_outage_unless_the_change_was_its_own(
    monkeypatch, event_ref, kept
):
    state = ConfigState()

    def load_during_a_change(key_hash: str) -> KeyEntry:
        state.apply_event("key", event_ref)  # the change lands while the row is being read
        return entry("alice-app")

    async def scenario() -> tuple[KeyEntry | None, str]:
        monkeypatch.setattr(configcache, "load_key", load_during_a_change)
        served = await state.key("alice-hash")

        def outage(key_hash: str) -> KeyEntry:
            raise ConnectionError("database unreachable")

        monkeypatch.setattr(configcache, "load_key", outage)
        try:
            again = await state.key("alice-hash")
        except ConfigUnavailable:
            return served, "refused"
        return served, again.name

    served, during_outage = asyncio.run(scenario())
    assert served is not None and served.name == "alice-app"  # the request that loaded it is served
    if kept:
        assert during_outage == "alice-app"
    else:
        assert during_outage == "refused"
        assert "alice-hash" not in state.keys


def test_a_raced_load_is_reloaded_on_the_next_request_when_the_database_is_up(monkeypatch):
    state = ConfigState()
    loads = []

    def load(key_hash: str) -> KeyEntry:
        loads.append(key_hash)
        if len(loads) == 1:
            state.apply_event("tenant", "7")
        return entry(f"load-{len(loads)}")

    async def scenario() -> list[str]:
        monkeypatch.setattr(configcache, "load_key", load)
        first = await state.key("alice-hash")
        assert state.keys["alice-hash"].loaded_at == EXPIRED
        second = await state.key("alice-hash")
        third = await state.key("alice-hash")
        return [first.name, second.name, third.name]

    assert asyncio.run(scenario()) == ["load-1", "load-2", "load-2"]
