"""Rollups: the call-log buffer's batches summed per minute, hour and day, for the dashboard and spend page.

Registered as a hook of the call-log buffer (observability.logbuffer.register_hook), so this runs once
per flushed batch, off the hot path: the batch is aggregated in Python, then each table gets additive
upserts of up to _MAX_ROWS rows each (INSERT ... ON CONFLICT DO UPDATE adds to the totals). Concurrent
writers in several processes never lose an increment, and rows are sorted so that they take row locks
in the same order (no deadlocks).
"""

from __future__ import annotations

import functools
import logging
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from observability.models import (
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    TTFB_COLUMNS,
    TTFB_LATENCY_COLUMNS,
    CallRollupDay,
    CallRollupHour,
    CallRollupMinute,
    TagRollupHour,
    UserRollupDay,
    UserRollupHour,
)

logger = logging.getLogger("gateway.logs")

_KEY = ("tenant_id", "bucket", "model", "virtual_key_id", "variant")
_SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_picodollars",
    "latency_sum_ms",
    "ttfb_count",
    "latency_sumsq",
    "cost_sumsq",
    *LATENCY_COLUMNS,
    *TTFB_COLUMNS,
    *TTFB_LATENCY_COLUMNS,
)
_TAG_KEY = ("tenant_id", "bucket", "tag", "virtual_key_id")
_TAG_SUMS = ("requests", "errors", "total_tokens", "cost_picodollars")
_USER_KEY = ("tenant_id", "bucket", "end_user", "virtual_key_id")
# Offsets of the histograms in a rollup accumulator (the list of _SUMS values).
_LAT0 = _SUMS.index(LATENCY_COLUMNS[0])
_TTFB0 = _SUMS.index(TTFB_COLUMNS[0])
_TTFB_LAT0 = _SUMS.index(TTFB_LATENCY_COLUMNS[0])
# The histogram columns, NULL when empty (most are): the upsert treats NULL as 0 and keeps 0 as NULL.
_SPARSE = frozenset((*LATENCY_COLUMNS, *TTFB_COLUMNS, *TTFB_LATENCY_COLUMNS))


def histogram_bucket(ms: float) -> int:
    """Index of the histogram bucket holding `ms`: bucket 0 holds [0, LATENCY_BOUNDS_MS[0]], bucket i
    (LATENCY_BOUNDS_MS[i - 1], LATENCY_BOUNDS_MS[i]], the last one everything above the last bound."""
    return bisect_left(LATENCY_BOUNDS_MS, ms)


def is_error(record: dict[str, Any]) -> bool:
    """An answer with status >= 400, or a stream that started fine and recorded an error mid-way."""
    status = record.get("status_code") or 0
    return status >= 400 or bool(record.get("error_type"))


def record_time(record: dict[str, Any]) -> datetime | None:
    value = record.get("created_at")
    if isinstance(value, str):  # a record that went through a queue as JSON
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class Batch:
    """One batch of records summed per rollup table; `last` is the newest call per CallRollup row, keyed
    by (table, key): at hh:00 a minute, its hour and (at 00:00) its day have equal keys."""

    minute: dict[tuple, list] = field(default_factory=lambda: defaultdict(lambda: [0] * len(_SUMS)))
    hour: dict[tuple, list] = field(default_factory=lambda: defaultdict(lambda: [0] * len(_SUMS)))
    day: dict[tuple, list] = field(default_factory=lambda: defaultdict(lambda: [0] * len(_SUMS)))
    tags: dict[tuple, list] = field(default_factory=lambda: defaultdict(lambda: [0] * len(_TAG_SUMS)))
    users_hour: dict[tuple, list] = field(default_factory=lambda: defaultdict(lambda: [0] * len(_TAG_SUMS)))
    users_day: dict[tuple, list] = field(default_factory=lambda: defaultdict(lambda: [0] * len(_TAG_SUMS)))
    last: dict[tuple, datetime] = field(default_factory=dict)


