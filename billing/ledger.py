"""The spend ledger is written in the same transaction as the call logs it sums.

`write_ledger_batch` is a batch hook of the call-log store (observability.logbuffer.register_batch_hook,
registered by BillingConfig.ready): it runs with the store's cursor, before the rows commit.

Rows are aggregated per batch in Python, then upserted (INSERT ... ON CONFLICT DO UPDATE adds to the
existing totals), so concurrent writers from many processes never lose an increment.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import connection

LEDGER_SQL = """
INSERT INTO billing_spendledger
    (tenant_id, day, virtual_key_id, end_user, model, cost_picodollars, requests, prompt_tokens, completion_tokens)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, day, virtual_key_id, end_user, model) DO UPDATE SET
    cost_picodollars = billing_spendledger.cost_picodollars + excluded.cost_picodollars,
    requests = billing_spendledger.requests + excluded.requests,
    prompt_tokens = billing_spendledger.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = billing_spendledger.completion_tokens + excluded.completion_tokens
"""

TAG_SQL = """
INSERT INTO billing_tagspend (tenant_id, day, tag, cost_picodollars, requests)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, day, tag) DO UPDATE SET
    cost_picodollars = billing_tagspend.cost_picodollars + excluded.cost_picodollars,
    requests = billing_tagspend.requests + excluded.requests
"""


def write_ledger(cursor: Any, records: list[dict[str, Any]], adapt_date: Any) -> None:
    rows: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    tags: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        cost = r.get("cost_picodollars")
        day = r.get("day")
        if cost is None or day is None:
            continue  # unpriced calls are not money; they stay visible in the call log
        key = (r["tenant_id"], day, r.get("virtual_key_id"), r.get("end_user") or "", r.get("requested_model") or "")
        acc = rows[key]
        acc[0] += cost
        acc[1] += 1
        acc[2] += r.get("prompt_tokens") or 0
        acc[3] += r.get("completion_tokens") or 0
        for tag in r.get("tags") or ():
            t = tags[(r["tenant_id"], day, tag)]
            t[0] += cost
            t[1] += 1
    if rows:
        # Sorted so that concurrent writers take row locks in the same order (no deadlocks).
        cursor.executemany(
            LEDGER_SQL,
            [(k[0], adapt_date(k[1]), k[2], k[3], k[4], *v) for k, v in sorted(rows.items(), key=lambda i: str(i[0]))],
        )
    if tags:
        cursor.executemany(
            TAG_SQL, [(k[0], adapt_date(k[1]), k[2], *v) for k, v in sorted(tags.items(), key=lambda i: str(i[0]))]
        )


def write_ledger_batch(cursor: Any, records: list[dict[str, Any]]) -> None:
    write_ledger(cursor, records, connection.ops.adapt_datefield_value)
