"""A revoked key stops working within one second on every process."""

from __future__ import annotations

import time

import httpx
import pytest

from tenants.audit import Actor
from tenants.models import VirtualKey
from tenants.services import virtual_key_revoke
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def models_status(gateway, key: str) -> int:
    return httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


@pytest.mark.parametrize("redis", [True, False], ids=["redis-pubsub", "embedded-poll"])
def test_revocation_reaches_every_process_within_a_second(gateway_factory, acme, mint, redis):
    first, second = gateway_factory(redis=redis), gateway_factory(redis=redis)
    key = mint(acme)
    # Warm both caches so the key is served from memory.
    assert models_status(first, key) == 200 and models_status(second, key) == 200
    revoked_at = time.monotonic()
    virtual_key_revoke(acme, key=VirtualKey.objects.get(name="app"), actor=Actor.cli())
    assert wait_for(lambda: models_status(first, key) == 401 and models_status(second, key) == 401, timeout=1.0)
    assert time.monotonic() - revoked_at < 1.0


def test_a_key_minted_after_a_failed_lookup_works_at_once(gateway_factory, acme):
    from tenants.services import virtual_key_create

    gateway = gateway_factory()
    key, secret = virtual_key_create(acme, name="late", actor=Actor.cli())
    key.delete()  # the gateway now caches "unknown" for this hash
    assert models_status(gateway, secret) == 401
    # Re-create a key with the same hash, as if minted now: the mint event clears the negative entry.
    from tenants.changes import record_change

    VirtualKey.objects.create(tenant=acme, name="late", key_hash=key.key_hash, prefix=key.prefix)
    record_change("key", key.key_hash)
    assert wait_for(lambda: models_status(gateway, secret) == 200, timeout=1.0)


def test_model_changes_reach_the_proxy_without_restart(gateway, acme, mint, make_tenant):
    key = mint(acme)
    assert models_status(gateway, key) == 200
    make_tenant("acme", {"renamed": "gpt-4o-mini"})
    assert wait_for(
        lambda: (
            [
                m["id"]
                for m in httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()[
                    "data"
                ]
            ]
            == ["renamed"]
        ),
        timeout=1.0,
    )


def test_a_lost_pubsub_message_is_caught_by_the_change_log_poll(gateway, acme, mint):
    from tenants.models import ConfigChange

    key = mint(acme)
    assert models_status(gateway, key) == 200
    # Revoke without publishing, as if Redis had dropped the message: only the poll can tell.
    VirtualKey.objects.filter(name="app").update(revoked=True)
    ConfigChange.objects.create(kind="key", ref=VirtualKey.objects.get(name="app").key_hash)
    assert wait_for(lambda: models_status(gateway, key) == 401, timeout=3.0)