def aggregate(records: list[dict[str, Any]]) -> Batch:
    """The accumulators of one batch of call-log records."""
    batch = Batch()
    last = batch.last
    for r in records:
        at = record_time(r)
        tenant_id = r.get("tenant_id")
        if at is None or not isinstance(tenant_id, int):
            continue
        error = 1 if is_error(r) else 0
        cost = _int(r.get("cost_picodollars"))
        total = _int(r.get("total_tokens"))
        latency = r.get("latency_ms")
        latency = float(latency) if isinstance(latency, (int, float)) else 0.0
        ttfb = r.get("ttfb_ms")
        key_id = r.get("virtual_key_id") or 0
        dims = (r.get("requested_model") or "", key_id, r.get("variant") or "")
        prompt, completion = _int(r.get("prompt_tokens")), _int(r.get("completion_tokens"))
        lat_bucket = histogram_bucket(latency)
        # The TTFB histogram counts the calls that got a first byte, and only those: a call refused before
        # any answer has none (NULL), which must count neither as 0 nor as its latency.
        ttfb_bucket = histogram_bucket(float(ttfb)) if isinstance(ttfb, (int, float)) else None
        m_bucket = at.replace(second=0, microsecond=0)
        h_bucket = m_bucket.replace(minute=0)
        d_bucket = h_bucket.replace(hour=0)
        for level, table, bucket in (
            ("m", batch.minute, m_bucket),
            ("h", batch.hour, h_bucket),
            ("d", batch.day, d_bucket),
        ):
            key = (tenant_id, bucket, *dims)
            acc = table[key]
            acc[0] += 1
            acc[1] += error
            acc[2] += prompt
            acc[3] += completion
            acc[4] += total
            acc[5] += cost
            acc[6] += latency
            acc[8] += latency * latency
            acc[9] += float(cost) * cost
            acc[_LAT0 + lat_bucket] += 1
            if ttfb_bucket is not None:
                acc[7] += 1
                acc[_TTFB0 + ttfb_bucket] += 1
                acc[_TTFB_LAT0 + lat_bucket] += 1
            newest = last.get((level, key))
            if newest is None or newest < at:
                last[(level, key)] = at
        end_user = r.get("end_user")
        if end_user and isinstance(end_user, str):
            for table, bucket in ((batch.users_hour, h_bucket), (batch.users_day, d_bucket)):
                acc = table[(tenant_id, bucket, end_user[:200], key_id)]
                acc[0] += 1
                acc[1] += error
                acc[2] += total
                acc[3] += cost
        for tag in r.get("tags") or ():
            if isinstance(tag, str):
                acc = batch.tags[(tenant_id, h_bucket, tag[:200], key_id)]
                acc[0] += 1
                acc[1] += error
                acc[2] += total
                acc[3] += cost
    return batch


# Rows per INSERT: one statement for many rows is planned once. A CallRollup row has ~540 columns, and with
# client-side binding a statement per row spent most of its time being parsed and planned. The bound also
# keeps a statement under PostgreSQL's 65,535 parameters should server-side binding be turned on.
_MAX_PARAMS = 65_000
_MAX_ROWS = 100


@functools.lru_cache(maxsize=512)
def _upsert_sql(
    table: str, keys: tuple[str, ...], sums: tuple[str, ...], *, last_at: bool, rows: int, vendor: str
) -> str:
    """One statement's text, built once per table, row count and database: quoting every column of every
    row again took a tenth of a batch's write, and psycopg splits a text this long anew each time."""
    quote = connection.ops.quote_name
    columns = [*keys, *sums] + (["last_at"] if last_at else [])
    sets = [
        f"{quote(c)} = NULLIF(COALESCE({quote(table)}.{quote(c)}, 0) + COALESCE(excluded.{quote(c)}, 0), 0)"
        if c in _SPARSE
        else f"{quote(c)} = {quote(table)}.{quote(c)} + excluded.{quote(c)}"
        for c in sums
    ]
    if last_at:
        # GREATEST ignores NULLs on PostgreSQL; SQLite's two-argument MAX would return NULL.
        newest = "GREATEST" if vendor == "postgresql" else "MAX"
        sets.append(f"last_at = {newest}(COALESCE({quote(table)}.last_at, excluded.last_at), excluded.last_at)")
    values = ", ".join([f"({', '.join(['%s'] * len(columns))})"] * rows)
    return (
        f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES {values} "
        f"ON CONFLICT ({', '.join(quote(c) for c in keys)}) DO UPDATE SET {', '.join(sets)}"
    )


