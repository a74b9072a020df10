"""Readiness for load balancers and orchestrators (liveness is tenants.views.healthz: `/healthz`).

`/healthz` answers as long as the process serves requests (it touches nothing). `/readyz` checks
what a request needs: the database answers, Redis answers (when REDIS_URL is set), and every
migration on disk is applied. Both answer JSON.

The database and Redis are shared by every gateway process, so their outage is reported as
`degraded` with a 200: the proxy keeps serving from the configuration it has loaded, and a load
balancer that took every process out of rotation at once would turn a degraded gateway into a dead
one. `/readyz` answers 503 (`unavailable`) only for what is this process's own: a migration not
applied, or (with the database away) migrations this process never saw applied.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger("gateway.health")

REDIS_TIMEOUT = 1.0
# The migration check loads the migration graph (tens of ms): once everything is applied it stays
# applied for this process's code, so a success is remembered.
_migrations_ok = False


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_redis() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_migrations() -> str:
    global _migrations_ok
    if _migrations_ok:
        return "ok"
    from django.db.migrations.loader import MigrationLoader

    # Every migration on disk, not only the leaves: one missing in the middle is just as unready.
    loader = MigrationLoader(connection)
    pending = sorted(node for node in loader.graph.nodes if node not in loader.applied_migrations)
    if pending:
        names = ", ".join(f"{app}.{name}" for app, name in pending[:5])
        raise RuntimeError(f"{len(pending)} migration(s) not applied: {names}")
    _migrations_ok = True
    return "ok"


CHECKS = {"database": check_database, "redis": check_redis, "migrations": check_migrations}


# Checks whose failure degrades the gateway without making this process unready (see the docstring).
SHARED = frozenset({"database", "redis"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    checks: dict[str, dict] = {}
    ready, degraded = True, False
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            status = check()
            ok = True
        except Exception as exc:
            # The reason goes to the log in full; the answer names the failure without secrets (a
            # connection error can quote the URL, and so its password).
            logger.warning("readiness check %s failed", name, exc_info=True)
            status, ok = f"error: {type(exc).__name__}", False
            if name == "migrations" and isinstance(exc, RuntimeError):
                status = f"error: {exc}"
        if not ok:
            if name in SHARED:
                degraded = True
            else:
                ready = False
        checks[name] = {"ok": ok, "status": status, "ms": round((time.perf_counter() - started) * 1000, 1)}
    overall = "unavailable" if not ready else "degraded" if degraded else "ok"
    return JsonResponse({"status": overall, "checks": checks}, status=200 if ready else 503)
