"""/healthz says the process is alive; /readyz checks the database, Redis and migrations (degraded when a shared store is away, 503 for a missing migration)."""

from __future__ import annotations

import pytest
from django.db import connection

from observability import health
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_migration_check(monkeypatch):
    monkeypatch.setattr(health, "_migrations_ok", False)


def test_healthz_answers_json_without_touching_anything(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_database_redis_and_migrations_are(client, settings):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["migrations"]["ok"]
    assert body["checks"]["redis"] == {**body["checks"]["redis"], "ok": True}
    assert body["checks"]["redis"]["status"] == ("ok" if settings.REDIS_URL else "not configured")
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_readyz_is_degraded_but_ready_when_redis_is_down(client, settings):
    # Redis is shared by every gateway process: taking them all out of rotation would not help.
    settings.REDIS_URL = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["status"].startswith("error: ")
    assert body["checks"]["database"]["ok"] is True
    assert "s3cret-pw" not in response.content.decode()


def test_readyz_is_503_while_a_migration_is_not_applied(client):
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = 'observability' AND name = '0006_partition_calllog'")
    response = client.get("/readyz")
    assert response.status_code == 503
    migrations = response.json()["checks"]["migrations"]
    assert migrations["ok"] is False
    assert "observability.0006_partition_calllog" in migrations["status"]


def test_readyz_only_answers_get(client):
    assert client.post("/readyz").status_code == 405
