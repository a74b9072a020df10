"""Call logs leave the hot path through this buffer.

The proxy appends a plain dict (microseconds); a background task bulk-inserts the buffer every
GATEWAY_LOG_FLUSH_INTERVAL seconds or GATEWAY_LOG_BATCH_SIZE rows. On a normal shutdown (ASGI
lifespan, or interpreter exit) whatever is left is flushed. The sink is swappable: the database
today, a durable Redis stream later.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections import deque
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError

from observability import metrics
from observability.text import storable, storable_deep

logger = logging.getLogger("gateway.logs")

MAX_BUFFERED = 200_000


class LogSink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...


class DatabaseSink:
    """One prepared INSERT run with executemany over plain tuples.

    bulk_create built a model instance per row; measured under load, that Python work held the GIL
    long enough to add tens of milliseconds to the event loop's p99. Tuples cost a fraction of it.
    """

    def __init__(self) -> None:
        self._sql: str | None = None
        self._columns: list[tuple[str, Any, Any]] = []

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
        return f"INSERT INTO {quote(CallLog._meta.db_table)} ({cols}) VALUES ({marks})"

    def write(self, records: list[dict[str, Any]]) -> None:
        from django.db import close_old_connections, connection, transaction

        close_old_connections()
        if self._sql is None:
            self._sql = self._prepare()
        rows = [
            tuple(
                convert(r.get(name, default)) if convert else r.get(name, default)
                for name, convert, default in self._columns
            )
            for r in records
        ]
        from billing.ledger import write_ledger

        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(self._sql, rows)
            write_ledger(cursor, records, connection.ops.adapt_datefield_value)
        after_write(records)

    def write_ledger_only(self, records: list[dict[str, Any]]) -> None:
        """The spend of calls whose log rows the database refuses: the money is never lost with the row."""
        from django.db import close_old_connections, connection, transaction

        from billing.ledger import write_ledger

        close_old_connections()
        with transaction.atomic(), connection.cursor() as cursor:
            write_ledger(cursor, records, connection.ops.adapt_datefield_value)


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

    The ledger's keys (end user, model, tags) keep their (storable) values, so the ledger written
    with this row still reconciles with the call log.
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


def after_write(records: list[dict[str, Any]]) -> None:
    """Hook for consumers of written logs (spend ledger, live dashboards); set by later apps."""
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
    def __init__(self, sink: LogSink | None = None) -> None:
        self.sink: LogSink = sink or DatabaseSink()
        self._records: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._lock = threading.Lock()  # serialises flushes from the task and from atexit
        self.batch_size = settings.GATEWAY_LOG_BATCH_SIZE
        self.interval = settings.GATEWAY_LOG_FLUSH_INTERVAL

    def add(self, record: dict[str, Any]) -> None:
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
                await self.flush()

    def _take(self) -> list[dict[str, Any]]:
        batch = []
        while self._records and len(batch) < 5000:
            batch.append(self._records.popleft())
        return batch

    def flush_sync(self) -> int:
        written = 0
        with self._lock:
            while self._records:
                batch = self._take()
                try:
                    self.sink.write(batch)
                except (OperationalError, InterfaceError):
                    # The database is away: put the rows back in order and try again on the next tick.
                    # Logs are never dropped because the database hiccupped.
                    self._records.extendleft(reversed(batch))
                    logger.exception("writing %d call logs failed; will retry", len(batch))
                    break
                except Exception:
                    # Something in the batch itself is wrong (a value the database refuses). Write the
                    # rows one by one so a single bad row cannot block everybody's logs and ledger.
                    done, away = self._write_one_by_one(batch)
                    written += done
                    if away:
                        break
                    continue
                written += len(batch)
        return written

    def _write_one_by_one(self, batch: list[dict[str, Any]]) -> tuple[int, bool]:
        """Returns (rows written, database away?)."""
        written = 0
        for i, record in enumerate(batch):
            try:
                self.sink.write([record])
                written += 1
                continue
            except (OperationalError, InterfaceError):
                self._records.extendleft(reversed(batch[i:]))
                logger.exception("writing call logs failed; will retry")
                return written, True
            except Exception as exc:
                metrics.incr("calllog_rows_refused")
                logger.exception("the database refused call log %s; retrying it degraded", record.get("request_id"))
                reason = type(exc).__name__
            try:
                self._write_refused(record, reason)
                written += 1
            except (OperationalError, InterfaceError):
                self._records.extendleft(reversed(batch[i:]))
                logger.exception("writing call logs failed; will retry")
                return written, True
        return written, False

    def _write_refused(self, record: dict[str, Any], reason: str) -> None:
        """A refused row: retry it degraded; if even that is refused, keep at least its spend."""
        row = degraded(record, reason)
        try:
            self.sink.write([row])
            metrics.incr("calllog_rows_degraded")
            return
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            metrics.incr("calllog_rows_lost")
            logger.exception("the database refused call log %r even degraded; keeping its spend only", row)
        write_ledger_only = getattr(self.sink, "write_ledger_only", None)
        if write_ledger_only is None:
            return
        try:
            write_ledger_only([storable_deep(row)])
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            metrics.incr("ledger_rows_lost")
            logger.exception("the spend of call %s is lost: the database refused it", row.get("request_id"))

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


buffer = LogBuffer()


@atexit.register
def _flush_at_exit() -> None:
    if len(buffer):
        try:
            buffer.flush_sync()
        except Exception:
            logger.exception("final call log flush failed")
