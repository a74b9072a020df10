"""The local spool: every answered call's log row on this machine's disk until PostgreSQL has it.

The database is the record. On the way to it a call-log row passes the in-memory buffer and, with
REDIS_URL, a Redis stream; either can lose it (a worker SIGKILLed between two flushes, a Redis that
restarts without its data). So a server process also appends each row to a local append-only file the
moment the call is logged (one `write`, into the page cache: a killed process loses nothing) and
fsyncs it with every flush (a machine crash loses at most one flush interval).

Files rotate every GATEWAY_SPOOL_SEGMENT seconds. A segment is settled once it is older than
GATEWAY_SPOOL_GRACE (time for the buffer and the stream's consumer to store it as usual): its rows are
looked up in the call log by call (tenant, request id, start time), the missing ones are inserted with
their ledger entries and hooks (the same dedupe as the stream's consumer, so nothing is stored twice),
and the file is deleted. While the database is away the file stays and is tried again.

Each process holds an exclusive lock on the segment it writes. A segment whose lock is free belongs to
no live process (closed by its owner, or its owner died): any gateway process of the same database
settles it, so a killed worker's rows are stored by its replacement or its siblings. Segments live in
a directory per database identity, so gateways of another database never take them.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gateway_project.common.dbidentity import database_identity
from observability import metrics
from observability.logbuffer import AWAY
from observability.stream import decode, encode

logger = logging.getLogger("gateway.logs")

SUFFIX = ".jsonl"


def spool_directory() -> Path:
    ident = hashlib.sha256(database_identity().encode()).hexdigest()[:16]
    return Path(settings.GATEWAY_SPOOL_DIR) / ident


class Spool:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or spool_directory()
        self.segment_s = settings.GATEWAY_SPOOL_SEGMENT
        self.grace_s = settings.GATEWAY_SPOOL_GRACE
        self.max_bytes = settings.GATEWAY_SPOOL_MAX_BYTES
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._written = 0  # bytes in the current segment
        self._dirty = False
        self._dirty_since = 0.0  # when the oldest row not yet fsynced was written
        # The longest a row waited for its fsync (what a machine crash could have lost, in time).
        self.max_unsynced_s = 0.0
        self._lock = threading.Lock()  # append on the event loop, rotate/sync in the flusher thread
        self._full_logged = False
        self._away_since: float | None = None

    # -- writing (the event loop) ------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """One row, written through to the page cache. Never raises: the call is answered already."""
        line = encode(record) + b"\n"  # the stream's encoding: one row per line, read back by its decode
        with self._lock:
            try:
                if self._fd is None:
                    self._open()
                if self._written + len(line) > self.max_bytes:
                    self._full()
                    return
                os.write(self._fd, line)  # type: ignore[arg-type]
                self._written += len(line)
                if not self._dirty:
                    self._dirty = True
                    self._dirty_since = time.monotonic()
            except OSError as exc:
                metrics.incr("spool_write_errors")
                if not self._full_logged:
                    self._full_logged = True
                    logger.error("writing the call-log spool failed: %s", exc)

    def _full(self) -> None:
        metrics.incr("spool_rows_not_spooled")
        if not self._full_logged:
            self._full_logged = True
            logger.error(
                "the call-log spool segment reached GATEWAY_SPOOL_MAX_BYTES (%d); rows go unspooled", self.max_bytes
            )

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._path, self._opened, self._written = fd, path, time.monotonic(), 0
        self._full_logged = False

    # -- the flusher thread ------------------------------------------------------------------------------

    def sync(self) -> None:
        """fsync what was appended since the last call (each flush): the bound on a machine crash's loss."""
        with self._lock:
            fd, dirty, since = self._fd, self._dirty, self._dirty_since
            self._dirty = False
        if fd is not None and dirty:
            try:
                os.fsync(fd)
            except OSError:
                metrics.incr("spool_write_errors")
                return
            waited = time.monotonic() - since
            self.max_unsynced_s = max(self.max_unsynced_s, waited)
            metrics.incr("spool_fsyncs")
            if waited > 1.0:  # twice the flush interval: the flusher fell behind
                metrics.incr("spool_fsyncs_late")

    def rotate(self, *, force: bool = False) -> None:
        """Close the current segment when it is old enough (it becomes settleable); the next row opens a new one."""
        with self._lock:
            if self._fd is None or not (force or time.monotonic() - self._opened >= self.segment_s):
                return
            fd, path, empty = self._fd, self._path, self._written == 0
            self._fd = self._path = None
            self._dirty = False  # fsynced below
            try:
                os.fsync(fd)
            finally:
                os.close(fd)  # releases the lock
            if empty and path is not None:
                path.unlink(missing_ok=True)

    def settle(
        self, store: Any, *, min_age: float | None = None, max_files: int | None = None, lost: Any = None
    ) -> int:
        """Store what settleable segments hold and the database lacks, then delete them.

        `store(records)` inserts the records not stored yet (DatabaseSink(dedupe=True).write). `lost`, if
        given, takes the budget settlements (a row's "settle") of a segment whose writer died: it may have
        died between answering and settling (proxy.limits.RedisLimiter.settle_lost applies each one only
        if it never was). Returns the number of rows read from settled segments; stops at the first
        database (or `lost`) failure, tried again later: both are idempotent.
        """
        grace = self.grace_s if min_age is None else min_age
        now = time.time()
        current = self._path
        settled = 0
        try:
            paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return 0
        for path in paths:
            if path == current:
                continue
            try:
                if now - path.stat().st_mtime < grace:
                    continue
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue  # settled and deleted by another process meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive, or another process is settling it
                if not path.exists():
                    continue
                try:
                    count = _settle_segment(
                        fd, path, store, lost if lost is not None and not _writer_alive(path) else None
                    )
                except AWAY as exc:
                    self._away(exc)
                    return settled
                except Exception as exc:  # the limiter (Redis) is away: keep the segment for later
                    self._away(exc)
                    return settled
                path.unlink()
                settled += count
                metrics.incr("spool_rows_settled", count)
                if max_files is not None:
                    max_files -= 1
                    if max_files <= 0:
                        break
            finally:
                os.close(fd)
        if self._away_since is not None:
            logger.warning("the call-log spool settles again after %.1f s", time.monotonic() - self._away_since)
            self._away_since = None
        return settled

    def _away(self, exc: BaseException) -> None:
        if self._away_since is None:
            self._away_since = time.monotonic()
            logger.warning("settling the call-log spool failed (%s); its rows stay on disk", type(exc).__name__)


