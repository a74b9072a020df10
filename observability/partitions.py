"""Daily partitions of the call-log table, created ahead, and per-tenant retention.

On PostgreSQL the call log is range-partitioned by `created_at`, one partition per UTC day
(migration 0006), plus a default partition for anything outside them. A Celery beat task creates
the coming days' partitions (`create_ahead`) and another applies retention (`apply_retention`):

- whole partitions older than the longest retention of any tenant are dropped (instant, no vacuum);
- tenants with a shorter retention lose their older rows in bounded batches, each batch its own
  short transaction, so neither the log writer nor the console ever waits behind one long delete;
- stored bodies and rollups follow the same per-tenant cut-off.

On SQLite (the embedded default) there are no partitions; retention deletes in batches all the same.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db import DatabaseError, connection, transaction

from tenants.models import Tenant

logger = logging.getLogger("gateway.retention")

TABLE = "observability_calllog"
DEFAULT_PARTITION = f"{TABLE}_default"
PARTITION_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")
DAYS_AHEAD = 7
BATCH_SIZE = 5000
DEFAULT_RETENTION_DAYS = 30
# A partition drop needs a brief exclusive lock on the parent: never queue the log writer behind it.
LOCK_TIMEOUT = "5s"

# Tables purged with the call log: (app label, model, time column). Looked up lazily so retention keeps
# working whichever of them exist.
COMPANIONS = (
    ("observability", "CallBody", "created_at"),
    ("observability", "StoredResponse", "created_at"),
    ("observability", "CallScore", "call_created_at"),
    ("observability", "CallRollupMinute", "bucket"),
    ("observability", "CallRollupHour", "bucket"),
    ("observability", "CallRollupDay", "bucket"),
    ("observability", "TagRollupHour", "bucket"),
    ("observability", "UserRollupHour", "bucket"),
    ("observability", "UserRollupDay", "bucket"),
)


@dataclass
class RetentionReport:
    dropped: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)  # table -> rows deleted in batches

    def add(self, table: str, rows: int) -> None:
        if rows:
            self.deleted[table] = self.deleted.get(table, 0) + rows


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE])
        return cursor.fetchone() is not None


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def partitions() -> dict[str, date]:
    """The daily partitions that exist: name -> the UTC day it holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        found = {}
        for (name,) in cursor.fetchall():
            match = PARTITION_NAME.match(name)
            if match:
                found[name] = datetime.strptime(match.group(1), "%Y%m%d").date()
        return found


def _bounds(day: date) -> tuple[str, str]:
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


def create_partition(day: date) -> bool:
    """Create `day`'s partition if missing; rows that already fell into the default partition move in."""
    name = partition_name(day)
    low, high = _bounds(day)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is not None:
            return False
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(
            f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE created_at >= %s AND created_at < %s LIMIT 1", [low, high]
        )
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM ('{low}') TO ('{high}')")
            return True
        # The default partition holds rows of that day (written before the partition existed): a new
        # partition may not overlap them, so they move into a detached table that is then attached.
        cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created_at >= %s AND created_at < %s "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            [low, high],
        )
        cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')")
        return True


def create_ahead(days: int = DAYS_AHEAD, *, today: date | None = None) -> list[str]:
    """Today's partition and the next `days` days'; returns the names created. No-op unless partitioned."""
    if not is_partitioned():
        return []
    today = today or datetime.now(UTC).date()
    created = []
    for offset in range(days + 1):
        day = today + timedelta(days=offset)
        try:
            if create_partition(day):
                created.append(partition_name(day))
        except DatabaseError:
            logger.exception("creating call-log partition %s failed; retrying on the next run", partition_name(day))
    return created


def drop_partitions_before(cutoff: datetime) -> list[str]:
    """Drop every daily partition whose whole day lies before `cutoff`."""
    if not is_partitioned():
        return []
    dropped = []
    for name, day in sorted(partitions().items(), key=lambda item: item[1]):
        if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) > cutoff:
            continue
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                cursor.execute(f"DROP TABLE {name}")
            dropped.append(name)
        except DatabaseError:
            logger.exception("dropping call-log partition %s failed; retrying on the next run", name)
    return dropped


def delete_in_batches(
    table: str, time_column: str, cutoff: datetime, *, tenant_id: int | None = None, batch_size: int = BATCH_SIZE
) -> int:
    """Delete rows older than `cutoff` (of one tenant, or of all), `batch_size` rows per transaction."""
    where = f"{time_column} < %s"
    params: list = [cutoff]
    if tenant_id is not None:
        where = f"tenant_id = %s AND {where}"
        params = [tenant_id, cutoff]
    # The outer condition repeats the time bound so that PostgreSQL prunes partitions for the delete too.
    sql = f"DELETE FROM {table} WHERE {where} AND id IN (SELECT id FROM {table} WHERE {where} LIMIT {int(batch_size)})"
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params + params)
            count = cursor.rowcount
        total += count
        if count < batch_size:
            return total


def _companions() -> list[tuple[str, str]]:
    from django.apps import apps

    found = []
    for app_label, model_name, column in COMPANIONS:
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            continue
        found.append((model._meta.db_table, column))
    return found


def apply_retention(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> RetentionReport:
    """Apply every tenant's `log_retention_days` to the call log, its stored bodies and its rollups."""
    now = now or datetime.now(UTC)
    report = RetentionReport()
    retention = dict(Tenant.objects.values_list("id", "log_retention_days"))
    longest = max((days for days in retention.values() if days), default=DEFAULT_RETENTION_DAYS)
    oldest_kept = now - timedelta(days=longest)
    report.dropped = drop_partitions_before(oldest_kept)
    tables = [(TABLE, "created_at"), *_companions()]
    for tenant_id, days in sorted(retention.items()):
        days = days or DEFAULT_RETENTION_DAYS
        if days >= longest:
            continue
        cutoff = now - timedelta(days=days)
        for table, column in tables:
            report.add(table, delete_in_batches(table, column, cutoff, tenant_id=tenant_id, batch_size=batch_size))
    # Whatever is older than every retention and did not go with a partition: the day that straddles
    # the cut-off, the default partition, tenants deleted since, and the companions.
    for table, column in tables:
        report.add(table, delete_in_batches(table, column, oldest_kept, batch_size=batch_size))
    if report.dropped or report.deleted:
        logger.info("retention: dropped %s, deleted %s", report.dropped, report.deleted)
    return report
