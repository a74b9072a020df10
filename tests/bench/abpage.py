"""The A/B comparison with a million scored calls, for `make bench` (issue 23: under 300 ms).

The calls' hourly rollups are built from the loaded rows (observability.rollups.rebuild_rollups), as the
log writer builds them for live calls; a split this large is compared from them (observability.ab_rollups).

Needs PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres): it creates a
database of its own, migrates it, loads a tenant whose model `smart` is split with `smart-v2`, one
million calls of it over the last day (half each way, INSERT ... SELECT generate_series) with a
`thumbs` and a `helpfulness` score each, then times the comparison (observability.ab.split_verdict,
what the console page and GET /api/v1/routing/ab/ compute) and the console page itself, and drops
the database. Prints one JSON line.

    python -m tests.bench.abpage [ROWS]
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg

ROWS = 1_000_000
YAML = """
tenant: abbench
models:
  - name: smart
    deployments: [{provider: local, model: mock-chat}]
    split: {model: smart-v2, percent: 50}
  - name: smart-v2
    deployments: [{provider: local, model: mock-chat}]
providers:
  - {name: local, kind: mock}
scores:
  - {name: thumbs, kind: boolean}
  - {name: helpfulness, kind: numeric, min: 1, max: 5}
"""


def _histogram() -> str:
    from observability.models import LATENCY_BOUNDS_MS, LATENCY_COLUMNS

    out = []
    for i, column in enumerate(LATENCY_COLUMNS):
        low = "latency_ms >= 0" if i == 0 else f"latency_ms > {LATENCY_BOUNDS_MS[i - 1]}"
        high = f" AND latency_ms <= {LATENCY_BOUNDS_MS[i]}" if i < len(LATENCY_BOUNDS_MS) else ""
        out.append((column, f"NULLIF(count(*) FILTER (WHERE {low}{high}), 0)"))
    return ", ".join(c for c, _ in out), ", ".join(e for _, e in out)


def _rollup_sql() -> str:
    columns, values = _histogram()
    return (
        "INSERT INTO observability_callrolluphour (tenant_id, bucket, model, virtual_key_id, variant, requests, "
        "errors, prompt_tokens, completion_tokens, total_tokens, cost_picodollars, latency_sum_ms, ttfb_count, "
        f"latency_sumsq, cost_sumsq, last_at, {columns}) "
        "SELECT tenant_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', requested_model, "
        "coalesce(virtual_key_id, 0), variant, count(*), count(*) FILTER (WHERE status_code >= 400 OR error_type <> ''), "
        "0, 0, sum(coalesce(total_tokens, 0)), sum(coalesce(cost_picodollars, 0)), sum(latency_ms), 0, "
        "sum(latency_ms * latency_ms), sum(coalesce(cost_picodollars, 0)::float8 * coalesce(cost_picodollars, 0)), "
        f"max(created_at), {values} "
        "FROM observability_calllog WHERE tenant_id = %s GROUP BY 1, 2, 3, 4, 5"
    )


def _database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _load(rows: int) -> int:
    from django.db import connection

    from tenants.config import apply_config

    tenant, _changes = apply_config(YAML)
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        # Calls over the last day: even rows are control, odd ones the variant; 2 % errors; latency and
        # cost vary with g so that means and variances are not degenerate.
        cursor.execute(
            "INSERT INTO observability_calllog (created_at, request_id, call_id, endpoint, requested_model, variant, "
            "provider, upstream_model, stream, status_code, latency_ms, error_type, error_message, end_user, "
            "client_disconnected, attempts, tenant_id, cost_picodollars, cost_estimated, tags, cache_status, "
            "fallback_reason, key_metadata, pii_actions, route, guardrails) "
            "SELECT now() - (g %% 86000) * interval '1 second', 'req_' || g, 'call_' || g, 'chat/completions', "
            "'smart', CASE WHEN g %% 2 = 0 THEN '' ELSE 'smart-v2' END, 'local', 'mock-chat', false, "
            "CASE WHEN g %% 50 = 0 THEN 502 ELSE 200 END, 100 + (g %% 97) + (g %% 2) * 3, '', '', '', false, '[]', %s, "
            "1000000 + (g %% 13) * 1000, false, '[]', '', '', '{}', '{}', '', '{}' FROM generate_series(1, %s) g",
            [tenant.id, rows],
        )
        # The scores' rollup trigger runs once per row: two million of them would take many minutes. Loaded
        # without it, then summed in one statement, as the migration that added it did.
        cursor.execute("ALTER TABLE observability_callscore DISABLE TRIGGER observability_callscore_rollup")
        cursor.execute(
            "INSERT INTO observability_callscore (tenant_id, call_id, request_id, call_created_at, name, source, "
            "value, weight, comment, metadata, requested_model, variant, end_user, tags, created_at, updated_at) "
            "SELECT %s, 'call_' || g, 'req_' || g, now() - (g %% 86000) * interval '1 second', n.name, 'feedback', "
            "CASE WHEN n.name = 'thumbs' THEN ((g %% 7) < 4 + (g %% 2))::int ELSE 1 + (g %% 5) END, 1, '', '{}', "
            "'smart', CASE WHEN g %% 2 = 0 THEN '' ELSE 'smart-v2' END, '', '[]', now(), now() "
            "FROM generate_series(1, %s) g, (VALUES ('thumbs'), ('helpfulness')) AS n(name)",
            [tenant.id, rows],
        )
        cursor.execute("ALTER TABLE observability_callscore ENABLE TRIGGER observability_callscore_rollup")
        cursor.execute(
            "INSERT INTO observability_scorerolluphour (tenant_id, requested_model, variant, name, bucket, n, total, "
            "sumsq, positives) SELECT tenant_id, requested_model, variant, name, "
            "date_trunc('hour', call_created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*), sum(value), "
            "sum(value * value), sum((value >= 0.5)::int) FROM observability_callscore WHERE tenant_id = %s "
            "GROUP BY 1, 2, 3, 4, 5",
            [tenant.id],
        )
        cursor.execute("ANALYZE observability_calllog")
        cursor.execute("ANALYZE observability_callscore")
        cursor.execute("ANALYZE observability_scorerolluphour")
    # The calls' hourly rollups, summed in the database as the log writer sums live calls
    # (observability.rollups.aggregate): Python's rebuild_rollups takes minutes over a million rows.
    with connection.cursor() as cursor:
        cursor.execute(_rollup_sql(), [tenant.id])
        cursor.execute("ANALYZE observability_callrolluphour")
    return tenant.id


def _time(fn, rounds: int = 5) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[0], times[len(times) // 2]


def measure(rows: int) -> dict:
    import django

    django.setup()
    from datetime import timedelta

    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from observability.ab import split_verdict
    from tenants.models import Membership, Role, Tenant

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    tenant_id = _load(rows)
    load_s = time.perf_counter() - started
    tenant = Tenant.objects.get(id=tenant_id)
    since = timezone.now() - timedelta(days=1)

    def compare() -> None:
        verdict = split_verdict(tenant, "smart", "smart-v2", since=since)
        assert verdict.metrics, "the comparison found no calls"

    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user(username="ab", email="ab@abbench.example", password="x")
    Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
    client = Client(SERVER_NAME="localhost")
    client.force_login(owner)

    def page() -> None:
        response = client.get(f"/t/{tenant.slug}/routing/ab/?model=smart")
        assert response.status_code == 200, response.status_code

    best, median = _time(compare)
    page_best, page_median = _time(page)
    return {
        "rows": rows,
        "load_s": round(load_s, 1),
        "compare_ms": {"best": round(best, 1), "median": round(median, 1)},
        "page_ms": {"best": round(page_best, 1), "median": round(page_median, 1)},
    }


def main() -> int:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS
    base = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"bench_ab_{os.getpid()}"
    admin = psycopg.connect(base.replace("postgres://", "postgresql://", 1), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        os.environ["DATABASE_URL"] = _database_url(base, name)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
        os.environ.setdefault("SECRET_KEY", "bench-ab")
        os.environ.pop("REDIS_URL", None)
        result = measure(rows)
        print(orjson.dumps(result).decode())
    finally:
        from django.db import connections

        connections.close_all()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
