"""Call logs leave the hot path through this buffer.

The proxy appends a plain dict (microseconds); a background task hands the buffer to its sinks every
GATEWAY_LOG_FLUSH_INTERVAL seconds or GATEWAY_LOG_BATCH_SIZE rows. On a normal shutdown (ASGI
lifespan, or interpreter exit) whatever is left is flushed.

Sinks, all fed per flushed batch (nothing per request):
- the store (`LogBuffer.sink`), which must accept every row: `DatabaseSink` (the call-log rows and
  what the batch hooks write, in one transaction) or, in a server process with REDIS_URL,
  `observability.stream.StreamSink` (a durable Redis stream that a consumer group writes into the
  database). Only the store's failures are retried, degraded or counted as refused (see `flush_sync`).
- fan-out sinks (`LogBuffer.fanout`), fed with the rows the store accepted: live logs
  (`observability.live.LiveSink`). Their failures are logged and never hold the logs back.
- batch hooks (`register_batch_hook`): called by `DatabaseSink` with its cursor and the rows it just
  inserted, inside the same transaction, so what they write commits or rolls back with those rows
  (billing registers its spend ledger). Each stored row reaches them once: a redelivered stream entry
  skipped as a duplicate does not. An exception in one fails the whole batch, like a refused row.
- hooks (`register_hook`): called with the rows just committed to the database, once per row, in the
  process that wrote them (a gateway, or the stream's consumer): rollups, metrics, traces.

`observability.background.serve()` is called once by a server process (ASGI lifespan start-up) and
turns on the live sink and, with REDIS_URL, the stream and its consumer; anything else (tests,
management commands, `flush_sync`) writes straight to the database.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import redis.exceptions
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError

from gateway_project.common.dbconn import keep_connection
from observability import metrics
from observability.text import storable, storable_deep

logger = logging.getLogger("gateway.logs")

MAX_BUFFERED = 200_000
# How often the flusher rotates and settles the spool's segments (seconds).
SPOOL_TEND_INTERVAL = 2.0
# pg_advisory_xact_lock key of the stream consumers' check-then-insert (any constant unique to it).
DEDUPE_LOCK = 0x6C6F6773  # "logs"


class LogSink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...


# "The store is away, try again later" as opposed to "this batch is wrong": the database, or Redis in
# front of it. Rows are put back in order, never degraded or dropped, on these.
AWAY: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class DatabaseSink:
    """Plain tuples, copied into the table with COPY on PostgreSQL (one prepared INSERT run with
    executemany elsewhere).

    bulk_create built a model instance per row; measured under load, that Python work held the GIL
    long enough to add tens of milliseconds to the event loop's p99. Tuples cost a fraction of it, and
    COPY a fraction of executemany's: psycopg writes the rows in C, and PostgreSQL parses and plans one
    statement per batch instead of one per row (its CPU shares the machine with the gateway's).
    """

    def __init__(self, *, dedupe: bool = False) -> None:
        self._sql: str | None = None
        self._copy_sql = ""
        self._columns: list[tuple[str, Any, Any]] = []
        # The stream's consumer may see an entry twice (redelivered after a crash between commit and
        # acknowledgement, or written directly while Redis was away): then rows already stored are skipped.
        self.dedupe = dedupe

    def _prepare(self) -> str:
        import orjson
        from django.db import connection

        from observability.models import CallLog

        fields = [f for f in CallLog._meta.concrete_fields if not f.primary_key]
        converters = {
            "JSONField": lambda v: orjson.dumps(v).decode(),
            # SQLite wants text; PostgreSQL takes the aware datetime as it is.
            "DateTimeField": connection.ops.adapt_datetimefield_value,
            "DateField": connection.ops.adapt_datefield_value,
        }
        # A record may predate a column (a buffer filled by an older writer, or a test's hand-made row):
        # a missing value takes the column's default rather than NULL.
        self._columns = [
            (f.attname, converters.get(f.get_internal_type()), f.get_default() if f.has_default() else None)
            for f in fields
        ]
        quote = connection.ops.quote_name
        cols = ", ".join(quote(f.column) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        self._copy_sql = f"COPY {quote(CallLog._meta.db_table)} ({cols}) FROM STDIN"
        return f"INSERT INTO {quote(CallLog._meta.db_table)} ({cols}) VALUES ({marks})"

    def write(self, records: list[dict[str, Any]]) -> None:
        from django.db import connection, transaction

        keep_connection()
        if self._sql is None:
            self._sql = self._prepare()
        with transaction.atomic(), connection.cursor() as cursor:
            if self.dedupe:
                records = self._not_yet_stored(cursor, records)
            rows = [
                tuple(
                    convert(r.get(name, default)) if convert else r.get(name, default)
                    for name, convert, default in self._columns
                )
                for r in records
            ]
            if rows:
                if connection.vendor == "postgresql":
                    # The psycopg cursor under Django's wrapper; its errors raised as Django's (AWAY and
                    # the retry in parts tell them apart), as executemany's are.
                    with connection.wrap_database_errors, cursor.cursor.copy(self._copy_sql) as copy:
                        for row in rows:
                            copy.write_row(row)
                else:
                    cursor.executemany(self._sql, rows)
                run_batch_hooks(cursor, records)
        if records:
            after_write(records)

    def missing(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records whose call is not stored yet, by a read that takes no lock (the spool's check:
        usually every row is there, and the consumers must not wait on it). Storing the ones it
        returns goes through `write`, whose dedupe is the authority."""
        from django.db import connection

        keep_connection()
        with connection.cursor() as cursor:
            return self._not_yet_stored(cursor, records, lock=False, count=False)

    @staticmethod
    def _not_yet_stored(
        cursor: Any, records: list[dict[str, Any]], *, lock: bool = True, count: bool = True
    ) -> list[dict[str, Any]]:
        """The records whose call is not in the table yet, and each call once.

        A call is its tenant, request id and start time: clients may choose their request id (and reuse
        it), so the request id alone would drop a genuine second call and its spend. Two consumers that
        both hold a redelivered entry are serialised by a transaction-level advisory lock, so neither can
        insert between the other's check and insert.
        """
        from django.db import connection

        from observability.models import CallLog

        stamps = [r.get("created_at") for r in records if r.get("created_at") is not None]
        ids = list({r.get("request_id") for r in records})
        seen: set[tuple] = set()
        if connection.vendor == "postgresql":
            if lock:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DEDUPE_LOCK])
            if stamps:
                # One array parameter instead of an IN list; the time range lets PostgreSQL prune
                # partitions, the request id index finds the rows.
                cursor.execute(
                    f"SELECT tenant_id, request_id, created_at FROM {CallLog._meta.db_table} "
                    "WHERE request_id = ANY(%s) AND created_at >= %s AND created_at <= %s",
                    [ids, min(stamps), max(stamps)],
                )
                seen = set(cursor.fetchall())
        elif stamps:
            seen = set(
                CallLog.objects.filter(
                    request_id__in=ids, created_at__gte=min(stamps), created_at__lte=max(stamps)
                ).values_list("tenant_id", "request_id", "created_at")
            )
        fresh = []
        for r in records:
            call = (r.get("tenant_id"), r.get("request_id"), r.get("created_at"))
            if call in seen:
                if count:
                    metrics.incr("calllog_rows_duplicate")
                continue
            seen.add(call)
            fresh.append(r)
        return fresh

    def write_batch_hooks_only(self, records: list[dict[str, Any]]) -> None:
        """The batch hooks alone, for calls whose log rows the database refuses: the spend ledger's
        money is never lost with the row."""
        from django.db import connection, transaction

        keep_connection()
        with transaction.atomic(), connection.cursor() as cursor:
            run_batch_hooks(cursor, records)