def _settle_segment(fd: int, path: Path, store: Any, lost: Any) -> int:
    count = 0
    for records in _batches(fd, path):
        _store(store, records)
        if lost is not None:
            settlements = [r["settle"] for r in records if r.get("settle")]
            if settlements:
                lost(settlements)
        count += len(records)
    return count


def _writer_alive(path: Path) -> bool:
    """Whether the process that wrote this segment (named host-pid-ns, see _open) still runs here. A
    zombie does not (its parent died too, and nobody reaped it: common in containers)."""
    try:
        host, pid, _ns = path.stem.rsplit("-", 2)
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # it runs, as another user
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
            return False
    except (OSError, ValueError):
        pass  # no /proc (not Linux): trust the signal check
    return host == socket.gethostname()


def _store(store: Any, records: list[dict[str, Any]]) -> None:
    """Store a batch; if the database refuses it (not away: a row it will never take, such as one of a
    tenant deleted since), store the rows one by one and count the refused ones, so that one such row
    cannot keep a segment, and every row after it, on disk forever."""
    try:
        store(records)
        return
    except AWAY:
        raise
    except Exception:
        pass
    for record in records:
        try:
            store([record])
        except AWAY:
            raise
        except Exception as exc:
            metrics.incr("spool_rows_refused")
            logger.error("the database refused spooled call log %s: %s", record.get("request_id"), exc)


def _batches(fd: int, path: Path, size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    """The segment's rows, a bounded batch at a time (a segment can hold tens of megabytes: reading it
    whole would grow the process's memory for nothing)."""
    batch: list[dict[str, Any]] = []
    with os.fdopen(os.dup(fd), "rb") as lines:
        for line in lines:
            line = line.rstrip(b"\n")
            if not line:
                continue
            try:
                batch.extend(decode(b"[" + line + b"]"))
            except (orjson.JSONDecodeError, ValueError):
                # A line cut short by a crash in mid-write: that row was never acknowledged anywhere else.
                metrics.incr("spool_rows_torn")
                logger.warning("skipping a torn line in call-log spool %s", path.name)
                continue
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch
