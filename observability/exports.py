"""Call-log exports as CSV or JSON lines, streamed chunk by chunk (the console's export and
`gateway export-logs`): an export of millions of rows never holds more than one chunk in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db.models import QuerySet

from gateway_project.common.money import format_usd, from_pico
from observability.models import CallLog
from observability.scores import FEEDBACK_SOURCE, scores_of
from observability.selectors import LogFilters, filtered_logs, iter_log_chunks
from tenants.models import VirtualKey

EXPORT_COLUMNS = (
    "id",
    "created_at",
    "request_id",
    "key",
    "endpoint",
    "model",
    "route",
    "variant",
    "provider",
    "upstream_model",
    "status_code",
    "error_type",
    "latency_ms",
    "ttfb_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_usd",
    "cost_estimated",
    "end_user",
    "tags",
    "cache_status",
    "fallback_reason",
    "stream",
    "client_disconnected",
    "call_id",
    "scores",
)


def export_record(
    row: CallLog, key_names: dict[int, str], scores: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """One call log as an export record: exact decimal cost strings, UTC ISO times, and its scores
    (`scores`: the chunk's, by call id, from _chunk_scores)."""
    return {
        "id": row.id,
        "created_at": row.created_at.astimezone(UTC).isoformat(),
        "request_id": row.request_id,
        "key": key_names.get(row.virtual_key_id, "") if row.virtual_key_id else "",
        "endpoint": row.endpoint,
        "model": row.requested_model,
        "route": row.route,
        "variant": row.variant,
        "provider": row.provider,
        "upstream_model": row.upstream_model,
        "status_code": row.status_code,
        "error_type": row.error_type,
        "latency_ms": row.latency_ms,
        "ttfb_ms": row.ttfb_ms,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
        "cached_tokens": row.cached_tokens,
        "cost_usd": format_usd(from_pico(row.cost_picodollars)) if row.cost_picodollars is not None else None,
        "cost_estimated": row.cost_estimated,
        "end_user": row.end_user,
        "tags": row.tags or [],
        "cache_status": row.cache_status,
        "fallback_reason": row.fallback_reason,
        "stream": row.stream,
        "client_disconnected": row.client_disconnected,
        "call_id": row.call_id,
        "scores": (scores or {}).get(row.call_id, []) if row.call_id else [],
    }


def _chunk_scores(chunk: list[CallLog]) -> dict[str, list[dict[str, Any]]]:
    """The scores of one chunk's calls, in one query."""
    call_ids = [row.call_id for row in chunk if row.call_id]
    return scores_of(chunk[0].tenant_id, call_ids) if call_ids else {}


def _score_cell(scores: list[dict[str, Any]]) -> str:
    """Scores in one CSV cell: `thumbs=1;helpfulness=4`, with the source after an @ unless it is feedback."""
    return ";".join(
        f"{s['name']}{'' if s['source'] == FEEDBACK_SOURCE else '@' + s['source']}={s['value']:g}" for s in scores
    )


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    # A cell a spreadsheet would run as a formula (end users and tags come from clients) is quoted.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_lines(chunks: Iterator[list[CallLog]], key_names: dict[int, str]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    yield out.getvalue()
    for chunk in chunks:
        out.seek(0)
        out.truncate()
        scores = _chunk_scores(chunk) if chunk else {}
        for row in chunk:
            record = export_record(row, key_names, scores)
            record["scores"] = _score_cell(record["scores"])
            writer.writerow([_csv_cell(record[c]) for c in EXPORT_COLUMNS])
        yield out.getvalue()


def jsonl_lines(chunks: Iterator[list[CallLog]], key_names: dict[int, str]) -> Iterator[str]:
    for chunk in chunks:
        scores = _chunk_scores(chunk) if chunk else {}
        yield "".join(
            orjson.dumps(
                {**export_record(row, key_names, scores), "attempts": row.attempts, "pii_actions": row.pii_actions}
            ).decode()
            + "\n"
            for row in chunk
        )


def export_lines(rows: QuerySet[CallLog], key_names: dict[int, str], fmt: str) -> Iterator[str]:
    chunks = iter_log_chunks(rows)
    return csv_lines(chunks, key_names) if fmt == "csv" else jsonl_lines(chunks, key_names)


def export_logs(tenant: Any, *, since: datetime | None, until: datetime | None, fmt: str) -> Iterator[str]:
    """A tenant's call logs in [since, until), newest first (`gateway export-logs`)."""
    # A time without an offset is UTC, like every time the console shows.
    since = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    until = until.replace(tzinfo=UTC) if until and until.tzinfo is None else until
    rows = filtered_logs(tenant, LogFilters(since=since, until=until))
    key_names = dict(VirtualKey.objects.filter(tenant=tenant).values_list("id", "name"))
    return export_lines(rows, key_names, fmt)
