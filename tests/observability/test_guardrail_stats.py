"""The dashboard's Guardrails panel and GET /api/v1/guardrails/stats/: blocks, flags, logs and errors by
check, model and key, from the call log's verdicts; passes never counted; Erin (member) counts only her
own key's calls; Bob's globex never sees acme's counts, nor Alice globex's. Also the SQLite dialect of
the queries, and the live page's stored calls carrying their verdicts."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from observability.guardrail_stats import BREAKDOWNS, breakdown_sql, guardrail_stats
from observability.models import CallLog
from tenants.audit import Actor
from tenants.services import management_token_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("console_defaults")]

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
PI, TOPICS, WORDS = "prompt_injection", "denied_topics", "keywords"


def verdict(check: str, outcome: str, side: str = "input") -> dict:
    return {"check": check, "side": side, "outcome": outcome, "score": 0.9, "ms": 0.12}


def log(tenant, key, n: int, guardrails, *, model: str = "gpt-4o-mini", ago: timedelta = timedelta(0)) -> CallLog:
    return CallLog(
        created_at=NOW - ago - timedelta(minutes=n),
        tenant_id=tenant.id,
        virtual_key_id=key.id if key is not None else None,
        request_id=f"{tenant.slug}-{n}",
        endpoint="chat.completions",
        requested_model=model,
        status_code=400 if guardrails and "block" in json.dumps(guardrails) else 200,
        latency_ms=5.0,
        guardrails=guardrails,
    )


@pytest.fixture
def calls(world):
    acme, key, erin_key = world.acme, world.objects["key"], world.objects["erin_key"]
    globex, g_key = world.globex, world.objects["g_key"]
    CallLog.objects.bulk_create(
        [
            log(acme, key, 1, {"pi": verdict(PI, "block"), "no-legal": verdict(TOPICS, "pass")}),
            log(acme, key, 2, {"pi": verdict(PI, "block")}),
            log(acme, key, 3, {"no-legal": verdict(TOPICS, "flag", "output"), "pi": verdict(PI, "pass")}),
            log(acme, key, 4, {"pi": verdict(PI, "pass"), "no-legal": verdict(TOPICS, "pass")}),
            log(acme, key, 5, {}),
            log(acme, key, 6, None),
            log(acme, key, 7, {"words": verdict(WORDS, "log"), "pi": verdict(PI, "error")}, model="claude"),
            log(acme, erin_key, 8, {"no-legal": verdict(TOPICS, "flag")}),
            log(acme, None, 9, {"pi": verdict(PI, "block")}),
            # Three days ago: outside the last 24 hours.
            log(acme, key, 10, {"pi": verdict(PI, "block")}, ago=3 * DAY),
            *(log(globex, g_key, n, {"pi": verdict(PI, "block")}, model="bob-model") for n in range(20, 25)),
            log(globex, g_key, 25, {"secret": verdict(WORDS, "flag")}, model="bob-model"),
        ]
    )
    return world


def rows(found) -> dict:
    return {(r.label, r.kind): (r.block, r.flag, r.log, r.error) for r in found}


def test_it_counts_blocks_flags_logs_and_errors_by_check_model_and_key(calls):
    stats = guardrail_stats(calls.acme, start=NOW - DAY, end=NOW + DAY)
    assert [(r.label, r.kind, r.block, r.flag, r.log, r.error, r.total) for r in stats.by_check] == [
        ("pi", PI, 3, 0, 0, 1, 4),
        ("no-legal", TOPICS, 0, 2, 0, 0, 2),
        ("words", WORDS, 0, 0, 1, 0, 1),
    ]
    assert [(r.label, r.value, r.block, r.flag, r.log, r.error) for r in stats.by_model] == [
        ("gpt-4o-mini", "gpt-4o-mini", 3, 2, 0, 0),
        ("claude", "claude", 0, 0, 1, 1),
    ]
    assert stats.by_key[0].label == "acme-service" and stats.by_key[0].value == calls.objects["key"].id
    assert rows(stats.by_key) == {
        ("acme-service", ""): (2, 1, 1, 1),
        ("erin-notebook", ""): (0, 1, 0, 0),
        ("(no key)", ""): (1, 0, 0, 0),
    }
    # The range is the range: three days back, the older block counts too.
    older = guardrail_stats(calls.acme, start=NOW - 4 * DAY, end=NOW + DAY)
    assert rows(older.by_check)[("pi", PI)] == (4, 0, 0, 1)
    assert guardrail_stats(calls.acme, start=NOW - 4 * DAY, end=NOW - 2 * DAY).by_model[0].block == 1


def test_passes_and_calls_without_verdicts_are_not_counted(calls):
    acme, key = calls.acme, calls.objects["key"]
    CallLog.objects.filter(tenant_id=acme.id).delete()
    CallLog.objects.bulk_create(
        [
            log(acme, key, 1, {"pi": verdict(PI, "pass"), "no-legal": verdict(TOPICS, "pass")}),
            log(acme, key, 2, {}),
            log(acme, key, 3, None),
        ]
    )
    stats = guardrail_stats(acme, start=NOW - DAY, end=NOW + DAY)
    assert stats.empty and stats.by_check == stats.by_model == stats.by_key == []


def test_a_member_counts_only_her_own_keys_calls(calls):
    erin = guardrail_stats(calls.acme, start=NOW - DAY, end=NOW + DAY, key_ids=[calls.objects["erin_key"].id])
    assert rows(erin.by_check) == {("no-legal", TOPICS): (0, 1, 0, 0)}
    assert [r.label for r in erin.by_key] == ["erin-notebook"]
    assert guardrail_stats(calls.acme, start=NOW - DAY, end=NOW + DAY, key_ids=[]).empty


def test_bob_never_sees_alices_counts(calls, client_as):
    globex = guardrail_stats(calls.globex, start=NOW - DAY, end=NOW + DAY)
    assert rows(globex.by_check) == {("pi", PI): (5, 0, 0, 0), ("secret", WORDS): (0, 1, 0, 0)}
    assert rows(globex.by_model) == {("bob-model", ""): (5, 1, 0, 0)}
    assert rows(globex.by_key) == {("globex-service", ""): (5, 1, 0, 0)}
    # Acme's keys named in a globex query count nothing there.
    acme_keys = [calls.objects["key"].id, calls.objects["erin_key"].id]
    assert guardrail_stats(calls.globex, start=NOW - DAY, end=NOW + DAY, key_ids=acme_keys).empty

    bob = client_as(calls.bob)
    page = bob.get(reverse("dashboard", args=["globex"])).content.decode()
    assert "secret" in page and "no-legal" not in page and "acme-service" not in page
    assert bob.get(reverse("dashboard", args=["acme"])).status_code == 404


def test_the_dashboard_shows_the_guardrails_panel(calls, client_as):
    response = client_as(calls.alice).get(reverse("dashboard", args=["acme"]))
    assert response.status_code == 200
    assert rows(response.context["guardrails"].by_check)[("pi", PI)] == (3, 0, 0, 1)
    page = response.content.decode()
    panel = page[page.index('id="guardrail-stats"') :]
    for text in ("Guardrails by check", "Guardrails by model", "Guardrails by key", PI, "no-legal", "(no key)"):
        assert text in panel, text
    assert "No guardrail verdicts" not in page
    assert "secret" not in page  # globex's check

    # Erin's dashboard: her own key's flag only.
    erin = client_as(calls.erin).get(reverse("dashboard", args=["acme"]))
    assert rows(erin.context["guardrails"].by_key) == {("erin-notebook", ""): (0, 1, 0, 0)}
    assert "acme-service" not in erin.content.decode()


def test_the_panel_is_one_line_without_verdicts(calls, client_as):
    since = (NOW - 2 * DAY).strftime("%Y-%m-%dT%H:%M")
    until = (NOW - 1 * DAY).strftime("%Y-%m-%dT%H:%M")
    response = client_as(calls.alice).get(
        reverse("dashboard", args=["acme"]), {"range": "custom", "since": since, "until": until}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "No guardrail verdicts in this range" in page
    assert "Guardrails by check" not in page


def test_the_api_counts_by_check_model_and_key(calls, api_as):
    response = api_as("viewer").get("/api/v1/guardrails/stats/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["by_check"][0] == {
        "check": "pi",
        "kind": PI,
        "block": 3,
        "flag": 0,
        "log": 0,
        "error": 1,
        "total": 4,
    }
    assert [(r["model"], r["total"]) for r in body["by_model"]] == [("gpt-4o-mini", 5), ("claude", 2)]
    by_key = {r["key"]: (r["key_id"], r["block"], r["flag"]) for r in body["by_key"]}
    assert by_key == {
        "acme-service": (calls.objects["key"].id, 2, 1),
        "erin-notebook": (calls.objects["erin_key"].id, 0, 1),
        "(no key)": (None, 1, 0),
    }
    # since/until pick the range: three days back, the older block.
    since, until = (NOW - 4 * DAY).isoformat(), (NOW - 2 * DAY).isoformat()
    older = api_as("viewer").get("/api/v1/guardrails/stats/", {"since": since, "until": until}).json()
    assert [(r["check"], r["block"]) for r in older["by_check"]] == [("pi", 1)]
    assert older["since"].startswith((NOW - 4 * DAY).strftime("%Y-%m-%dT%H:%M"))


def test_the_api_refuses_bad_ranges_and_unknown_parameters(calls, api_as):
    client = api_as("viewer")
    assert client.get("/api/v1/guardrails/stats/", {"since": "yesterday"}).status_code == 400
    later, earlier = NOW.isoformat(), (NOW - DAY).isoformat()
    assert client.get("/api/v1/guardrails/stats/", {"since": later, "until": earlier}).status_code == 400
    assert client.get("/api/v1/guardrails/stats/", {"since": (NOW - 500 * DAY).isoformat()}).status_code == 400
    response = client.get("/api/v1/guardrails/stats/", {"days": "7"})
    assert response.status_code == 400 and "days" in response.content.decode()
    assert client.get("/api/v1/guardrails/stats/", {"since": earlier}).status_code == 200


def test_the_api_is_tenant_scoped(calls, api_as):
    bob = api_as("owner", calls.globex).get("/api/v1/guardrails/stats/").json()
    assert [r["key"] for r in bob["by_key"]] == ["globex-service"]
    assert {r["check"]: r["total"] for r in bob["by_check"]} == {"pi": 5, "secret": 1}
    # Alice's token in acme: none of globex's checks.
    assert "secret" not in {r["check"] for r in api_as("owner").get("/api/v1/guardrails/stats/").json()["by_check"]}


def test_a_member_token_counts_only_her_own_keys(calls):
    _token, secret = management_token_create(calls.acme, name="erin-ci", role="member", actor=Actor(user=calls.erin))
    body = Client(headers={"Authorization": f"Bearer {secret}"}).get("/api/v1/guardrails/stats/").json()
    assert [(r["key"], r["flag"]) for r in body["by_key"]] == [("erin-notebook", 1)]


def test_the_partial_index_serves_each_breakdown(calls):
    """The query repeats the index's condition, so PostgreSQL reads only the rows with a verdict other than
    pass: among thousands of passing calls, each breakdown's plan goes through the partial index."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's plan")
    passing = {"pi": verdict(PI, "pass"), "no-legal": verdict(TOPICS, "pass")}
    CallLog.objects.bulk_create(
        [log(calls.acme, calls.objects["key"], 100 + n % 600, passing) for n in range(3000)], batch_size=1000
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE observability_calllog")
        # On the partitioned table each partition has its own copy of the index, named by PostgreSQL.
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'calllog_tenant_guardrails_created'::regclass"
        )
        names = {"calllog_tenant_guardrails_created", *(name for (name,) in cursor.fetchall())}
        for by in BREAKDOWNS:
            cursor.execute("EXPLAIN " + breakdown_sql("postgresql", by), [calls.acme.id, NOW - DAY, NOW + DAY])
            plan = "\n".join(line for (line,) in cursor.fetchall())
            assert any(f" {name} " in plan for name in names), (names, plan)
    assert rows(guardrail_stats(calls.acme, start=NOW - DAY, end=NOW + DAY).by_check)[("pi", PI)] == (3, 0, 0, 1)


