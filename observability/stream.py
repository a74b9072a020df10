"""Durable call logs: a Redis stream between the gateways' log buffers and PostgreSQL.

With REDIS_URL, a server process's buffer (observability.logbuffer) hands each flushed batch to
`StreamSink`: one XADD per 500 rows, pipelined, so a batch costs one round trip. A consumer group
writes the stream into the database in batches (`StreamConsumer`):

- Where it runs: a consumer in every gateway process by default (started by the ASGI lifespan through
  `observability.background.serve()`), so the stream drains whenever any gateway runs (`make run`,
  `make serve`, several workers). `GATEWAY_LOG_CONSUMER=0` leaves the writing to dedicated
  `manage.py gateway consume-logs` processes; both can run together (one group, each entry to one of them).
- Once per call: an entry is acknowledged (and deleted) only after the rows' transaction committed. An
  entry taken by a consumer that died is claimed by another after GATEWAY_LOG_CLAIM_IDLE seconds
  (XAUTOCLAIM); rows already stored are skipped (`DatabaseSink(dedupe=True)`: tenant, request id and
  start time, under an advisory lock), so a redelivery never inserts a call twice nor counts its spend twice.
- No row lost on SIGTERM: the lifespan shutdown flushes the buffer into the stream, then this process's
  consumer drains the stream into the database before exiting. A process killed harder leaves its rows
  in Redis (flushed) or pending (taken), and the next consumer writes them.
- Redis away: the sink writes the batch straight to the database instead (deduplicated too, in case
  the XADD did land); both away: the rows stay in the buffer and are retried.
- Refused rows: the consumer writes through a private LogBuffer, so a row PostgreSQL refuses is
  retried degraded and its spend kept exactly as without the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from datetime import date, datetime
from typing import Any

import orjson
import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from gateway_project.common.dbidentity import database_identity
from observability import metrics
from observability.logbuffer import DatabaseSink, LogBuffer, LogSink
from observability.text import storable_deep

logger = logging.getLogger("gateway.logs")

STREAM_PREFIX = "gateway:calllogs"
GROUP = "calllog-writers"
# Rows per stream entry: a flush of 500 rows is one entry; bigger flushes are cut so no entry is huge.
ENTRY_ROWS = 500
# Entries a consumer takes per read (up to ENTRY_ROWS rows each), written in one pass.
READ_ENTRIES = 10
# A consumer that left no pending entry and has been idle this long is removed from the group.
FORGET_CONSUMER_MS = 3600_000


def stream_name() -> str:
    """The stream of this deployment's database: gateways that share a Redis database but write to
    different PostgreSQL databases (a staging copy, a test run next to a leftover server) must never
    take each other's call logs and write them into the wrong database."""
    return f"{STREAM_PREFIX}:{hashlib.blake2b(database_identity().encode(), digest_size=6).hexdigest()}"


def enabled() -> bool:
    return bool(settings.REDIS_URL) and settings.GATEWAY_LOG_STREAM


# --- encoding -------------------------------------------------------------------------------------------

_parsers: dict[str, Any] | None = None


def _field_parsers() -> dict[str, Any]:
    """JSON has no dates: the call log's date and time columns are parsed back from ISO 8601."""
    global _parsers
    if _parsers is None:
        from observability.models import CallLog

        parsers: dict[str, Any] = {}
        for field in CallLog._meta.concrete_fields:
            kind = field.get_internal_type()
            if kind == "DateTimeField":
                parsers[field.attname] = datetime.fromisoformat
            elif kind == "DateField":
                parsers[field.attname] = date.fromisoformat
        _parsers = parsers
    return _parsers


def _default(value: Any) -> Any:
    # Values JSON has no type for: bodies kept as bytes become text, exact numbers their decimal string.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def encode(records: list[dict[str, Any]] | dict[str, Any]) -> bytes:
    """A batch of call-log records (or one record) as JSON: bytes as text, sets as sorted lists, the rest by str."""
    try:
        return orjson.dumps(records, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # A lone surrogate (orjson refuses to encode it) that slipped past the proxy's cleaning.
        return orjson.dumps(storable_deep(records), default=_default, option=orjson.OPT_NON_STR_KEYS)


def decode(payload: bytes) -> list[dict[str, Any]]:
    records = orjson.loads(payload)
    parsers = _field_parsers()
    for record in records:
        for name, parse in parsers.items():
            value = record.get(name)
            if isinstance(value, str):
                record[name] = parse(value)
    return records


# --- producing ------------------------------------------------------------------------------------------


class StreamSink:
    """The store of a server process's log buffer when REDIS_URL is set: XADD per flushed batch."""

    def __init__(self, *, fallback: LogSink | None = None, client: redis.Redis | None = None) -> None:
        self.client = client or redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)
        self.fallback = fallback
        self._warned_at = -60.0

    def write(self, records: list[dict[str, Any]]) -> None:
        payloads = [encode(records[i : i + ENTRY_ROWS]) for i in range(0, len(records), ENTRY_ROWS)]
        try:
            pipe = self.client.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(stream_name(), {"r": payload})
            pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            if self.fallback is None:
                raise
            # Calls keep being logged while Redis is away; the fallback skips rows the stream did take.
            now = time.monotonic()
            if now - self._warned_at >= 60:
                self._warned_at = now
                logger.warning("the call log stream is unreachable; writing call logs to the database directly")
            metrics.incr("calllog_stream_fallback_rows", len(records))
            self.fallback.write(records)


# --- consuming ------------------------------------------------------------------------------------------


