"""Budget counters through Redis losing its data: flushed or killed without persistence, or restarted
from a snapshot older than its last writes. The new epoch is noticed (proxy.recovery), counters are
rebuilt from the ledger plus the spend settled while they were missing (orphans), and calls still in
flight put their reservations back, so a hard budget holds. Also: a dead process's reservations are
freed once its lease has run out. Driven in process against a Redis this test starts and kills."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from django.db.models import Sum

from billing.models import SpendLedger
from billing.services import budget_upsert
from observability.logbuffer import DatabaseSink, LogBuffer
from observability.spool import Spool
from observability.stream import encode
from proxy import admission, limits
from proxy.limits import BudgetCheck, RedisLimiter
from proxy.recovery import Recovery
from tenants.audit import Actor
from tests.helpers import free_port
from tests.helpers.billing import record
from tests.helpers.redis_server import start_redis

pytestmark = pytest.mark.django_db(transaction=True)

NANO_PICO = 1000  # picodollars per nanodollar


@pytest.fixture
def own_redis(tmp_path, monkeypatch, settings):
    """A Redis of the test's own (no persistence unless it SAVEs), the limiter pointed at it."""
    port = free_port()
    procs = [start_redis(port, tmp_path)]
    url = f"redis://127.0.0.1:{port}/0"
    limiter = RedisLimiter(url)
    monkeypatch.setattr(admission, "limiter", lambda: limiter)
    monkeypatch.setattr(limits, "_limiter", limiter)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")  # the scenarios store rows between awaits
    settings.GATEWAY_REBUILD_DELAY = 0.3
    settings.GATEWAY_LEASE_TTL = 0.3
    admission.held.clear()
    admission.unsettled.clear()

    def restart() -> None:
        procs[-1].kill()
        procs[-1].wait(5)
        procs.append(start_redis(port, tmp_path))  # loads dump.rdb if the test SAVEd one

    yield limiter, redis.Redis.from_url(url), restart
    admission.held.clear()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def acme_budget(make_tenant, mint):
    acme = make_tenant("acme")
    mint(acme, name="alice-app")
    budget, _ = budget_upsert(
        acme, scope="tenant", limit_usd=Decimal("1"), period="month", mode="hard", actor=Actor.cli()
    )
    return acme, budget


def _check(budget, limit_nanos: int) -> BudgetCheck:
    now = datetime.now(UTC)
    period = now.strftime("%Y-%m")
    return BudgetCheck(
        budget.id, admission.budget_counter_key(budget.id, period), limit_nanos, True, (), "tenant", period
    )


def _store_call(tenant, request_id: str, nanos: int) -> None:
    """The call's log row and ledger entry, as the spool or the stream's consumer stores them."""
    key = tenant.virtual_keys.first()
    now = datetime.now(UTC)
    row = record(tenant, key, cost=nanos * NANO_PICO, day=now.date())
    row.update(request_id=request_id, created_at=now)
    DatabaseSink(dedupe=True).write([row])


def _ledger_nanos(tenant) -> int:
    return (SpendLedger.objects.filter(tenant=tenant).aggregate(s=Sum("cost_picodollars"))["s"] or 0) // NANO_PICO


async def _admit(check: BudgetCheck, tenant, reserve: int):
    """What proxy.admission does for one call: admit, seeding the counter when it is missing."""
    slot = admission.new_slot_id()

    class Tz:  # the tenant entry's time zone is all the seed reads
        tz = UTC

    admitted, reservation = await admission._admit_seeding(slot, [], 0, None, [check], reserve, Tz, datetime.now(UTC))
    return admitted, reservation


def test_a_redis_that_lost_its_data_gets_counters_rebuilt_from_ledger_orphans_and_open_reservations(
    own_redis, acme_budget
):
    limiter, client, restart = own_redis
    acme, budget = acme_budget
    check = _check(budget, 20_000)
    keeper = Recovery()

    async def scenario():
        await keeper.tick(limiter)
        first_epoch = keeper.epoch
        ok, _in_flight = await _admit(check, acme, 6_000)  # call A: still running through the loss
        assert ok.ok
        ok, logged = await _admit(check, acme, 5_000)  # call B: answered, its log row on its way
        assert ok.ok
        logged.call_ref = "req-b"
        await admission.settle(logged, 10, 3_000)
        ok, late = await _admit(check, acme, 5_000)  # call C: answered right after the loss
        assert ok.ok
        assert int(client.get(check.key)) == 3_000

        restart()  # Redis dies without persistence: counter, reservations and stream are gone
        await asyncio.sleep(0.05)  # the limiter notices its connection is gone

        late.call_ref = "req-c"
        await admission.settle(late, 10, 2_000)  # the counter is missing: C's spend is kept as an orphan
        assert client.hgetall(check.key + ":orph") == {b"req-c": b"2000"}
        _store_call(acme, "req-b", 3_000)  # the spool stores B (its stream entry died with Redis)
        await keeper.tick(limiter)  # notices the new epoch, puts A's reservation back
        assert keeper.epoch != first_epoch
        assert int(client.hget(check.key + ":res", "_total")) == 6_000

        # D: 3,000 (ledger) + 2,000 (orphan C) + 6,000 (A, in flight) + 9,001 > 20,000: refused.
        refused, none = await _admit(check, acme, 9_001)
        fits, reservation = await _admit(check, acme, 9_000)
        return refused, none, fits, reservation

    refused, none, fits, reservation = asyncio.run(scenario())
    assert not refused.ok and refused.reason == "budget" and none is None
    assert fits.ok and reservation is not None
    assert int(client.get(check.key)) == 5_000  # ledger (B) + orphan (C): each call once
    assert not client.exists(check.key + ":orph")
    _store_call(acme, "req-c", 2_000)  # C's row arrives later: the counter already holds it
    assert int(client.get(check.key)) == _ledger_nanos(acme)


