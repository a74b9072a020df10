"""Invoice numbers are sequential and gap-free for the operator, even under concurrent finalization."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from django.db import connection

from billing.invoicing.services import finalize_invoices
from billing.models import Invoice, InvoiceCounter
from tenants.models import Tenant
from tests.helpers.billing import DEC_2, NOV, add_ledger

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_finalization_numbers_every_invoice_once_without_gaps():
    tenants = [Tenant.objects.create(slug=f"t{i}", name=f"Tenant {i}") for i in range(6)]
    for i, t in enumerate(tenants):
        add_ledger(t, date(2026, 11, 1 + i), "gpt-4o", (i + 1) * 10**12)
    # The tenant that has nothing to bill must not take (and lose) a number.
    Tenant.objects.create(slug="idle", name="Idle")

    errors: list[BaseException] = []
    start = threading.Barrier(len(tenants) * 2 + 1)

    def close(tenant: Tenant | None) -> None:
        try:
            start.wait()
            finalize_invoices(tenant=tenant, month=NOV, now=DEC_2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    # Every tenant twice, plus one run over all tenants, all at once.
    threads = [threading.Thread(target=close, args=(t,)) for t in tenants * 2]
    threads.append(threading.Thread(target=close, args=(None,)))
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    invoices = list(Invoice.objects.order_by("number"))
    assert [inv.number for inv in invoices] == [1, 2, 3, 4, 5, 6]
    assert sorted(inv.tenant.slug for inv in invoices) == [t.slug for t in tenants]
    assert InvoiceCounter.objects.get(name="operator").last_number == 6
    # Each tenant's invoice bills its own ledger.
    assert {inv.tenant.slug: inv.total_usd for inv in invoices} == {f"t{i}": i + 1 for i in range(6)}