def _upsert(cursor, table: str, keys: tuple[str, ...], sums: tuple[str, ...], rows: list[tuple], *, last_at: bool):
    """Add `rows` (each key, sums and maybe last_at) to `table`, many rows per statement. The rows come
    sorted and their keys are distinct, as one statement's must be.

    A statement names only the histogram buckets some row of it fills: a call rollup row has 243
    columns, most of them empty buckets (NULL), and PostgreSQL spent about 5 ms parsing, planning and
    running one upsert of them all (three a batch, on the machine's CPU the gateways share); the buckets
    left out keep their values (or stay NULL in a new row)."""
    if not rows:
        return
    size = max(1, min(_MAX_ROWS, _MAX_PARAMS // len(rows[0])))
    first = len(keys)
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        used = tuple(
            i for i, name in enumerate(sums) if name not in _SPARSE or any(row[first + i] is not None for row in chunk)
        )
        if len(used) < len(sums):
            picked = [*range(first), *(first + i for i in used), *range(first + len(sums), len(chunk[0]))]
            chunk = [tuple(row[j] for j in picked) for row in chunk]
        sql = _upsert_sql(
            table, keys, tuple(sums[i] for i in used), last_at=last_at, rows=len(chunk), vendor=connection.vendor
        )
        cursor.execute(sql, [value for row in chunk for value in row])


def write_rollups(records: list[dict[str, Any]]) -> None:
    """Add one batch of call-log records to the minute, hour and day rollups, and those of tags and users."""
    batch = aggregate(records)
    if not batch.minute:
        return
    adapt = connection.ops.adapt_datetimefield_value

    def rows(table: dict, level: str = "") -> list[tuple]:
        out = []
        for key in sorted(table, key=str):
            sums = table[key]
            if level:  # a CallRollup row: its empty histogram buckets are NULL
                sums = [*sums[:_LAT0], *(n or None for n in sums[_LAT0:])]
            row = (*key[:1], adapt(key[1]), *key[2:], *sums)
            out.append((*row, adapt(batch.last[(level, key)])) if level else row)
        return out

    with transaction.atomic(), connection.cursor() as cursor:
        for model, level, table in (
            (CallRollupMinute, "m", batch.minute),
            (CallRollupHour, "h", batch.hour),
            (CallRollupDay, "d", batch.day),
        ):
            _upsert(cursor, model._meta.db_table, _KEY, _SUMS, rows(table, level), last_at=True)
        for model, keys, table in (
            (TagRollupHour, _TAG_KEY, batch.tags),
            (UserRollupHour, _USER_KEY, batch.users_hour),
            (UserRollupDay, _USER_KEY, batch.users_day),
        ):
            _upsert(cursor, model._meta.db_table, keys, _TAG_SUMS, rows(table), last_at=False)


def _order_statistic(counts: list[int], k: int) -> float:
    """The k-th smallest value (from 0) of a histogram of LATENCY_BOUNDS_MS buckets: the n values of its
    bucket are taken as spread evenly over it, so the answer lies in the same bucket as the true value.
    The open last bucket answers its lower bound."""
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n > k:
            low = LATENCY_BOUNDS_MS[i - 1] if i else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return float(low)
            return low + (LATENCY_BOUNDS_MS[i] - low) * (k - seen + 0.5) / n
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])


def percentile_from_histogram(counts: list[int], p: float) -> float | None:
    """The p-quantile of a histogram of LATENCY_BOUNDS_MS buckets, as PostgreSQL's percentile_cont computes
    it from the rows (linear between the two closest ranks), each rank read from its bucket. Both ranks
    are within one bucket of the exact ones, so the answer is within HISTOGRAM_RELATIVE_ERROR of the exact
    percentile (HISTOGRAM_FLOOR_MS below that), up to the last bound."""
    total = sum(counts)
    if not total:
        return None
    position = (total - 1) * p
    k = int(position)
    value = _order_statistic(counts, k)
    if position > k:
        value += (_order_statistic(counts, k + 1) - value) * (position - k)
    return value


ROLLUP_MODELS = (CallRollupMinute, CallRollupHour, CallRollupDay, TagRollupHour, UserRollupHour, UserRollupDay)


def rebuild_rollups(tenant: Any, *, since: date, until: date, chunk: int = 5000) -> int:
    """Recompute the tenant's rollups of the UTC days [since, until) from its call logs; returns the
    rows read. The rollups of those days are deleted and summed again from the rows in chunks, in one
    transaction (dashboards read the old totals until it commits). Days whose rows are past retention
    come back empty: rebuild only what the call log still holds. Live calls add to the current day's
    buckets as they are logged, so `until` should not be later than today (the command's default)."""
    from observability.models import CallLog

    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(until, datetime.min.time(), tzinfo=UTC)
    rows = CallLog.objects.filter(tenant_id=tenant.id, created_at__gte=start, created_at__lt=end).order_by(
        "created_at", "id"
    )
    fields = [f.attname for f in CallLog._meta.concrete_fields]
    read = 0
    with transaction.atomic():
        for model in ROLLUP_MODELS:
            model.objects.filter(tenant_id=tenant.id, bucket__gte=start, bucket__lt=end).delete()
        batch: list[dict[str, Any]] = []
        for values in rows.values_list(*fields).iterator(chunk_size=chunk):
            batch.append(dict(zip(fields, values, strict=True)))
            if len(batch) >= chunk:
                write_rollups(batch)
                read += len(batch)
                batch = []
        if batch:
            write_rollups(batch)
            read += len(batch)
    return read
