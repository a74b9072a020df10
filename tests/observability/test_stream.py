"""The durable call log stream: every flushed row reaches PostgreSQL once, through restarts and SIGTERM."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.db import connections

from billing.models import SpendLedger
from billing.selectors import reconcile
from observability import stream
from observability.logbuffer import DatabaseSink, LogBuffer
from observability.models import CallLog
from tests.helpers.billing import record

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="the log stream needs Redis (REDIS_URL)"),
]

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)


def calls(tenant, key, n: int, *, prefix: str = "r", cost: int = 10) -> list[dict]:
    rows = []
    for i in range(n):
        row = record(tenant, key, cost=cost)
        row["request_id"] = f"{prefix}{i}"
        row["created_at"] = T0 + timedelta(milliseconds=i)
        rows.append(row)
    return rows


def consumer(name: str, **kwargs) -> stream.StreamConsumer:
    return stream.StreamConsumer(name=name, block_ms=50, **kwargs)


def run(coro):
    """asyncio.run with one worker thread for the consumer's database writes, whose connection is
    closed at the end (the test database is dropped after the session)."""

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        try:
            return await coro
        finally:
            await loop.run_in_executor(None, connections.close_all)

    return asyncio.run(main())


def test_rows_go_through_the_stream_into_the_database_with_their_spend(acme, keys, rds):
    web, _ = keys
    rows = calls(acme, web, 1200)
    rows[0]["tags"] = ["team-a"]
    rows[1]["attempts"] = [{"deployment": 1, "error": "x"}]
    rows[2]["prompt_tokens"] = 2**40  # beyond the integer column: the consumer keeps the row degraded
    buffer = LogBuffer(sink=stream.StreamSink())
    for row in rows:
        buffer.add(row)
    assert buffer.flush_sync() == 1200
    assert rds.xlen(stream.stream_name()) == 3  # 500 rows per entry: one round trip, three entries
    assert CallLog.objects.count() == 0

    async def go():
        c = consumer("c1")
        written = await c.drain(5)
        await c.client.aclose()
        return written

    assert run(go()) == 3
    assert CallLog.objects.count() == 1200
    first = CallLog.objects.get(request_id="r0")
    assert first.created_at == T0 and first.tags == ["team-a"] and first.day == rows[0]["day"]
    assert CallLog.objects.get(request_id="r1").attempts == [{"deployment": 1, "error": "x"}]
    assert CallLog.objects.get(request_id="r2").prompt_tokens is None
    assert SpendLedger.objects.get().cost_picodollars == 12_000
    assert reconcile(acme) == []
    assert rds.xlen(stream.stream_name()) == 0  # acknowledged entries are deleted: the stream does not grow


def test_a_consumer_restart_with_pending_entries_loses_nothing_and_inserts_nothing_twice(acme, keys, rds):
    web, _ = keys
    stream.StreamSink().write(calls(acme, web, 30, prefix="a"))
    stream.StreamSink().write(calls(acme, web, 20, prefix="b"))

    async def go():
        # "dead" takes both entries and writes the first one into the database, then dies before it
        # acknowledges anything (killed between commit and XACK).
        dead = consumer("dead")
        await dead._ensure_group()
        taken = stream._entries(
            await dead.client.xreadgroup(stream.GROUP, "dead", {stream.stream_name(): ">"}, count=10)
        )
        assert len(taken) == 2
        assert await asyncio.get_running_loop().run_in_executor(None, dead._write, taken[:1])
        await dead.client.aclose()
        assert await asyncio.get_running_loop().run_in_executor(None, CallLog.objects.count) == 30

        # Its replacement claims the idle entries (XAUTOCLAIM) and writes what is missing, once.
        await asyncio.sleep(0.1)
        fresh = consumer("fresh", claim_idle=0.05)
        written = await fresh.drain(5)
        pending = await fresh.client.xpending(stream.stream_name(), stream.GROUP)
        await fresh.client.aclose()
        return written, pending

    written, pending = run(go())
    assert written == 2
    assert pending["pending"] == 0
    assert CallLog.objects.count() == 50
    assert CallLog.objects.filter(request_id="a0").count() == 1
    assert SpendLedger.objects.get().cost_picodollars == 500  # 50 calls at 10, never 80 at 10
    assert reconcile(acme) == []


def test_a_client_reusing_its_request_id_still_gets_every_call_logged(acme, keys, rds):
    """Deduplication is per call (tenant, request id, start time): a client-chosen id cannot hide calls."""
    web, _ = keys
    twice = calls(acme, web, 2, prefix="same")
    twice[1]["request_id"] = "same0"
    sink = DatabaseSink(dedupe=True)
    sink.write(twice)
    sink.write(twice)  # the same entry delivered again
    assert CallLog.objects.filter(request_id="same0").count() == 2
    assert SpendLedger.objects.get().cost_picodollars == 20

    # Redis away: the gateway's buffer writes straight to the database (deduplicated as well).
    closed = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    buffer = LogBuffer(sink=stream.StreamSink(client=closed, fallback=DatabaseSink(dedupe=True)))
    for row in calls(acme, web, 3, prefix="away"):
        buffer.add(row)
    assert buffer.flush_sync() == 3
    assert CallLog.objects.filter(request_id__startswith="away").count() == 3
