"""The call-log table becomes declaratively range-partitioned by `created_at` (one partition per UTC day).

PostgreSQL only (SQLite keeps its plain table). A partitioned table's primary key must contain the
partition column, so the key is (id, created_at); Django still treats `id` as the primary key, which
stays unique through its identity sequence. Columns, CHECK constraints, defaults and every index are
copied from the table as it stands, so this migration does not depend on which columns came before.
Inserts (observability.logbuffer) are unchanged: rows are routed to their day's partition, and a
default partition catches anything outside the partitions that exist (observability.partitions creates
the coming days' ahead, and moves rows out of the default partition when it creates theirs).

The SQL is frozen here on purpose: later changes to observability.partitions must not change what
this migration did.
"""

from datetime import timedelta

from django.db import migrations

TABLE = "observability_calllog"
OLD = "observability_calllog_unpartitioned"


def _rebuild(cursor, *, partitioned: bool) -> None:
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    cursor.execute(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND x.indisprimary",
        [OLD],
    )
    (pkey,) = cursor.fetchone()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
        "AND indexname <> %s",
        [OLD, pkey],
    )
    indexes = cursor.fetchall()
    cursor.execute(f'ALTER INDEX "{pkey}" RENAME TO "{OLD}_pkey"')
    suffix = " PARTITION BY RANGE (created_at)" if partitioned else ""
    cursor.execute(
        f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY){suffix}"
    )
    key = "id, created_at" if partitioned else "id"
    cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{TABLE}_pkey" PRIMARY KEY ({key})')
    if partitioned:
        cursor.execute(f"SELECT min(created_at) FROM {OLD}")
        (oldest,) = cursor.fetchone()
        # Daily partitions from the oldest row (at most 400 days back) to today; anything older lands in
        # the default partition, which retention empties in batches. The coming days' partitions are the
        # beat task's (observability.partitions.create_ahead): every partition made here also costs each
        # TRUNCATE of the table (a test suite's flushes), so none are made ahead.
        cursor.execute(
            "SELECT d::date FROM generate_series("
            "  greatest(date_trunc('day', coalesce(%s, now()) AT TIME ZONE 'UTC'),"
            "           date_trunc('day', now() AT TIME ZONE 'UTC') - interval '400 days'),"
            "  date_trunc('day', now() AT TIME ZONE 'UTC'), interval '1 day') AS d",
            [oldest],
        )
        for (day,) in cursor.fetchall():
            cursor.execute(
                f"CREATE TABLE {TABLE}_p{day:%Y%m%d} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{day + timedelta(days=1)} 00:00:00+00')"
            )
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
    cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
    cursor.execute(
        f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), coalesce((SELECT max(id) FROM {TABLE}), 0) + 1, false)"
    )
    cursor.execute(f"DROP TABLE {OLD}")
    for _name, definition in indexes:
        # pg_indexes gives "CREATE INDEX name ON public.old USING ...": the same index on the new table
        # (on a partitioned table it cascades to every partition, present and future).
        cursor.execute(definition.replace(f" ON {_schema_prefix(definition)}{OLD} ", f" ON {TABLE} ", 1))


def _schema_prefix(definition: str) -> str:
    marker = f"{OLD} "
    before = definition.split(" ON ", 1)[1].split(marker, 1)[0]
    return before  # "public." or "" (or "ONLY public." for a partitioned parent)


def partition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        _rebuild(cursor, partitioned=True)


def unpartition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        _rebuild(cursor, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [
        ("observability", "0005_rollups_bodies_explorer_indexes"),
    ]

    operations = [
        migrations.RunPython(partition, unpartition, elidable=False),
    ]