def test_an_orphan_the_ledger_already_holds_is_not_counted_twice(own_redis, acme_budget):
    _limiter, client, restart = own_redis
    acme, budget = acme_budget
    check = _check(budget, 100_000)

    async def scenario():
        _ok, call = await _admit(check, acme, 1_000)
        restart()
        await asyncio.sleep(0.05)
        call.call_ref = "req-e"
        await admission.settle(call, 10, 700)  # an orphan...
        _store_call(acme, "req-e", 700)  # ...whose row the spool has stored meanwhile
        await _admit(check, acme, 1_000)

    asyncio.run(scenario())
    assert int(client.get(check.key)) == 700 == _ledger_nanos(acme)


def test_a_redis_restarted_from_an_older_snapshot_has_its_stale_counters_rebuilt(own_redis, acme_budget):
    limiter, client, restart = own_redis
    acme, budget = acme_budget
    check = _check(budget, 100_000)
    keeper = Recovery()

    async def scenario():
        await keeper.tick(limiter)
        for n, nanos in enumerate((1_000, 2_000)):
            _ok, call = await _admit(check, acme, 5_000)
            call.call_ref = f"req-{n}"
            await admission.settle(call, 10, nanos)
            _store_call(acme, f"req-{n}", nanos)
        client.save()  # the snapshot holds both calls...
        _ok, call = await _admit(check, acme, 5_000)
        call.call_ref = "req-2"
        await admission.settle(call, 10, 4_000)  # ...but not this one
        _store_call(acme, "req-2", 4_000)
        restart()  # back from the snapshot: the counter says 3,000 though 7,000 were spent
        await asyncio.sleep(0.05)
        assert int(client.get(check.key)) == 3_000
        await keeper.tick(limiter)  # another run id: a new epoch, the stale counter dropped
        assert not client.exists(check.key)
        await _admit(check, acme, 5_000)

    asyncio.run(scenario())
    assert int(client.get(check.key)) == 7_000 == _ledger_nanos(acme)


def test_a_dead_processs_reservations_and_slots_are_freed_once_its_lease_runs_out(own_redis, acme_budget):
    limiter, client, _restart = own_redis
    _acme, budget = acme_budget
    check = _check(budget, 100_000)
    keeper = Recovery()
    dead = "deadbeef0042"  # a worker SIGKILLed mid-call: its lease is never renewed

    async def scenario():
        await keeper.tick(limiter)  # this process's lease
        await admission.seed_budget_counter(check.budget_id, check.key, UTC, datetime.now(UTC))
        ok, mine = await limiter.admit(admission.new_slot_id(), [], 0, ("k:7", 5), [check], 4_000)
        assert ok.ok
        for n in range(2):
            ok, _ = await limiter.admit(f"{dead}{n}", [], 0, ("k:7", 5), [check], 3_000)
            assert ok.ok
        assert int(client.hget(check.key + ":res", "_total")) == 10_000
        first = await keeper.sweep(limiter)  # the dead lease is seen missing: not freed yet
        await asyncio.sleep(0.35)
        await keeper.tick(limiter)  # renews our lease (and may sweep: every other tick)
        await keeper.sweep(limiter)
        return first, mine

    first, mine = asyncio.run(scenario())
    assert (first, keeper.swept) == (0, 4)  # two reservations and two parallel slots
    assert int(client.hget(check.key + ":res", "_total")) == 4_000  # ours is still held
    assert client.zrange("gw:par:k:7", 0, -1) == [mine.request_id.encode()]


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_call_its_dead_process_answered_but_never_settled_is_settled_from_its_spool_once(
    own_redis, acme_budget, tmp_path
):
    limiter, client, _restart = own_redis
    acme, budget = acme_budget
    check = _check(budget, 100_000)
    keeper = Recovery()
    slot = "deadbeef0077" + "1"

    async def scenario():
        await admission.seed_budget_counter(check.budget_id, check.key, UTC, datetime.now(UTC))
        ok, _ = await limiter.admit(slot, [], 0, None, [check], 5_000)
        assert ok.ok
        await keeper.sweep(limiter)
        await asyncio.sleep(0.35)
        await keeper.sweep(limiter)  # its process's lease is gone: the reservation is freed

    asyncio.run(scenario())
    assert keeper.swept == 1 and int(client.hget(check.key + ":res", "_total")) == 0
    assert int(client.get(check.key)) == 0  # the answered call's spend is in no counter yet

    # Its spool segment: the call was answered (and logged) before the process died.
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    row = record(acme, acme.virtual_keys.first(), cost=1_200 * NANO_PICO, day=datetime.now(UTC).date())
    row.update(
        request_id="req-dead", created_at=datetime.now(UTC), settle={"slot": slot, "keys": [check.key], "nanos": 1_200}
    )
    (spool_dir / f"{socket.gethostname()}-{_dead_pid()}-1.jsonl").write_bytes(encode(row) + b"\n")
    spool = Spool(spool_dir)
    assert spool.settle(LogBuffer()._settle_rows, min_age=0, lost=limiter.settle_lost) == 1
    assert int(client.get(check.key)) == 1_200 == _ledger_nanos(acme)
    # Applied once: the same settlement again (a segment settled twice after a crash) changes nothing.
    assert limiter.settle_lost([row["settle"]]) == 0
    assert int(client.get(check.key)) == 1_200
