"""A row the database refuses must not block everyone's call logs, nor take its spend with it."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from billing.models import SpendLedger, TagSpend
from billing.selectors import reconcile
from observability import metrics
from observability.logbuffer import LogBuffer, buffer
from observability.models import CallLog
from tests.helpers.billing import record

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_row_with_a_value_the_database_refuses_is_kept_degraded_with_its_spend(acme, keys):
    web, _ = keys
    refused = metrics.value("calllog_rows_refused")
    buffer = LogBuffer()
    buffer.add(record(acme, web, cost=10))
    bad = record(acme, web, cost=20)
    bad["prompt_tokens"] = 2**40  # beyond the integer column
    bad["request_id"] = "bad"
    buffer.add(bad)
    buffer.add(record(acme, web, cost=30))
    assert buffer.flush_sync() == 3
    assert len(buffer) == 0
    assert CallLog.objects.count() == 3
    kept = CallLog.objects.get(request_id="bad")
    assert kept.prompt_tokens is None and kept.cost_picodollars == 20
    assert "database refused" in kept.error_message
    assert SpendLedger.objects.get().cost_picodollars == 60
    assert reconcile(acme) == []
    assert metrics.value("calllog_rows_refused") == refused + 1


def test_nul_and_lone_surrogates_reaching_the_writer_are_stored_and_reconcile(acme, keys):
    web, _ = keys
    buffer = LogBuffer()
    row = record(acme, web, cost=7, user="evil\x00user", tags=["team\x00a", "b\ud800"])
    row["error_message"] = "upstream said \x00"
    row["attempts"] = [{"error": "x\x00y"}]
    buffer.add(row)
    assert buffer.flush_sync() == 1
    log = CallLog.objects.get()
    assert log.end_user == "evil\ufffduser" and log.tags == ["team\ufffda", "b\ufffd"]
    ledger = SpendLedger.objects.get()
    assert ledger.end_user == "evil\ufffduser" and ledger.cost_picodollars == 7
    assert sorted(TagSpend.objects.values_list("tag", flat=True)) == ["b\ufffd", "team\ufffda"]
    assert reconcile(acme) == []


def test_the_hot_path_makes_every_request_string_storable_before_the_buffer(acme, keys):
    """No refusal at all: the proxy's CallRecord cleans what it hands the buffer."""
    from proxy.call import Call as CallRecord
    from proxy.snapshot import KeyEntry

    web, _ = keys
    refused = metrics.value("calllog_rows_refused")
    call = CallRecord("req_nul", "chat/completions", time.perf_counter())
    call.key = KeyEntry(web.id, acme.id, "web", frozenset(), None, False, {}, 0.0)
    call.model, call.user, call.tags = "gpt\x00-4o", "evil\x00user\udc80", ["t\x00"]
    call.status, call.error_type, call.error_message = 404, "model_not_found", "The model `gpt\x00-4o`"
    before = len(buffer)
    call.finish()
    assert len(buffer) == before + 1
    row = buffer._records.pop()  # taken out of the process-wide buffer and written by a private one
    writer = LogBuffer()
    writer.add(row)
    assert writer.flush_sync() == 1
    log = CallLog.objects.get(request_id="req_nul")
    assert (log.requested_model, log.end_user, log.tags) == ("gpt\ufffd-4o", "evil\ufffduser\ufffd", ["t\ufffd"])
    assert log.error_message == "The model `gpt\ufffd-4o`"
    assert metrics.value("calllog_rows_refused") == refused


@pytest.fixture
def poisoned_call_log():
    """A real refusal that no cleaning can avoid: a CHECK constraint on the call log table."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE observability_calllog ADD CONSTRAINT no_poison CHECK (request_id <> 'poison')")
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE observability_calllog DROP CONSTRAINT IF EXISTS no_poison")


def test_a_row_refused_even_degraded_keeps_its_ledger_entry(acme, keys, poisoned_call_log):
    web, _ = keys
    lost = metrics.value("calllog_rows_lost")
    buffer = LogBuffer()
    buffer.add(record(acme, web, cost=10))
    poison = record(acme, web, cost=25, user="mallory", tags=["t"])
    poison["request_id"] = "poison"
    buffer.add(poison)
    assert buffer.flush_sync() == 2
    assert list(CallLog.objects.values_list("cost_picodollars", flat=True)) == [10]
    assert SpendLedger.objects.get(end_user="mallory").cost_picodollars == 25
    assert TagSpend.objects.get(tag="t").cost_picodollars == 25
    assert metrics.value("calllog_rows_lost") == lost + 1
    # The ledger holds money the call log lacks: reconcile says so instead of agreeing on a loss.
    assert [d.what for d in reconcile(acme)] == [f"key {web.id} user mallory model gpt-4o-mini", "tag:t"]


def test_rows_wait_in_the_buffer_while_the_database_is_away(acme, keys):
    from django.db import OperationalError

    web, _ = keys

    class Away:
        def write(self, records):
            raise OperationalError("connection refused")

    buffer = LogBuffer(sink=Away())
    buffer.add(record(acme, web, cost=1))
    buffer.add(record(acme, web, cost=2))
    assert buffer.flush_sync() == 0
    assert len(buffer) == 2
    buffer.sink = LogBuffer().sink
    assert buffer.flush_sync() == 2
