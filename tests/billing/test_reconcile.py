"""`gateway reconcile` day by day, within bounds, and past retention against the day rollups;
`gateway rebuild-rollups` recomputes a tenant's rollups from its call logs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from billing.models import SpendLedger
from billing.selectors import reconcile_days
from observability.logbuffer import DatabaseSink
from observability.models import CallLog, CallRollupDay, CallRollupHour
from observability.rollups import rebuild_rollups
from tenants.models import Tenant
from tests.helpers.billing import record

pytestmark = pytest.mark.django_db(transaction=True)

TODAY = datetime.now(UTC).date()
ALICE_KEY = SimpleNamespace(id=7)


def calls(tenant: Tenant, day: date, n: int) -> list[dict]:
    """Alice's n calls of `day` (key 7) from 09:00 UTC, a minute apart, each 1 micro-dollar."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    return [
        {
            **record(tenant, ALICE_KEY, cost=1_000_000, user="alice", tags=["team-a"], day=day),
            "created_at": start + timedelta(minutes=i),
            "request_id": f"req-{tenant.slug}-{day}-{i}",
        }
        for i in range(n)
    ]


@pytest.fixture
def acme() -> Tenant:
    tenant = Tenant.objects.create(slug="acme", name="Acme Corp", log_retention_days=30)
    sink = DatabaseSink()  # rows, their ledger entries and rollups, as the log writer stores them
    for days_ago in (40, 35, 3, 1):
        sink.write(calls(tenant, TODAY - timedelta(days=days_ago), 4))
    return tenant


def test_every_day_matches_and_days_past_retention_are_checked_against_the_rollups(acme):
    # Retention deletes the rows of days 40 and 35; their ledger and day rollups stay.
    old = CallLog.objects.filter(tenant=acme, day__lt=TODAY - timedelta(days=30))
    assert old.count() == 8
    old.delete()
    found = []
    report = reconcile_days(acme, on_difference=found.append, today=TODAY)
    assert found == []
    assert report.days_against_rollups == 10  # days 40..31: past the 30 days of retention
    assert report.days_checked == 31  # days 30..0 (today)


def test_a_ledger_that_disagrees_is_reported_by_day_and_bounds_limit_what_is_read(acme):
    day = TODAY - timedelta(days=3)
    SpendLedger.objects.filter(tenant=acme, day=day).update(cost_picodollars=3_000_000)
    found = []
    report = reconcile_days(acme, since=day, until=day + timedelta(days=1), on_difference=found.append, today=TODAY)
    assert report.days_checked == 1
    assert [(d.day, d.ledger, d.call_logs) for d in found] == [(str(day), found[0].ledger, found[0].call_logs)]
    assert found[0].ledger < found[0].call_logs
    assert reconcile_days(acme, until=day, today=TODAY).differences == 0  # the bad day is outside


def test_the_command_streams_the_report_and_fails_on_a_difference(acme):
    out, err = StringIO(), StringIO()
    call_command(
        "gateway",
        "reconcile",
        "--tenant",
        "acme",
        "--since",
        str(TODAY - timedelta(days=5)),
        "--until",  # bounded: a run that crosses midnight would count one day more
        str(TODAY + timedelta(days=1)),
        stdout=out,
        verbosity=2,
    )
    assert "acme: 6 day(s) against the call logs" in out.getvalue()  # 5 days ago to today
    assert "ledger matches call logs" in out.getvalue()
    SpendLedger.objects.filter(tenant=acme, day=TODAY - timedelta(days=1)).delete()
    with pytest.raises(CommandError, match="1 difference"):
        call_command("gateway", "reconcile", "--tenant", "acme", stdout=StringIO(), stderr=err)
    assert "ledger 0" in err.getvalue()
    with pytest.raises(CommandError, match="not a date"):
        call_command("gateway", "reconcile", "--since", "last week", stdout=StringIO())


def test_rebuild_rollups_sums_the_call_logs_again(acme):
    since = TODAY - timedelta(days=5)
    CallRollupHour.objects.filter(tenant_id=acme.id).update(requests=999, cost_picodollars=0)
    CallRollupDay.objects.filter(
        tenant_id=acme.id, bucket__gte=datetime.combine(since, datetime.min.time(), UTC)
    ).delete()
    out = StringIO()
    call_command("gateway", "rebuild-rollups", "--tenant", "acme", "--since", str(since), stdout=out)
    assert "rebuilt from 8 call log(s)" in out.getvalue()
    recent = CallRollupHour.objects.filter(
        tenant_id=acme.id, bucket__gte=datetime.combine(since, datetime.min.time(), UTC)
    )
    assert recent.aggregate(n=Sum("requests"), c=Sum("cost_picodollars")) == {"n": 8, "c": 8_000_000}
    assert CallRollupDay.objects.filter(tenant_id=acme.id).count() == 4  # days 40, 35 kept; 3, 1 rebuilt
    older = CallRollupHour.objects.filter(
        tenant_id=acme.id, bucket__lt=datetime.combine(since, datetime.min.time(), UTC)
    )
    assert older.aggregate(n=Sum("requests"))["n"] == 2 * 999  # outside --since: left as it was
    assert rebuild_rollups(acme, since=since, until=TODAY) == 8  # again: the same rows, the same sums
