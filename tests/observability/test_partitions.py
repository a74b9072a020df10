"""The call log is partitioned by day on PostgreSQL; retention drops old days and trims shorter-lived tenants.

The EXPLAIN test loads a million rows (GATEWAY_EXPLAIN_ROWS overrides the count) into four daily
partitions and reads the plans of the explorer's queries: each is an index scan, and a time range
only touches the partitions it covers.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from observability import partitions
from observability.models import CallLog

pytestmark = pytest.mark.django_db

POSTGRES = connection.vendor == "postgresql"
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="partitions are PostgreSQL only")
EXPLAIN_ROWS = int(os.environ.get("GATEWAY_EXPLAIN_ROWS", "1000000"))
COLUMNS = (
    "created_at, request_id, endpoint, requested_model, provider, upstream_model, stream, status_code, latency_ms, "
    "error_type, error_message, end_user, client_disconnected, attempts, tenant_id, virtual_key_id, cost_estimated, "
    "tags, variant, cache_status, fallback_reason, key_metadata, pii_actions, route"
)
VALUES = "'chat/completions', 'gpt-4o-mini', 'main', 'gpt-4o-mini', false, 200, 120.5, '', '', '', false, '[]'"
TAIL = "false, '[]', '', '', '', '{}', '{}', ''"
# The explorer's indexes (observability.models.CallLog.Meta and request_id's db_index), as pg_indexes ends them.
EXPLORER_INDEXES = (
    "USING btree (tenant_id, created_at DESC, id DESC)",
    "USING btree (tenant_id, virtual_key_id, created_at DESC)",
    "USING btree (request_id)",
)


def log(tenant_id: int, at: datetime, request_id: str) -> CallLog:
    return CallLog.objects.create(
        tenant_id=tenant_id, created_at=at, request_id=request_id, endpoint="chat/completions", status_code=200,
        latency_ms=10.0,
    )  # fmt: skip


def plan(queryset) -> str:
    return queryset.explain()


@needs_postgres
def test_the_migration_leaves_a_partitioned_table_with_today_and_a_default():
    assert partitions.is_partitioned()
    today = datetime.now(UTC).date()
    # The partition of the day the migration ran (yesterday's, if the test database was made before midnight).
    assert {today, today - timedelta(days=1)} & set(partitions.partitions().values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [partitions.DEFAULT_PARTITION])
        assert cursor.fetchone()[0] is not None
        # The primary key holds the partition column; Django's id stays unique through its sequence.
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [partitions.TABLE],
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, created_at)"


@needs_postgres
def test_inserts_land_in_their_day_and_create_ahead_adopts_rows_from_the_default_partition():
    far = datetime(2031, 3, 4, 12, tzinfo=UTC)
    row = log(1, far, "req_future")
    assert row.id is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM observability_calllog WHERE id = %s", [row.id])
        assert cursor.fetchone()[0] == partitions.DEFAULT_PARTITION
    assert partitions.create_ahead(0, today=far.date()) == ["observability_calllog_p20310304"]
    assert partitions.create_ahead(0, today=far.date()) == []  # idempotent
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM observability_calllog WHERE id = %s", [row.id])
        assert cursor.fetchone()[0] == "observability_calllog_p20310304"
    assert CallLog.objects.get(request_id="req_future").created_at == far


def _load_days(first: date, days: int, rows: int) -> list[str]:
    """`rows` rows over `days` UTC days, 50 tenants and 500 keys, loaded the fast way: each day into a plain
    table with one INSERT ... SELECT generate_series, attached as its partition (indexes built in bulk)."""
    names = []
    per_day = rows // days
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '128MB'")
        # Only the indexes the explorer is meant to use (and the primary key) are kept for this test (the
        # transaction rolls back): the plans must come from them, and building the other single-column
        # indexes over a million rows would cost the suite seconds for nothing.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname <> %s",
            [partitions.TABLE, f"{partitions.TABLE}_pkey"],
        )
        for index, definition in cursor.fetchall():
            if not definition.endswith(EXPLORER_INDEXES):
                cursor.execute(f'DROP INDEX "{index}"')
        for offset in range(days):
            day = first + timedelta(days=offset)
            name = partitions.partition_name(day)
            low, high = partitions._bounds(day)
            # Unlogged: test rows need no write-ahead log (and the transaction rolls back anyway).
            cursor.execute(
                f"CREATE UNLOGGED TABLE {name} (LIKE {partitions.TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            cursor.execute(
                f"INSERT INTO {name} (id, {COLUMNS}) SELECT g + %s, %s::timestamptz + (g %% 86400) * interval '1 second', "
                f"'req_' || (g + %s), {VALUES}, 1 + g %% 50, g %% 500, {TAIL} FROM generate_series(1, %s) g",
                [offset * per_day, low, offset * per_day, per_day],
            )
            cursor.execute(
                f"ALTER TABLE {partitions.TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')"
            )
            names.append(name)
        cursor.execute("SET LOCAL default_statistics_target = 10")
        cursor.execute(f"ANALYZE {partitions.TABLE}")
    return names


@needs_postgres
def test_explorer_queries_use_indexes_and_prune_partitions_on_a_million_rows():
    first = date(2029, 6, 1)
    names = _load_days(first, 4, EXPLAIN_ROWS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM observability_calllog WHERE created_at < '2029-06-05'")
        assert cursor.fetchone()[0] == EXPLAIN_ROWS // 4 * 4
    lo = datetime(2029, 6, 2, 6, tzinfo=UTC)
    hi = datetime(2029, 6, 2, 18, tzinfo=UTC)
    page = CallLog.objects.filter(tenant_id=7, created_at__gte=lo, created_at__lt=hi).order_by("-created_at", "-id")
    cursor_at = datetime(2029, 6, 2, 12, tzinfo=UTC)
    plans = {
        # The explorer's first page and the dashboard's latest calls.
        "page": plan(page[:50]),
        # Keyset pagination: the next page after (created_at, id).
        "next": plan(page.filter(created_at__lte=cursor_at).exclude(created_at=cursor_at, id__gte=123456)[:50]),
        # A member's view and the key filter.
        "key": plan(
            CallLog.objects.filter(tenant_id=7, virtual_key_id=56, created_at__gte=lo, created_at__lt=hi).order_by(
                "-created_at", "-id"
            )[:50]
        ),
    }
    for what, text in plans.items():
        assert "Seq Scan" not in text, (what, text)
        assert "Index" in text, (what, text)
        # Pruning: only June 2nd's partition is read.
        assert names[1] in text, (what, text)
        for other in (names[0], names[2], names[3], partitions.DEFAULT_PARTITION):
            assert other not in text, (what, other, text)
    # Each partition's copy of the model's indexes is named after its columns. (On a much smaller table
    # a plain created_at range scan can be the cheaper plan, hence the row count condition.)
    if EXPLAIN_ROWS >= 1_000_000:
        assert f"{names[1]}_tenant_id_created_at_id_idx" in plans["page"]
    # The key filter reads the (tenant, key, time) index (its name is cut to PostgreSQL's 63 characters).
    assert "Index Cond: ((tenant_id = 7) AND (virtual_key_id = 56) AND (created_at >= " in plans["key"], plans["key"]
    # A request id search (the explorer's, within the tenant) reads the request_id index of every day
    # (the empty partitions of the coming days may be scanned: they hold nothing).
    by_id = plan(CallLog.objects.filter(tenant_id=7, request_id="req_4242"))
    for name in names:
        assert f"Seq Scan on {name} " not in by_id, by_id
        assert f"_request_id_idx on {name} " in by_id or f"_request_id_idx1 on {name} " in by_id, by_id


@needs_postgres
def test_retention_drops_old_partitions_and_trims_a_shorter_lived_tenant_in_batches():
    from observability.models import CallBody
    from tenants.models import Tenant

    acme = Tenant.objects.create(slug="acme", name="Acme", log_retention_days=30)
    globex = Tenant.objects.create(slug="globex", name="Globex", log_retention_days=7)
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=40)).date()
    partitions.create_partition(old_day)
    ancient = datetime(old_day.year, old_day.month, old_day.day, 12, tzinfo=UTC)
    log(acme.id, ancient, "acme-ancient")
    log(globex.id, ancient, "globex-ancient")
    for i in range(7):
        log(acme.id, now - timedelta(days=10, minutes=i), f"acme-10d-{i}")
        log(globex.id, now - timedelta(days=10, minutes=i), f"globex-10d-{i}")
        log(globex.id, now - timedelta(days=1, minutes=i), f"globex-1d-{i}")
    CallBody.objects.create(tenant_id=globex.id, created_at=now - timedelta(days=10), request_id="globex-10d-0")
    CallBody.objects.create(tenant_id=acme.id, created_at=now - timedelta(days=10), request_id="acme-10d-0")

    report = partitions.apply_retention(now=now, batch_size=3)

    assert report.dropped == [partitions.partition_name(old_day)]
    assert partitions.partition_name(old_day) not in partitions.partitions()
    assert report.deleted[partitions.TABLE] == 7  # globex's 10-day-old rows, in batches of 3, 3 and 1
    left = set(CallLog.objects.values_list("request_id", flat=True))
    assert {f"acme-10d-{i}" for i in range(7)} <= left  # acme keeps 30 days: untouched
    assert {f"globex-1d-{i}" for i in range(7)} <= left
    assert not {r for r in left if r.startswith("globex-10d") or r.endswith("ancient")}
    assert list(CallBody.objects.values_list("request_id", flat=True)) == ["acme-10d-0"]


def test_retention_deletes_in_batches_without_partitions_too():
    """On SQLite (and on rows in the default partition) retention is the batched delete alone."""
    from tenants.models import Tenant

    globex = Tenant.objects.create(slug="globex", name="Globex", log_retention_days=7)
    Tenant.objects.create(slug="acme", name="Acme", log_retention_days=30)
    now = datetime.now(UTC)
    for i in range(5):
        log(globex.id, now - timedelta(days=8, minutes=i), f"old-{i}")
    log(globex.id, now, "new")
    assert partitions.delete_in_batches("observability_calllog", "created_at", now - timedelta(days=7),
                                        tenant_id=globex.id, batch_size=2) == 5  # fmt: skip
    assert list(CallLog.objects.values_list("request_id", flat=True)) == ["new"]


def test_beat_creates_partitions_ahead_and_applies_retention_hourly(settings):
    from observability import tasks

    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["observability.tasks.calllog_partitions_create_ahead"] == 3600.0
    assert schedule["observability.tasks.calllog_retention_apply"] == 3600.0
    today = datetime.now(UTC).date()
    week = [partitions.partition_name(today + timedelta(days=i)) for i in range(partitions.DAYS_AHEAD + 1)]
    missing = [name for name in week if name not in partitions.partitions()]
    assert len(missing) >= partitions.DAYS_AHEAD  # the migration made only its own day's
    assert tasks.calllog_partitions_create_ahead() == missing
    assert tasks.calllog_partitions_create_ahead() == []
    assert tasks.calllog_retention_apply() == {"dropped": [], "deleted": {}}
