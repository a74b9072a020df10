"""A row the database refuses must not block everyone's call logs and ledger."""

from __future__ import annotations

import pytest

from billing.models import SpendLedger
from observability.logbuffer import LogBuffer
from observability.models import CallLog
from tests.billing.test_ledger import keys, record  # noqa: F401 - fixture and row builder

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_bad_row_is_dropped_and_the_rest_are_written(acme, keys):  # noqa: F811
    web, _ = keys
    buffer = LogBuffer()
    buffer.add(record(acme, web, cost=10))
    bad = record(acme, web, cost=20)
    bad["prompt_tokens"] = 2**40  # beyond the integer column
    buffer.add(bad)
    buffer.add(record(acme, web, cost=30))
    assert buffer.flush_sync() == 2
    assert len(buffer) == 0
    assert CallLog.objects.count() == 2
    assert SpendLedger.objects.get().cost_picodollars == 40


def test_rows_wait_in_the_buffer_while_the_database_is_away(acme, keys):  # noqa: F811
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
