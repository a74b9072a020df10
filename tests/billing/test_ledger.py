"""The spend ledger is written with the call logs, in one transaction, and reconciles row for row."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from billing.models import SpendLedger, TagSpend
from billing.selectors import reconcile, spend_summary
from observability.logbuffer import DatabaseSink
from observability.models import CallLog
from tests.helpers.billing import record

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_ledger_sums_the_call_logs_and_reconciles(acme, keys):
    web, batch = keys
    DatabaseSink().write(
        [
            record(acme, web, cost=1_500_000, tags=["team-a"]),
            record(acme, web, cost=2_500_000, user="u1", tags=["team-a", "exp"]),
            record(acme, batch, cost=7, model="embed"),
            record(acme, batch, cost=None),  # unpriced: in the call log, not in the money
        ]
    )
    DatabaseSink().write([record(acme, web, cost=1_000_000)])
    assert CallLog.objects.count() == 5
    assert SpendLedger.objects.get(virtual_key_id=web.id, end_user="").cost_picodollars == 2_500_000
    assert dict(TagSpend.objects.values_list("tag", "cost_picodollars")) == {"team-a": 4_000_000, "exp": 2_500_000}
    assert reconcile(acme) == []
    assert spend_summary(acme) == {
        "total_usd": "0.000005000007",
        "by_key": {"batch": "0.000000000007", "web": "0.000005"},
        "by_model": {"embed": "0.000000000007", "gpt-4o-mini": "0.000005"},
    }


def test_the_ledger_is_the_stores_batch_hook_and_rolls_back_with_the_call_logs(acme, keys, monkeypatch):
    from billing.apps import BillingConfig
    from billing.ledger import write_ledger_batch
    from observability import logbuffer

    BillingConfig("billing", __import__("billing")).ready()  # a second ready() registers nothing more
    assert logbuffer._batch_hooks.count(write_ledger_batch) == 1

    def refuse(cursor, records):
        raise RuntimeError("a later hook fails")

    monkeypatch.setattr(logbuffer, "_batch_hooks", [*logbuffer._batch_hooks, refuse])
    web, _batch = keys
    with pytest.raises(RuntimeError):
        DatabaseSink().write([record(acme, web, cost=1_500_000)])
    assert not CallLog.objects.exists() and not SpendLedger.objects.exists()


def test_reconcile_finds_cost_booked_to_the_wrong_key_even_when_the_day_total_matches(acme, keys):
    web, batch = keys
    DatabaseSink().write([record(acme, web, cost=100), record(acme, batch, cost=50)])
    SpendLedger.objects.filter(virtual_key_id=web.id).update(cost_picodollars=50)
    SpendLedger.objects.filter(virtual_key_id=batch.id).update(cost_picodollars=100)
    diffs = reconcile(acme)
    assert len(diffs) == 2 and all(d.day == "2026-11-25" for d in diffs)


def test_reconcile_finds_a_tag_difference(acme, keys):
    web, _ = keys
    DatabaseSink().write([record(acme, web, cost=100, tags=["a"])])
    TagSpend.objects.update(cost_picodollars=99)
    assert [d.what for d in reconcile(acme)] == ["tag:a"]


def test_concurrent_writers_never_lose_an_increment(acme, keys):
    web, _ = keys
    errors = []

    def writer() -> None:
        try:
            sink = DatabaseSink()
            for _ in range(10):
                sink.write([record(acme, web, cost=3, tags=["t"]) for _ in range(20)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    row = SpendLedger.objects.get(virtual_key_id=web.id)
    assert (row.cost_picodollars, row.requests) == (4 * 10 * 20 * 3, 800)
    assert TagSpend.objects.get(tag="t").cost_picodollars == 2400
    assert reconcile(acme) == []