def test_the_sqlite_dialect_counts_the_same():
    """SQLite (the embedded default) runs the json_each spelling of the same queries, and its partial index."""
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE observability_calllog (id INTEGER PRIMARY KEY, tenant_id INTEGER, virtual_key_id INTEGER, "
        "requested_model TEXT, created_at TEXT, guardrails TEXT)"
    )
    db.execute(
        "CREATE INDEX calllog_tenant_guardrails_created ON observability_calllog (tenant_id, created_at) "
        "WHERE guardrails IS NOT NULL AND guardrails <> '{}'"
    )
    rows_in = [
        (1, 7, "m1", "2026-11-25 12:00:00", {"pi": verdict(PI, "block"), "t": verdict(TOPICS, "pass")}),
        (1, 7, "m1", "2026-11-25 12:01:00", {"pi": verdict(PI, "block")}),
        (1, 8, "m2", "2026-11-25 12:02:00", {"t": verdict(TOPICS, "flag"), "pi": verdict(PI, "error")}),
        (1, None, "m2", "2026-11-25 12:03:00", {"w": verdict(WORDS, "log")}),
        (1, 7, "m1", "2026-11-25 12:04:00", {}),
        (1, 7, "m1", "2026-11-25 12:05:00", None),
        (1, 7, "m1", "2026-11-27 12:00:00", {"pi": verdict(PI, "block")}),  # after the range
        (2, 9, "m1", "2026-11-25 12:00:00", {"pi": verdict(PI, "block")}),  # another tenant
    ]
    db.executemany(
        "INSERT INTO observability_calllog (tenant_id, virtual_key_id, requested_model, created_at, guardrails) "
        "VALUES (?, ?, ?, ?, ?)",
        [(t, k, m, at, None if g is None else json.dumps(g)) for t, k, m, at, g in rows_in],
    )
    params = [1, "2026-11-25 00:00:00", "2026-11-26 00:00:00"]

    def run(by: str, *keys: int) -> list[tuple]:
        sql = breakdown_sql("sqlite", by, keys=len(keys) if keys else None).replace("%s", "?")
        return db.execute(sql, [*params, *keys]).fetchall()

    assert run("check") == [("pi", PI, 2, 0, 0, 1), ("t", TOPICS, 0, 1, 0, 0), ("w", WORDS, 0, 0, 1, 0)]
    assert run("model") == [("m2", 0, 1, 1, 1), ("m1", 2, 0, 0, 0)]
    assert sorted(run("key"), key=str) == sorted([(7, 2, 0, 0, 0), (8, 0, 1, 0, 1), (None, 0, 0, 1, 0)], key=str)
    assert run("key", 8) == [(8, 0, 1, 0, 1)]
    plan = " ".join(
        str(r) for r in db.execute("EXPLAIN QUERY PLAN " + breakdown_sql("sqlite", "model").replace("%s", "?"), params)
    )
    assert "calllog_tenant_guardrails_created" in plan, plan


def test_the_live_page_starts_with_the_stored_calls_verdicts(calls, client_as):
    page = client_as(calls.alice).get(reverse("logs-live", args=["acme"])).content.decode()
    marker = '<script id="live-initial" type="application/json">'
    start = page.index(marker) + len(marker)
    initial = {c["request_id"]: c for c in json.loads(page[start : page.index("</script>", start)])}
    assert initial["acme-1"]["guardrails"] == {"pi": "block"}  # the pass of no-legal is not sent
    assert initial["acme-7"]["guardrails"] == {"words": "log", "pi": "error"}
    assert initial["acme-4"]["guardrails"] == {} and initial["acme-6"]["guardrails"] == {}
