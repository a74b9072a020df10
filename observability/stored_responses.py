"""Stored Responses API answers (`store`): written with the call's row, read by the proxy's
`GET /v1/responses/{id}`, `DELETE`, `input_items` and `previous_response_id` (proxy.inbound.responses).

The proxy puts `stored_response` on the call's log record; this batch hook of the call-log store
writes it in the same transaction as the call's row, so a response is kept exactly when its call is
logged (and billed), and a redelivered batch writes nothing twice.
"""

from __future__ import annotations

from typing import Any

from observability.models import StoredResponse
from observability.rollups import record_time


def write_stored(cursor: Any, records: list[dict[str, Any]]) -> None:
    rows = []
    for r in records:
        stored = r.get("stored_response")
        if not isinstance(stored, dict) or not isinstance(r.get("tenant_id"), int):
            continue
        created = record_time(r)
        if created is None:
            continue
        rows.append(
            StoredResponse(
                id=stored["id"],
                tenant_id=r["tenant_id"],
                virtual_key_id=r.get("virtual_key_id"),
                created_at=created,
                request_id=r.get("request_id") or "",
                previous_response_id=stored.get("previous_response_id") or "",
                response=stored["response"],
                input_items=stored["input_items"],
                messages=stored["messages"],
            )
        )
    if rows:
        StoredResponse.objects.bulk_create(rows, ignore_conflicts=True)


async def astored_response(tenant_id: int, response_id: str) -> dict[str, Any] | None:
    """The stored response's fields, read from the event loop (Django's async ORM)."""
    return (
        await StoredResponse.objects.filter(tenant_id=tenant_id, id=response_id)
        .values("id", "virtual_key_id", "previous_response_id", "response", "input_items", "messages")
        .afirst()
    )


async def adelete_stored_response(tenant_id: int, response_id: str) -> bool:
    deleted, _ = await StoredResponse.objects.filter(tenant_id=tenant_id, id=response_id).adelete()
    return bool(deleted)
