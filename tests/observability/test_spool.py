"""The local spool keeps every call-log row on disk until the database has it (observability.spool).

Alice's calls are spooled; a segment whose writer is gone (closed, or its process died) is checked
against the call log, what is missing is stored with its ledger entry, and the file is deleted."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db.models import Sum

from billing.models import SpendLedger
from billing.selectors import reconcile
from observability.logbuffer import DatabaseSink
from observability.models import CallLog
from observability.spool import Spool
from tenants.models import Tenant
from tests.helpers.billing import record as billing_record

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
ALICE_KEY = SimpleNamespace(id=11)


def call_record(tenant: Tenant, n: int) -> dict:
    """Alice's n-th call of the morning (key 11), priced."""
    return {
        **billing_record(tenant, ALICE_KEY, cost=4_500_000, user="alice", tags=["team-a"], day=T0.date()),
        "created_at": T0 + timedelta(seconds=n),
        "request_id": f"req-alice-{n}",
    }


@pytest.fixture
def acme(db) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme Corp")


@pytest.fixture
def spool(tmp_path, settings) -> Spool:
    settings.GATEWAY_SPOOL_DIR = str(tmp_path)
    return Spool(tmp_path / "db")


def test_rows_the_database_lacks_are_stored_with_their_spend_and_the_segment_is_deleted(acme, spool):
    records = [call_record(acme, n) for n in range(5)]
    DatabaseSink().write(records[:2])  # these two reached the database the usual way
    for record in records:
        spool.append(record)
    spool.rotate(force=True)
    assert spool.settle(DatabaseSink(dedupe=True).write, min_age=0) == 5
    assert CallLog.objects.filter(tenant=acme).count() == 5  # three stored from the spool, none twice
    ledger = SpendLedger.objects.filter(tenant=acme).aggregate(c=Sum("cost_picodollars"), n=Sum("requests"))
    assert ledger == {"c": 5 * 4_500_000, "n": 5}  # each call's spend once
    assert reconcile(acme) == []
    assert list(spool.directory.glob("*.jsonl")) == []


def test_a_segment_being_written_is_left_alone_and_a_dead_writers_segment_is_settled(acme, spool, tmp_path):
    spool.append(call_record(acme, 1))
    other = Spool(spool.directory)  # another process of the same database
    assert other.settle(DatabaseSink(dedupe=True).write, min_age=0) == 0  # its writer holds the lock
    assert CallLog.objects.count() == 0
    os.close(spool._fd)  # the writer dies without rotating: the lock goes with it
    spool._fd = None
    assert other.settle(DatabaseSink(dedupe=True).write, min_age=0) == 1
    assert CallLog.objects.filter(request_id="req-alice-1").count() == 1


def test_a_line_torn_by_a_crash_is_skipped_and_the_rest_is_stored(acme, spool):
    spool.append(call_record(acme, 1))
    spool.append(call_record(acme, 2))
    path = spool._path
    spool.rotate(force=True)
    with open(path, "ab") as f:
        f.write(b'{"tenant_id": 1, "request_id": "req-cut')  # the process died in mid-write
    assert spool.settle(DatabaseSink(dedupe=True).write, min_age=0) == 2
    assert sorted(CallLog.objects.values_list("request_id", flat=True)) == ["req-alice-1", "req-alice-2"]


def test_young_segments_wait_for_the_usual_path(acme, spool):
    spool.append(call_record(acme, 1))
    spool.rotate(force=True)
    assert spool.settle(DatabaseSink(dedupe=True).write, min_age=60) == 0
    assert len(list(spool.directory.glob("*.jsonl"))) == 1


def test_a_row_the_database_will_never_take_does_not_hold_the_others(acme, spool):
    globex = Tenant.objects.create(slug="globex", name="Globex")
    gone = call_record(globex, 1)
    globex.delete()  # Bob's tenant is deleted while its last row waits in the spool
    spool.append(gone)
    spool.append(call_record(acme, 2))
    spool.rotate(force=True)
    assert spool.settle(DatabaseSink(dedupe=True).write, min_age=0) == 2
    assert list(CallLog.objects.values_list("request_id", flat=True)) == ["req-alice-2"]
    assert list(spool.directory.glob("*.jsonl")) == []
