"""Guardrail verdicts counted from the call log: blocks, flags, logs and errors by check, by model and by
key, for the dashboard's Guardrails panel and `GET /api/v1/guardrails/stats/`.

Verdicts live in `CallLog.guardrails` ({check name: {"check", "side", "outcome", "score", "ms"}}), one
per check per call, so a call flagged by two checks counts once under each. Passes are not counted:
nearly every call of a tenant with guardrails passes them all, and only the rest is worth a panel.

Each breakdown is one query that unnests the JSON of the matching rows, written for both databases
(PostgreSQL's jsonb_each, SQLite's json_each). On PostgreSQL a partial index holds only the rows with a
verdict other than pass (migration 0020), so a range reads those rows and none of the passing ones;
the query repeats the index's condition word for word, which is how the planner knows it may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from observability.models import CallLog
from tenants.models import Tenant, VirtualKey

OUTCOMES = ("block", "flag", "log", "error")
TOP = 10
BREAKDOWNS = ("check", "model", "key")


@dataclass(frozen=True)
class _Dialect:
    has_verdicts: str  # a condition on the row `c`; the partial index's own condition on PostgreSQL
    each: str  # the verdicts of row `c` as rows `g`
    name: str  # the check's name, of `g`
    outcome: str
    kind: str  # the check's kind ("prompt_injection", "keywords", ...)


# Keep HAS_NON_PASS identical to the condition of the index in migration 0020.
HAS_NON_PASS = """jsonb_path_exists(c.guardrails, '$.* ? (@.outcome != "pass")')"""
DIALECTS = {
    "postgresql": _Dialect(
        has_verdicts=HAS_NON_PASS,
        each="jsonb_each(c.guardrails) AS g(name, verdict)",
        name="g.name",
        outcome="g.verdict ->> 'outcome'",
        kind="g.verdict ->> 'check'",
    ),
    # SQLite's JSON paths have no wildcard, so its index (and this condition) only skips rows without
    # any verdict.
    "sqlite": _Dialect(
        has_verdicts="c.guardrails IS NOT NULL AND c.guardrails <> '{}'",
        each="json_each(c.guardrails) AS g",
        name="g.key",
        outcome="json_extract(g.value, '$.outcome')",
        kind="json_extract(g.value, '$.check')",
    ),
}


def breakdown_sql(vendor: str, by: str, *, keys: int | None = None) -> str:
    """The query of one breakdown (`by`: check, model or key), top TOP groups by their count of verdicts.

    Parameters, in order: tenant id, start, end (as the database stores date-times), then `keys` key ids
    when not None (a member's own keys).
    """
    d = DIALECTS[vendor]
    group = {
        "check": [d.name, d.kind],
        "model": ["c.requested_model"],
        "key": ["c.virtual_key_id"],
    }[by]
    counts = ", ".join(f"SUM(CASE WHEN {d.outcome} = '{o}' THEN 1 ELSE 0 END)" for o in OUTCOMES)
    own_keys = ""
    if keys is not None:
        own_keys = f" AND c.virtual_key_id IN ({', '.join(['%s'] * keys)})"
    listed = ", ".join(f"'{o}'" for o in OUTCOMES)
    columns = ", ".join(group)
    return (
        f"SELECT {columns}, {counts} FROM {CallLog._meta.db_table} c, {d.each} "
        f"WHERE c.tenant_id = %s AND c.created_at >= %s AND c.created_at < %s AND {d.has_verdicts}{own_keys} "
        f"AND {d.outcome} IN ({listed}) "
        f"GROUP BY {columns} ORDER BY COUNT(*) DESC, {columns} LIMIT {TOP}"
    )


@dataclass(frozen=True)
class GuardrailRow:
    label: str  # the check's name, the model, or the key's name
    value: Any  # the check's name, the model, or the key id (None: calls without a key)
    kind: str  # the check's kind on a check's row, "" otherwise
    block: int
    flag: int
    log: int
    error: int

    @property
    def total(self) -> int:
        return self.block + self.flag + self.log + self.error


@dataclass(frozen=True)
class GuardrailStats:
    by_check: list[GuardrailRow]
    by_model: list[GuardrailRow]
    by_key: list[GuardrailRow]

    @property
    def empty(self) -> bool:
        # Every counted verdict has a check: no check rows, no rows anywhere.
        return not self.by_check


def guardrail_stats(
    tenant: Tenant, *, start: datetime, end: datetime, key_ids: list[int] | None = None
) -> GuardrailStats:
    """Verdicts other than pass of the tenant's calls in [start, end), top TOP by check, model and key.

    `key_ids` limits them to those keys (a member's own keys); None is the whole tenant.
    """
    if key_ids is not None and not key_ids:
        return GuardrailStats([], [], [])
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = [tenant.id, adapt(start), adapt(end), *(key_ids or [])]
    keys = None if key_ids is None else len(key_ids)
    found: dict[str, list[tuple]] = {}
    with connection.cursor() as cursor:
        for by in BREAKDOWNS:
            cursor.execute(breakdown_sql(connection.vendor, by, keys=keys), params)
            found[by] = cursor.fetchall()
    names: dict[int, str] = {}
    if found["key"]:
        ids = [row[0] for row in found["key"] if row[0] is not None]
        names = dict(VirtualKey.objects.filter(tenant=tenant, id__in=ids).values_list("id", "name"))

    def key_label(key_id: int | None) -> str:
        return "(no key)" if key_id is None else names.get(key_id, f"deleted key {key_id}")

    return GuardrailStats(
        by_check=[GuardrailRow(name, name, kind or "", *_ints(n)) for name, kind, *n in found["check"]],
        by_model=[GuardrailRow(model or "(none)", model, "", *_ints(n)) for model, *n in found["model"]],
        by_key=[GuardrailRow(key_label(key_id), key_id, "", *_ints(n)) for key_id, *n in found["key"]],
    )


def _ints(counts: list) -> list[int]:
    return [int(n) for n in counts]
