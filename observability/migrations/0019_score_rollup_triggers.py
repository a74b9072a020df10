"""ScoreRollupHour kept by triggers on CallScore (PostgreSQL only), filled from the scores already there.

Every write path of a score (feedback's upsert, evaluators, bulk loads, retention's deletes) goes through
the table, so the rollup stays exact without each writer remembering it. SQLite keeps no rollup: its
readers use the scores themselves (observability.ab_rollups)."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION observability_score_rollup() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE observability_scorerolluphour
        SET n = n - 1, total = total - OLD.value, sumsq = sumsq - OLD.value * OLD.value,
            positives = positives - (OLD.value >= 0.5)::int
        WHERE tenant_id = OLD.tenant_id AND requested_model = OLD.requested_model AND variant = OLD.variant
          AND name = OLD.name AND bucket = date_trunc('hour', OLD.call_created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO observability_scorerolluphour
            (tenant_id, requested_model, variant, name, bucket, n, total, sumsq, positives)
        VALUES (NEW.tenant_id, NEW.requested_model, NEW.variant, NEW.name,
                date_trunc('hour', NEW.call_created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                1, NEW.value, NEW.value * NEW.value, (NEW.value >= 0.5)::int)
        ON CONFLICT (tenant_id, requested_model, variant, name, bucket) DO UPDATE SET
            n = observability_scorerolluphour.n + 1,
            total = observability_scorerolluphour.total + excluded.total,
            sumsq = observability_scorerolluphour.sumsq + excluded.sumsq,
            positives = observability_scorerolluphour.positives + excluded.positives;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""
TRIGGER = """
CREATE TRIGGER observability_callscore_rollup
AFTER INSERT OR UPDATE OR DELETE ON observability_callscore
FOR EACH ROW EXECUTE FUNCTION observability_score_rollup();
"""
FILL = """
INSERT INTO observability_scorerolluphour (tenant_id, requested_model, variant, name, bucket, n, total, sumsq, positives)
SELECT tenant_id, requested_model, variant, name,
       date_trunc('hour', call_created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), sum(value), sum(value * value), sum((value >= 0.5)::int)
FROM observability_callscore GROUP BY 1, 2, 3, 4, 5;
"""


def forwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION)
    schema_editor.execute(TRIGGER)
    schema_editor.execute(FILL)


def backwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP TRIGGER IF EXISTS observability_callscore_rollup ON observability_callscore")
    schema_editor.execute("DROP FUNCTION IF EXISTS observability_score_rollup()")


class Migration(migrations.Migration):
    dependencies = [("observability", "0018_rollup_sumsq_score_rollups")]

    operations = [migrations.RunPython(forwards, backwards)]
