"""Dashboard, log explorer, detail and exports: who sees what, keyset pages, streamed exports.

Alice owns acme, Bob owns globex, Erin is a member of acme with her own key.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from billing.ledger import write_ledger
from observability.logbuffer import after_write
from observability.models import CallBody, CallLog
from observability.selectors import LogFilters, filtered_logs, iter_log_chunks, log_page
from tenants.audit import Actor
from tenants.models import Membership, Role
from tenants.services import virtual_key_create

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _plain_static(settings):
    # The production setting is ServeStatic's manifest storage, which needs collectstatic first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def write_logs(records: list[dict]) -> list[CallLog]:
    """What the buffer's database sink does, inside the test's transaction: insert, then run the hooks."""
    bodies = ("request_body", "response_body")
    rows = CallLog.objects.bulk_create([CallLog(**{k: v for k, v in r.items() if k not in bodies}) for r in records])
    for r in records:
        r.setdefault("day", r["created_at"].date())
    with connection.cursor() as cursor:
        write_ledger(cursor, records, connection.ops.adapt_datefield_value)
    after_write(records)
    return rows


def record(tenant, key, i: int, **extra) -> dict:
    return {
        "created_at": NOW - timedelta(minutes=i),
        "tenant_id": tenant.id,
        "virtual_key_id": key.id if key else None,
        "request_id": f"req-{tenant.slug}-{i}",
        "endpoint": "chat.completions",
        "requested_model": "gpt-4o-mini",
        "status_code": 200,
        "latency_ms": 100.0 + i,
        "ttfb_ms": 40.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_picodollars": 1_500_000,
        "end_user": "u1",
        "tags": ["team-a"],
        **extra,
    }


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Built once for the module inside a transaction that is rolled back at the end; each test runs in a
    savepoint of it. Users get no password (force_login), which keeps the setup fast."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from tenants.models import Tenant

    users = get_user_model().objects
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        acme = Tenant.objects.create(slug="acme", name="Acme")
        globex = Tenant.objects.create(slug="globex", name="Globex")
        alice = users.create_user(username="alice", email="alice@acme.test")
        erin = users.create_user(username="erin", email="erin@acme.test")
        bob = users.create_user(username="bob", email="bob@globex.test")
        Membership.objects.create(user=alice, tenant=acme, role=Role.OWNER)
        Membership.objects.create(user=erin, tenant=acme, role=Role.MEMBER)
        Membership.objects.create(user=bob, tenant=globex, role=Role.OWNER)
        alice_key, _ = virtual_key_create(acme, name="alice-app", actor=Actor(user=alice))
        erin_key, _ = virtual_key_create(acme, name="erin-app", actor=Actor(user=erin))
        bob_key, _ = virtual_key_create(globex, name="bob-app", actor=Actor(user=bob))
        records = [record(acme, alice_key, i) for i in range(0, 30)]
        records += [record(acme, erin_key, i, request_id=f"erin-{i}", end_user="u2", tags=[]) for i in range(30, 35)]
        records += [
            record(acme, alice_key, 40, request_id="failed", status_code=502, error_type="upstream_error"),
            record(
                acme, alice_key, 41, request_id="cut-mid-stream", error_type="stream_error", requested_model="local"
            ),
        ]
        records += [record(globex, bob_key, i, request_id=f"globex-{i}") for i in range(3)]
        write_logs(records)
        try:
            yield {
                "acme": acme,
                "globex": globex,
                "alice": alice,
                "bob": bob,
                "erin": erin,
                "alice_key": alice_key,
                "erin_key": erin_key,
            }
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture
def alice(world):
    return world["alice"]


@pytest.fixture
def bob(world):
    return world["bob"]


def test_dashboard_counts_from_rollups_and_scopes_a_member(client, alice, world):
    client.force_login(alice)
    response = client.get(reverse("dashboard", args=["acme"]))
    assert response.status_code == 200
    board = response.context["board"]
    assert board.totals.requests == 37
    assert board.totals.errors == 2  # a 502, and a 200 stream that failed mid-way
    assert board.totals.cost_picodollars == 37 * 1_500_000
    assert b"<svg" in response.content
    assert {r.label for r in board.by_key} == {"alice-app", "erin-app"}

    client.force_login(world["erin"])
    board = client.get(reverse("dashboard", args=["acme"]), {"range": "7d"}).context["board"]
    assert board.totals.requests == 5
    assert {r.label for r in board.by_key} == {"erin-app"}


def test_dashboard_custom_range_and_bad_input(client, alice, world):
    client.force_login(alice)
    since = (NOW - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")
    response = client.get(reverse("dashboard", args=["acme"]), {"range": "custom", "since": since})
    assert response.status_code == 200
    # A short range reads the minute rollup: the calls of the last ten minutes (and the aligned minute).
    assert 10 <= response.context["board"].totals.requests <= 11
    response = client.get(reverse("dashboard", args=["acme"]), {"range": "custom", "since": "yesterday-ish"})
    assert response.status_code == 400
    assert b"Enter a valid date/time" in response.content


def test_bob_gets_404_for_everything_of_acme(client, bob, world):
    client.force_login(bob)
    log = CallLog.objects.get(request_id="req-acme-1")
    for url in (
        reverse("dashboard", args=["acme"]),
        reverse("log-explorer", args=["acme"]),
        reverse("log-detail", args=["acme", log.id]),
        reverse("log-export", args=["acme"]),
        reverse("playground", args=["acme"]),
    ):
        assert client.get(url).status_code == 404, url
    # Nor through his own tenant's URLs.
    assert client.get(reverse("log-detail", args=["globex", log.id])).status_code == 404
    assert client.get(reverse("log-by-request", args=["globex", "req-acme-1"])).status_code == 404
    # A NUL in the id is just an id no call has (not a 500 from the database).
    assert client.get(reverse("log-by-request", args=["globex", "req\x00x"])).status_code == 404


def test_explorer_filters_and_member_sees_only_own_keys(client, alice, world):
    client.force_login(alice)
    url = reverse("log-explorer", args=["acme"])
    response = client.get(url, {"status": "error"})
    assert {row.request_id for row, _ in response.context["rows"]} == {"failed", "cut-mid-stream"}
    response = client.get(url, {"key": world["erin_key"].id, "user": "u2"})
    assert len(response.context["rows"]) == 5
    response = client.get(url, {"tag": "team-a", "model": "local"})
    assert [row.request_id for row, _ in response.context["rows"]] == ["cut-mid-stream"]
    response = client.get(url, {"request_id": "req-acme-3"})
    assert [row.request_id for row, _ in response.context["rows"]] == ["req-acme-3"]
    assert client.get(url, {"status": "teapot"}).status_code == 400

    client.force_login(world["erin"])
    response = client.get(url)
    assert {row.virtual_key_id for row, _ in response.context["rows"]} == {world["erin_key"].id}
    alices = CallLog.objects.get(request_id="req-acme-1")
    assert client.get(reverse("log-detail", args=["acme", alices.id])).status_code == 404
    erins = CallLog.objects.get(request_id="erin-30")
    assert client.get(reverse("log-detail", args=["acme", erins.id])).status_code == 200


def test_keyset_pages_have_no_gap_and_no_duplicate(world):
    acme = world["acme"]
    # Rows sharing one timestamp are the hard case for keyset pagination.
    same = NOW - timedelta(days=1)
    write_logs([record(acme, world["alice_key"], 0, created_at=same, request_id=f"tie-{i}") for i in range(7)])
    expected = list(filtered_logs(acme, LogFilters()).values_list("id", flat=True))
    seen, cursor = [], ""
    while True:
        page, cursor = log_page(acme, LogFilters(), cursor=cursor, size=4)
        seen += [row.id for row in page]
        if not cursor:
            break
    assert seen == expected
    chunked = [row.id for chunk in iter_log_chunks(filtered_logs(acme, LogFilters()), chunk=5) for row in chunk]
    assert chunked == expected


def test_detail_shows_routing_attempts_and_stored_bodies(client, alice, world):
    acme = world["acme"]
    acme.log_bodies = True
    acme.save(update_fields=["log_bodies"])
    write_logs(
        [
            record(
                acme,
                world["alice_key"],
                50,
                request_id="with-body",
                route="gpt-4o",
                variant="local",
                fallback_reason="rate_limited",
                cache_status="miss",
                pii_actions={"email": {"pseudonymize": 2}},
                attempts=[
                    {
                        "deployment": 1,
                        "provider": "main",
                        "model": "gpt-4o",
                        "status": 429,
                        "latency_ms": 12.0,
                        "error": "rate_limited",
                    },
                    {
                        "deployment": 2,
                        "provider": "mock",
                        "model": "mock-chat",
                        "status": 200,
                        "latency_ms": 30.0,
                        "error": "",
                    },
                ],
                request_body='{"messages": [{"role": "user", "content": "mail <EMAIL_1>"}]}',
                response_body="Hello" * 20000,
            )
        ]
    )
    body = CallBody.objects.get(request_id="with-body")
    assert body.truncated and len(body.response_body) <= 64 * 1024
    client.force_login(alice)
    log = CallLog.objects.get(request_id="with-body")
    response = client.get(reverse("log-detail", args=["acme", log.id]))
    text = response.content.decode()
    assert response.status_code == 200
    for expected in ("rate_limited", "pseudonymize × 2", "mock-chat", "&lt;EMAIL_1&gt;", "miss", "local"):
        assert expected in text, expected
    assert client.get(reverse("log-by-request", args=["acme", "with-body"])).url.endswith(f"/logs/{log.id}/")


def test_csv_export_streams_exactly_the_filtered_rows(client, alice, world):
    client.force_login(alice)
    url = reverse("log-export", args=["acme"])
    response = client.get(url, {"format": "csv", "key": world["alice_key"].id, "status": "2xx"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = set(
        CallLog.objects.filter(
            tenant=world["acme"], virtual_key_id=world["alice_key"].id, status_code__lt=300
        ).values_list("request_id", flat=True)
    )
    assert {r["request_id"] for r in rows} == expected and len(rows) == len(expected) == 31
    assert rows[0]["cost_usd"] == "0.0000015"
    assert rows[0]["key"] == "alice-app"

    response = client.get(url, {"format": "jsonl", "user": "u2"})
    lines = [orjson.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert {line["request_id"] for line in lines} == {f"erin-{i}" for i in range(30, 35)}
    assert client.get(url, {"format": "xml"}).status_code == 400

    # A member exports only their own keys' calls.
    client.force_login(world["erin"])
    response = client.get(url, {"format": "jsonl"})
    lines = [orjson.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert {line["key"] for line in lines} == {"erin-app"}


def test_export_logs_command(world, capsys):
    since = (NOW - timedelta(minutes=4, seconds=30)).isoformat()
    call_command("gateway", "export-logs", "--tenant", "acme", "--since", since, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["request_id"] for r in rows] == [f"req-acme-{i}" for i in range(5)]
    call_command("gateway", "export-logs", "--tenant", "globex", "--format", "jsonl")
    lines = capsys.readouterr().out.splitlines()
    assert {orjson.loads(line)["request_id"] for line in lines} == {"globex-0", "globex-1", "globex-2"}
    with pytest.raises(CommandError, match="is not an ISO 8601 date"):
        call_command("gateway", "export-logs", "--tenant", "acme", "--since", "last tuesday")
    with pytest.raises(CommandError, match="no tenant"):
        call_command("gateway", "export-logs", "--tenant", "initech")


def test_spend_page_ranges_counts_and_breakdowns(client, alice, world):
    client.force_login(alice)
    url = reverse("spend", args=["acme"])
    response = client.get(url, {"range": "7d"})
    assert response.status_code == 200
    ctx = response.context
    assert ctx["totals"]["requests"] == 37 and ctx["totals"]["tokens"] == 37 * 15
    assert ctx["total"] == Decimal("0.0000555")
    assert {r.label: r.requests for r in ctx["by_user"]} == {"u1": 32, "u2": 5}
    assert {r.label: r.requests for r in ctx["by_tag"]} == {"team-a": 32}
    far = (NOW - timedelta(days=400)).date()
    response = client.get(url, {"range": "custom", "since": far, "until": far + timedelta(days=1)})
    assert response.context["totals"]["requests"] == 0
    assert client.get(url, {"range": "custom", "since": "not a day"}).status_code == 400

    # Keys with calls, spend and last use, and the A/B variants, come from the rollups (an htmx fragment).
    usage_url = reverse("spend-usage", args=["acme"])
    response = client.get(usage_url + "?" + ctx["usage_query"], HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    rows = {key.name: u for key, u in response.context["key_rows"]}
    assert rows["alice-app"].calls == 32 and rows["erin-app"].calls == 5
    assert rows["alice-app"].last_at == NOW
    assert rows["erin-app"].cost_usd == Decimal("0.0000075")
    assert {(v.model, v.variant) for v in response.context["variants"]} == {("gpt-4o-mini", ""), ("local", "")}
    assert client.get(usage_url, {"start": "yesterday"}).status_code == 400

    client.force_login(world["erin"])
    response = client.get(usage_url + "?" + ctx["usage_query"], HTTP_HX_REQUEST="true")
    assert [key.name for key, _ in response.context["key_rows"]] == ["erin-app"]
    assert client.get(url).context["by_tag"] == []
    client.force_login(world["bob"])
    assert client.get(usage_url + "?" + ctx["usage_query"]).status_code == 404


def test_log_settings_toggle_and_playground_page(client, alice, world):
    client.force_login(alice)
    response = client.post(
        reverse("tenant-settings", args=["acme"]), {"name": "Acme", "log_bodies": "on", "log_retention_days": "7"}
    )
    assert response.status_code == 302
    world["acme"].refresh_from_db()
    assert world["acme"].log_bodies is True and world["acme"].log_retention_days == 7
    response = client.post(reverse("tenant-settings", args=["acme"]), {"name": "Acme", "log_retention_days": "0"})
    assert response.status_code == 200 and "log_retention_days" in response.context["form"].errors

    # The playground's key and calls: tests/observability/test_playground.py.
    page = client.get(reverse("playground", args=["acme"]))
    assert page.status_code == 200


def test_load_older_answers_the_rows_fragment(client, alice, world, monkeypatch):
    monkeypatch.setattr("observability.selectors.PAGE_SIZE", 10)
    client.force_login(alice)
    url = reverse("log-explorer", args=["acme"])
    first = client.get(url)
    assert first.context["next_cursor"]
    older = client.get(url, {"cursor": first.context["next_cursor"]}, HTTP_HX_REQUEST="true")
    assert older.status_code == 200 and b"<html" not in older.content
    assert {r.id for r, _ in older.context["rows"]}.isdisjoint({r.id for r, _ in first.context["rows"]})


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    from observability.exports import _csv_cell

    assert _csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _csv_cell("@user") == "'@user"
    assert _csv_cell(-3) == -3 and _csv_cell("plain") == "plain" and _csv_cell(None) == ""
    assert _csv_cell(["a", "b"]) == "a;b"


def test_charts_escape_their_labels():
    from observability.charts import bar_chart, line_chart

    svg = bar_chart("<b>", ["<script>"], [1])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    svg = line_chart("t", ["a", "b", "c"], {"p50": [1.0, None, 3.0]})
    assert svg.count("<polyline") == 2  # a gap breaks the line


def test_without_a_start_the_explorer_covers_the_last_seven_days(client, alice, world):
    # A call of ten days ago is outside the default range; a start date or its request id finds it.
    write_logs([record(world["acme"], world["alice_key"], 10 * 24 * 60, request_id="old-call")])
    client.force_login(alice)
    url = reverse("log-explorer", args=["acme"])
    response = client.get(url, {"user": "u1"})
    assert "old-call" not in {row.request_id for row, _ in response.context["rows"]}
    assert b"the last 7 days are shown" in response.content
    since = (NOW - timedelta(days=11)).strftime("%Y-%m-%dT%H:%M")
    rows = client.get(url, {"user": "u1", "since": since}).context["rows"]
    assert "old-call" in {row.request_id for row, _ in rows}
    rows = client.get(url, {"request_id": "old-call"}).context["rows"]
    assert [row.request_id for row, _ in rows] == ["old-call"]


def test_exports_carry_each_calls_scores(client, alice, world):
    """Alice's export has each call's id and its scores (feedback by name; an evaluator's with @source);
    a call of Bob's globex with the same call id never lends her its score."""
    from observability.models import CallScore

    row = CallLog.objects.filter(tenant=world["acme"], virtual_key_id=world["alice_key"].id).order_by("id").first()
    row.call_id = "call_export_scores_0001"
    row.save(update_fields=["call_id"])
    common = {"call_id": row.call_id, "request_id": row.request_id, "call_created_at": row.created_at}
    CallScore.objects.create(tenant_id=world["acme"].id, name="thumbs", source="feedback", value=1, **common)
    CallScore.objects.create(tenant_id=world["acme"].id, name="json_ok", source="valid-json", value=0, **common)
    CallScore.objects.create(tenant_id=world["globex"].id, name="thumbs", source="feedback", value=0, **common)
    client.force_login(alice)
    url = reverse("log-export", args=["acme"])
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(url, {"format": "csv"}).streaming_content).decode())))
    scored = [r for r in rows if r["call_id"] == row.call_id]
    assert [r["scores"] for r in scored] == ["json_ok@valid-json=0;thumbs=1"]
    assert {r["scores"] for r in rows if r["call_id"] != row.call_id} == {""}
    lines = [
        orjson.loads(line) for line in b"".join(client.get(url, {"format": "jsonl"}).streaming_content).splitlines()
    ]
    [line] = [line for line in lines if line["call_id"] == row.call_id]
    assert [(s["name"], s["value"], s["source"]) for s in line["scores"]] == [
        ("json_ok", 0.0, "valid-json"),
        ("thumbs", 1.0, "feedback"),
    ]