class StreamConsumer:
    """One member of the consumer group that writes the stream into the database."""

    def __init__(
        self,
        *,
        name: str | None = None,
        claim_idle: float | None = None,
        block_ms: int = 1000,
        url: str | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        idle = settings.GATEWAY_LOG_CLAIM_IDLE if claim_idle is None else claim_idle
        self.claim_idle_ms = max(1, int(idle * 1000))
        self.block_ms = block_ms
        self.client = aioredis.Redis.from_url(url or settings.REDIS_URL, socket_connect_timeout=2)
        self._writer = LogBuffer(sink=DatabaseSink(dedupe=True))
        self._task: asyncio.Task | None = None
        self._inflight: asyncio.Future | None = None
        self._group_ready = False
        self._own_pending = True  # a consumer restarted under its old name first finishes what it took
        self._next_claim = 0.0

    # The loop -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="gateway-log-consumer")

    async def run(self) -> None:
        logged_at = -60.0
        while True:
            try:
                await self.step(block_ms=self.block_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis or the database away: retried every second, logged once a minute.
                if time.monotonic() - logged_at >= 60:
                    logged_at = time.monotonic()
                    logger.exception("the call log consumer failed; retrying every second")
                self._group_ready = False
                await asyncio.sleep(1)

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop reading, finish the batch being written, then drain what is left in the stream."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._inflight is not None:
            try:
                await self._inflight
            except Exception:
                logger.exception("the last call log batch failed")
        try:
            await self.drain(drain_seconds)
        finally:
            await self.client.aclose()

    async def drain(self, seconds: float = 10.0) -> int:
        """Write everything the stream holds for the group now (own pending entries first)."""
        deadline = time.monotonic() + seconds
        self._own_pending = True
        total = 0
        while time.monotonic() < deadline:
            done = await self.step(block_ms=None)
            if done == 0 and not self._own_pending:
                break
            total += done
        return total

    async def step(self, *, block_ms: int | None = None) -> int:
        """One round: own unacknowledged entries, then those of dead consumers, then new ones.

        Returns the number of entries written and acknowledged.
        """
        await self._ensure_group()
        entries: list = []
        if self._own_pending:
            entries = _entries(await self.client.xreadgroup(GROUP, self.name, {stream_name(): "0"}, count=READ_ENTRIES))
            self._own_pending = bool(entries)
        if not entries and time.monotonic() >= self._next_claim:
            entries = await self._claim()
        if not entries:
            entries = _entries(
                await self.client.xreadgroup(GROUP, self.name, {stream_name(): ">"}, count=READ_ENTRIES, block=block_ms)
            )
        if not entries:
            return 0
        self._inflight = asyncio.ensure_future(self._store(entries))
        try:
            # Shielded: a stop() during the write waits for it instead of dropping the acknowledgement.
            return await asyncio.shield(self._inflight)
        finally:
            if self._inflight.done():
                self._inflight = None

    async def _store(self, entries: list) -> int:
        ids = [entry_id for entry_id, _fields in entries]
        if not await sync_to_async(self._write, thread_sensitive=False)(entries):
            # The database is away: keep the entries pending and read them again (own pending first).
            self._own_pending = True
            await asyncio.sleep(1)
            return 0
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(stream_name(), GROUP, *ids)
        pipe.xdel(stream_name(), *ids)
        await pipe.execute()
        return len(ids)

    def _write(self, entries: list) -> bool:
        """Rows of the entries into the database; True once all are committed (or refused and kept degraded)."""
        writer = self._writer
        for entry_id, fields in entries:
            payload = (fields or {}).get(b"r")
            if payload is None:
                continue  # deleted while pending: nothing left to write
            try:
                records = decode(payload)
            except Exception:
                metrics.incr("calllog_stream_undecodable")
                logger.exception("call log stream entry %s cannot be decoded; skipping it", entry_id)
                continue
            for record in records:
                writer.add(record)
        writer.flush_sync()
        if len(writer):
            writer._records.clear()  # still in the stream, pending: they come back on the next read
            return False
        return True

    async def _claim(self) -> list:
        """Entries another consumer took and never acknowledged (it died): claimed after an idle time."""
        self._next_claim = time.monotonic() + max(1.0, self.claim_idle_ms / 2000)
        claimed = await self.client.xautoclaim(
            stream_name(), GROUP, self.name, min_idle_time=self.claim_idle_ms, start_id="0-0", count=READ_ENTRIES
        )
        entries = _entries([[stream_name(), claimed[1]]]) if claimed and len(claimed) > 1 else []
        if entries:
            metrics.incr("calllog_stream_claimed", len(entries))
            logger.info("claimed %d call log entries of a consumer that stopped", len(entries))
        else:
            await self._forget_idle_consumers()
        return entries

    async def _forget_idle_consumers(self) -> None:
        # Every process start adds a consumer name; those with nothing pending and long gone are removed.
        for consumer in await self.client.xinfo_consumers(stream_name(), GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if name != self.name and consumer["pending"] == 0 and consumer["idle"] > FORGET_CONSUMER_MS:
                await self.client.xgroup_delconsumer(stream_name(), GROUP, name)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(stream_name(), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True


def _entries(response: Any) -> list:
    """XREADGROUP's [[stream, [(id, fields), ...]]] as the list of (id, fields)."""
    if not response:
        return []
    entries = []
    for _stream, items in response:
        entries.extend(items)
    return entries


async def consume_forever(*, name: str | None = None) -> None:
    """`gateway consume-logs`: run one consumer until SIGTERM/SIGINT, then drain and exit."""
    import signal

    consumer = StreamConsumer(name=name)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    consumer.start()
    await stopping.wait()
    await consumer.stop()


__all__ = [
    "GROUP",
    "StreamConsumer",
    "StreamSink",
    "consume_forever",
    "decode",
    "enabled",
    "encode",
    "stream_name",
]