# Column sizes of CallLog's text fields, for the degraded retry of a refused row.
_TEXT_LIMITS = {
    "request_id": 100,
    "endpoint": 40,
    "requested_model": 200,
    "variant": 200,
    "provider": 100,
    "upstream_model": 200,
    "error_type": 100,
    "end_user": 200,
}
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def degraded(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """The row with everything a database might refuse made safe, and its free text cleared.

    The keys the batch hooks group by (end user, model, tags) keep their (storable) values, so the
    spend ledger written with this row still reconciles with the call log.
    """
    row = dict(record)
    for name, limit in _TEXT_LIMITS.items():
        value = row.get(name)
        row[name] = storable(value)[:limit] if isinstance(value, str) else ""
    row["error_message"] = f"[the database refused this call log row ({reason}); its free text was cleared]"
    tags = row.get("tags")
    row["tags"] = [storable(t)[:100] for t in tags if isinstance(t, str)][:20] if isinstance(tags, list) else []
    row["attempts"] = []
    for name in _COUNTS:
        value = row.get(name)
        if not (isinstance(value, int) and 0 <= value <= 2**31 - 1):
            row[name] = None
    status = row.get("status_code")
    if not (isinstance(status, int) and 0 <= status <= 32767):
        row["status_code"] = 0
    return row


BatchHook = Callable[[Any, list[dict[str, Any]]], None]

# Run in the call-log rows' transaction (see the module docstring); in registration order.
_batch_hooks: list[BatchHook] = []


def register_batch_hook(hook: BatchHook) -> None:
    """Have `hook(cursor, records)` run in the transaction of every batch `DatabaseSink` stores.

    Registered from an AppConfig.ready(); registering the same hook again changes nothing.
    """
    if hook not in _batch_hooks:
        _batch_hooks.append(hook)


def run_batch_hooks(cursor: Any, records: list[dict[str, Any]]) -> None:
    for hook in _batch_hooks:
        hook(cursor, records)


def after_write(records: list[dict[str, Any]]) -> None:
    """Runs the hooks on rows just committed (rollups, bodies, metrics, traces); a failing hook is logged."""
    for hook in _hooks:
        try:
            hook(records)
        except Exception:
            logger.exception("call log hook %r failed", hook)


_hooks: list[Any] = []


def register_hook(hook: Any) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


class LogBuffer:
    def __init__(self, sink: LogSink | None = None, fanout: list[LogSink] | None = None) -> None:
        self.sink: LogSink = sink or DatabaseSink()
        self.fanout: list[LogSink] = list(fanout or ())
        self._records: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._lock = threading.Lock()  # serialises flushes from the task and from atexit
        self.batch_size = settings.GATEWAY_LOG_BATCH_SIZE
        self.interval = settings.GATEWAY_LOG_FLUSH_INTERVAL
        self.consumer: Any = None  # observability.stream.StreamConsumer when this process runs one
        self._fanout_logged: dict[int, float] = {}
        # observability.spool.Spool in a server process: every row on local disk until the database has it.
        self.spool: Any = None
        self._spool_store: DatabaseSink | None = None
        self._spool_due = 0.0
        # Applies budget settlements read back from a dead process's spool segment (set by proxy.recovery).
        self.lost_settlements: Any = None
        self._away_since: float | None = None  # the store has been away since (one log line per outage)

    def add(self, record: dict[str, Any]) -> None:
        if self.spool is not None:
            self.spool.append(record)
        if len(self._records) >= MAX_BUFFERED:
            self._records.popleft()
            logger.error("call log buffer full (%d rows): dropping the oldest row", MAX_BUFFERED)
        self._records.append(record)
        if self._wake is not None and len(self._records) >= self.batch_size:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._records)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-log-flusher")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._records:
                try:
                    await self.flush()
                except Exception:
                    # Never let one bad flush end the flusher: the rows are still in the buffer or stored.
                    logger.exception("call log flush failed")
            if self.spool is not None and time.monotonic() >= self._spool_due:
                try:
                    await sync_to_async(self._tend_spool, thread_sensitive=False)()
                except Exception:
                    logger.exception("tending the call-log spool failed")

    def _take(self, limit: int) -> list[dict[str, Any]]:
        batch = []
        while self._records and len(batch) < limit:
            batch.append(self._records.popleft())
        return batch

    def flush_sync(self) -> int:
        written = 0
        with self._lock:
            # The rows buffered when the flush starts, not those that arrive while it writes: a flusher
            # that drained to empty chased the requests a few rows at a time (at c=1, about three rows
            # per COPY, rollup upsert and commit: the writer thread busy 85 % of the time and a plain
            # request's CPU doubled), where the next tick takes them in one batch.
            due = len(self._records)
            while due > 0 and self._records:
                batch = self._take(min(due, 5000))
                due -= len(batch)
                try:
                    self.sink.write(batch)
                except AWAY as exc:
                    # The store is away: put the rows back in order and try again on the next tick.
                    # Logs are never dropped because the database hiccupped. Logged once per outage.
                    self._records.extendleft(reversed(batch))
                    if self._away_since is None:
                        self._away_since = time.monotonic()
                        logger.error("writing call logs failed (%s: %s); will retry", type(exc).__name__, exc)
                    break
                except Exception as exc:
                    # Something in the batch itself is wrong (a value the database refuses). Write it in
                    # parts so a single bad row cannot block everybody's logs and spend.
                    done, away = self._write_in_parts(batch, exc)
                    written += len(done)
                    self._fan_out(done)
                    if away:
                        break
                    continue
                written += len(batch)
                self._fan_out(batch)
                if self._away_since is not None:
                    logger.warning("writing call logs works again after %.1f s", time.monotonic() - self._away_since)
                    self._away_since = None
            if self.spool is not None:
                self.spool.sync()  # what this flush covered is on disk: the bound on a machine crash's loss
        return written

    def _tend_spool(self, *, final: bool = False) -> None:
        """Rotate the spool's segment and settle old ones (see observability.spool). Runs in a worker
        thread beside the flushes, never holding them up."""
        spool = self.spool
        spool.sync()
        self._spool_due = time.monotonic() + SPOOL_TEND_INTERVAL
        spool.rotate(force=final)
        try:
            spool.settle(
                self._settle_rows,
                min_age=0.0 if final else None,
                max_files=None if final else 2,
                lost=self.lost_settlements,
            )
        except Exception:
            logger.exception("settling the call-log spool failed")

    def drain_spool(self) -> None:
        """Store every spooled row the database lacks, now (grace or not): Redis lost its data, and with
        it the stream's backlog, so what the spool holds must be in the ledger before budget counters
        are rebuilt from it (proxy.recovery)."""
        self._tend_spool(final=True)

    def _settle_rows(self, records: list[dict[str, Any]]) -> None:
        if self._spool_store is None:
            self._spool_store = DatabaseSink(dedupe=True)
        fresh = self._spool_store.missing(records)
        if fresh:
            self._spool_store.write(fresh)

    def _fan_out(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        for sink in self.fanout:
            try:
                sink.write(records)
            except Exception:
                # Once a minute per sink: a channel layer that is away must not flood the log every flush.
                now = time.monotonic()
                if now - self._fanout_logged.get(id(sink), -60.0) >= 60.0:
                    self._fanout_logged[id(sink)] = now
                    logger.exception("call log sink %r failed", sink)

    def _write_in_parts(self, batch: list[dict[str, Any]], refused: Exception) -> tuple[list[dict[str, Any]], bool]:
        """A refused batch, halved until each refused row stands alone, then that row retried degraded.

        A few bad rows among thousands cost a few dozen writes, not one transaction per row; rows keep
        their order. Returns (rows written, as written; store away?).
        """
        written: list[dict[str, Any]] = []
        parts: deque[list[dict[str, Any]]] = deque([batch])
        error = refused
        tried = True  # the whole batch was just refused
        while parts:
            part = parts.popleft()
            if not tried:
                try:
                    self.sink.write(part)
                    written.extend(part)
                    continue
                except AWAY:
                    self._put_back(part, parts)
                    return written, True
                except Exception as exc:
                    error = exc
            tried = False
            if len(part) > 1:
                middle = len(part) // 2
                parts.extendleft([part[middle:], part[:middle]])  # the first half goes first
                continue
            record = part[0]
            metrics.incr("calllog_rows_refused")
            logger.error(
                "the database refused call log %s; retrying it degraded", record.get("request_id"), exc_info=error
            )
            try:
                written.append(self._write_refused(record, type(error).__name__))
            except AWAY:
                self._put_back(part, parts)
                return written, True
        return written, False

    def _put_back(self, part: list[dict[str, Any]], parts: deque[list[dict[str, Any]]]) -> None:
        """The store went away mid-way: the rows not written yet go back to the buffer, in order."""
        rest = list(part)
        for later in parts:
            rest.extend(later)
        self._records.extendleft(reversed(rest))
        logger.exception("writing call logs failed; will retry")

    def _write_refused(self, record: dict[str, Any], reason: str) -> dict[str, Any]:
        """A refused row: retry it degraded; if even that is refused, keep at least its spend."""
        row = degraded(record, reason)
        try:
            self.sink.write([row])
            metrics.incr("calllog_rows_degraded")
            return row
        except AWAY:
            raise
        except Exception:
            metrics.incr("calllog_rows_lost")
            logger.exception("the database refused call log %r even degraded; keeping its spend only", row)
        write_batch_hooks_only = getattr(self.sink, "write_batch_hooks_only", None)
        if write_batch_hooks_only is None:
            return row
        try:
            write_batch_hooks_only([storable_deep(row)])
        except AWAY:
            raise
        except Exception:
            metrics.incr("ledger_rows_lost")
            logger.exception("the spend of call %s is lost: the database refused it", row.get("request_id"))
        return row

    async def flush(self) -> int:
        return await sync_to_async(self.flush_sync, thread_sensitive=False)()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        await self.flush()
        if self.consumer is not None:
            # After the final flush into the stream: the consumer drains it into the database before
            # the process exits, so a SIGTERM'd gateway leaves no row behind even when it is the only one.
            await self.consumer.stop()
            self.consumer = None
        if self.spool is not None:
            # Everything is stored by now (directly, or drained from the stream): check this process's
            # segments against the database, store what is missing, and delete them.
            await sync_to_async(self._tend_spool, thread_sensitive=False)(final=True)


buffer = LogBuffer()


@atexit.register
def _flush_at_exit() -> None:
    if len(buffer):
        try:
            buffer.flush_sync()
        except Exception:
            logger.exception("final call log flush failed")