def test_the_call_page_shows_its_scores_and_no_other_tenants(client, alice, world):
    from observability.models import CallScore

    row = CallLog.objects.filter(tenant=world["acme"], virtual_key_id=world["alice_key"].id).order_by("id").first()
    row.call_id = "call_detail_scores_0001"
    row.save(update_fields=["call_id"])
    common = {"call_id": row.call_id, "request_id": row.request_id, "call_created_at": row.created_at}
    CallScore.objects.create(
        tenant_id=world["acme"].id, name="helpfulness", source="judge", value=4, comment="clear", **common
    )
    CallScore.objects.create(tenant_id=world["globex"].id, name="globex_only", source="feedback", value=0, **common)
    client.force_login(alice)
    page = client.get(reverse("log-detail", args=["acme", row.id])).content.decode()
    assert "Quality scores" in page and "helpfulness" in page and "evaluator judge" in page and "clear" in page
    assert "globex_only" not in page
    other = CallLog.objects.filter(tenant=world["acme"]).exclude(id=row.id).first()
    assert "No scores yet" in client.get(reverse("log-detail", args=["acme", other.id])).content.decode()


def test_the_explorer_and_its_export_filter_by_score(client, alice, world):
    """Alice finds the calls her users scored low; a score of Bob's globex on the same call id is not hers."""
    from observability.models import CallScore

    rows = list(CallLog.objects.filter(tenant=world["acme"], virtual_key_id=world["alice_key"].id).order_by("id")[:3])
    for i, (row, value) in enumerate(zip(rows, (1, 4, 5), strict=True)):
        row.call_id = f"call_filter_scores_{i:04d}"
        row.save(update_fields=["call_id"])
        common = {"call_id": row.call_id, "request_id": row.request_id, "call_created_at": row.created_at}
        CallScore.objects.create(
            tenant_id=world["acme"].id, name="helpfulness", source="feedback", value=value, **common
        )
    common = {"call_id": rows[2].call_id, "request_id": "x", "call_created_at": rows[2].created_at}
    CallScore.objects.create(tenant_id=world["globex"].id, name="helpfulness", source="feedback", value=1, **common)
    client.force_login(alice)
    url = reverse("log-explorer", args=["acme"])
    since = "2020-01-01T00:00"

    def ids(score: str) -> set[str]:
        response = client.get(url, {"score": score, "since": since})
        assert response.status_code == 200
        return {row.request_id for row, _key in response.context["rows"]}

    assert ids("helpfulness") == {r.request_id for r in rows}
    assert ids("helpfulness>=4") == {rows[1].request_id, rows[2].request_id}
    assert ids("helpfulness < 2") == {rows[0].request_id}
    assert ids("helpfulness=5") == {rows[2].request_id}
    assert ids("thumbs") == set()
    bad = client.get(url, {"score": "helpfulness>>1"})
    assert "Write a score name" in bad.content.decode()
    export = client.get(
        reverse("log-export", args=["acme"]), {"format": "csv", "score": "helpfulness>=4", "since": since}
    )
    exported = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert {r["request_id"] for r in exported} == {rows[1].request_id, rows[2].request_id}
