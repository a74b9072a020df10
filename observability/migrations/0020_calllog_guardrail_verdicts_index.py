"""A partial index of the call log's rows with a guardrail verdict other than pass, for the dashboard's
Guardrails panel (observability.guardrail_stats): a range reads those few rows, never the passing ones.

Raw SQL, outside the models' state, because its condition is a JSON path (PostgreSQL) that Django's
`Index(condition=Q(...))` cannot spell. On the partitioned table PostgreSQL makes it on every partition,
those made later included (and on a partition attached with rows moved from the default one). SQLite's
JSON paths have no wildcard: there the index only leaves out rows without any verdict.

Keep the PostgreSQL condition identical to observability.guardrail_stats.HAS_NON_PASS (frozen here on
purpose, like every migration's SQL).
"""

from django.db import migrations

NAME = "calllog_tenant_guardrails_created"
POSTGRESQL = (
    f"CREATE INDEX IF NOT EXISTS {NAME} ON observability_calllog (tenant_id, created_at) "
    """WHERE jsonb_path_exists(guardrails, '$.* ? (@.outcome != "pass")')"""
)
SQLITE = (
    f"CREATE INDEX IF NOT EXISTS {NAME} ON observability_calllog (tenant_id, created_at) "
    "WHERE guardrails IS NOT NULL AND guardrails <> '{}'"
)


def forwards(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE)


def backwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor in ("postgresql", "sqlite"):
        schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [
        ("observability", "0019_score_rollup_triggers"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
