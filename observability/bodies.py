"""Request and response bodies of call logs, for tenants that turned body logging on.

The proxy puts the (already PII-redacted) bodies on the log record only when the tenant's
`log_bodies` is on, so other tenants pay nothing; this hook of the call-log buffer stores them per
flushed batch, capped at BODY_MAX_CHARS each.
"""

from __future__ import annotations

from typing import Any

from observability.models import BODY_MAX_CHARS, CallBody
from observability.rollups import record_time
from observability.text import storable

TRUNCATED_MARK = "\n[... truncated by the gateway]"


def cap(text: Any) -> tuple[str, bool]:
    """(storable text at most BODY_MAX_CHARS long, was it cut?)."""
    if text is None:
        return "", False
    if isinstance(text, list):  # a streamed answer, kept as its content deltas
        text = "".join(t for t in text if isinstance(t, str))
    if not isinstance(text, str):
        text = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    text = storable(text)
    if len(text) <= BODY_MAX_CHARS:
        return text, False
    return text[: BODY_MAX_CHARS - len(TRUNCATED_MARK)] + TRUNCATED_MARK, True


def write_bodies(records: list[dict[str, Any]]) -> None:
    rows = []
    for r in records:
        if "request_body" not in r and "response_body" not in r:
            continue
        if record_time(r) is None or not isinstance(r.get("tenant_id"), int):
            continue
        request, cut_request = cap(r.get("request_body"))
        response, cut_response = cap(r.get("response_body"))
        rows.append(
            CallBody(
                tenant_id=r["tenant_id"],
                created_at=record_time(r),
                request_id=r.get("request_id") or "",
                request_body=request,
                response_body=response,
                truncated=cut_request or cut_response,
            )
        )
    if rows:
        CallBody.objects.bulk_create(rows)
