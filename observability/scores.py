"""Quality scores of calls: their definitions (`scores:` in the tenant YAML) and feedback sent with a
virtual key (`POST /v1/feedback`, proxy.views.feedback).

A score names its call by the gateway's call id (`x-gateway-call-id`) or the client's request id. The
call's log row reaches the database a flush or two after the answer, so feedback sent right away waits
for it: for a call id younger than GATEWAY_RESPONSE_STORE_WAIT (ids carry their time), or briefly for a
request id. A key scores only its own calls, in its own tenant; an admin key every call of its tenant,
whichever key made it. A later score with the same name and source replaces the earlier one.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from gateway_project.common.ids import id_age_s
from observability.models import CallLog, CallScore, ScoreDefinition, ScoreKind
from tenants.audit import Actor, audit
from tenants.changes import record_change
from tenants.models import Tenant

# Scores every tenant has without defining them.
BUILT_IN = {
    "thumbs": {
        "kind": ScoreKind.BOOLEAN,
        "min": None,
        "max": None,
        "values": [],
        "description": "Thumbs up (1) or down (0)",
    }
}
MAX_DEFINITIONS = 100
MAX_NAME = 64
MAX_COMMENT = 2000
MAX_METADATA_BYTES = 4096
# How long feedback naming a call by its request id (which carries no time) waits for the call's row.
REQUEST_ID_WAIT_S = 2.0
FEEDBACK_SOURCE = "feedback"


class ScoreError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Feedback:
    call_id: str
    request_id: str
    name: str
    value: float
    weight: float
    comment: str
    metadata: dict


def definitions_of(tenant_id: int) -> dict[str, dict[str, Any]]:
    out = dict(BUILT_IN)
    for d in ScoreDefinition.objects.filter(tenant_id=tenant_id):
        out[d.name] = {
            "kind": d.kind,
            "min": d.min_value,
            "max": d.max_value,
            "values": d.values,
            "description": d.description,
        }
    return out


def value_problem(definition: dict[str, Any], value: float) -> str:
    kind = definition["kind"]
    if kind == ScoreKind.BOOLEAN and value not in (0, 1):
        return "a boolean score is 0 or 1"
    if kind == ScoreKind.NUMERIC:
        low, high = definition["min"], definition["max"]
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be between {low:g} and {high:g}"
    if kind == ScoreKind.CATEGORICAL and value not in definition["values"]:
        return f"must be one of {', '.join(f'{v:g}' for v in definition['values'])}"
    return ""


def parse_feedback(body: dict[str, Any]) -> Feedback:
    """The feedback fields, checked (ScoreError names the field); unknown fields are refused."""
    known = {"call_id", "request_id", "name", "value", "weight", "comment", "metadata"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ScoreError(unknown[0], f"Unknown field {unknown[0]!r}: feedback takes {', '.join(sorted(known))}.")
    call_id, request_id = body.get("call_id"), body.get("request_id")
    if not call_id and not request_id:
        raise ScoreError("call_id", "Name the call: 'call_id' (x-gateway-call-id) or 'request_id' (x-request-id).")
    for field, text in (("call_id", call_id), ("request_id", request_id)):
        if text is not None and (not isinstance(text, str) or len(text) > 100):
            raise ScoreError(field, f"'{field}' must be a string of at most 100 characters.")
    name = body.get("name", "thumbs")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ScoreError("name", f"'name' must be a score name of at most {MAX_NAME} characters.")
    value = body.get("value")
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScoreError("value", "'value' must be a number.")
    weight = body.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ScoreError("weight", "'weight' must be a number from 0 to 1.")
    comment = body.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise ScoreError("comment", f"'comment' must be text of at most {MAX_COMMENT} characters.")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise ScoreError("metadata", f"'metadata' must be an object of at most {MAX_METADATA_BYTES} bytes as JSON.")
    return Feedback(call_id or "", request_id or "", name, float(value), float(weight), comment, metadata)


# What counts as a positive score (thumbs up, a rule passed) where shares of positive answers are shown.
POSITIVE = Q(value__gte=0.5)

# The columns of the scored call's log row a score copies (CallScore's dimensions: comparisons and rollups
# read the scores alone), as `values()` gives them.
CALL_COLUMNS = ("request_id", "created_at", "requested_model", "variant", "virtual_key_id", "end_user", "tags")


def from_call(call: dict[str, Any]) -> dict[str, Any]:
    """A score's fields taken from its call's CALL_COLUMNS."""
    return {
        "request_id": call["request_id"],
        "call_created_at": call["created_at"],
        "requested_model": call["requested_model"],
        "variant": call["variant"],
        "virtual_key_id": call["virtual_key_id"],
        "end_user": call["end_user"],
        "tags": [t for t in call.get("tags") or () if isinstance(t, str)],
    }


# One statement scores a call: the score's fields are read from the call's own row (this key's, or any
# key's for an admin key; always in this tenant), and a later score with the same name and source
# replaces the earlier one. No row back: no such call (yet). {table}s are filled in once, below.
_UPSERT = """
INSERT INTO {score} (tenant_id, call_id, request_id, call_created_at, requested_model, variant, virtual_key_id,
                     end_user, tags, name, source, value, weight, comment, metadata, scored_by_key_id,
                     created_at, updated_at)
SELECT c.tenant_id, CASE WHEN c.call_id <> '' THEN c.call_id ELSE c.request_id END, c.request_id, c.created_at,
       c.requested_model, c.variant, c.virtual_key_id, c.end_user, c.tags,
       %s, %s, %s, %s, %s, {json}, %s, %s, %s
FROM {log} c
WHERE c.tenant_id = %s AND {match}
ORDER BY c.created_at DESC
LIMIT 1
ON CONFLICT (tenant_id, call_id, name, source) DO UPDATE SET
    value = excluded.value, weight = excluded.weight, comment = excluded.comment, metadata = excluded.metadata,
    scored_by_key_id = excluded.scored_by_key_id, updated_at = excluded.updated_at
RETURNING id, call_id, request_id
"""
_statements: dict[tuple[str, bool], str] = {}


def _statement(by: str, any_key: bool) -> str:
    # PostgreSQL types a bare parameter in a SELECT list as text; the metadata column is jsonb there.
    json = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    match = f"c.{by} = %s" if any_key else f"c.virtual_key_id = %s AND c.{by} = %s"
    return _UPSERT.format(score=CallScore._meta.db_table, log=CallLog._meta.db_table, match=match, json=json)


def _upsert(by: str, any_key: bool, params: list[Any]) -> tuple[int, str, str] | None:
    sql = _statements.get((by, any_key))
    if sql is None:
        sql = _statements[by, any_key] = _statement(by, any_key)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1], row[2])


async def record_feedback(
    tenant_id: int,
    key_id: int,
    body: dict[str, Any],
    definitions: dict[str, dict[str, Any]] | None = None,
    *,
    admin: bool = False,
) -> dict[str, Any] | None:
    """Store one feedback score of one of this key's calls (of any call of the tenant for an admin key);
    None when there is no such call.

    `definitions`: the tenant's score definitions as the proxy's snapshot holds them (definitions_of), so
    that a score costs one statement, in one thread hop, and no lock of the request path."""
    feedback = parse_feedback(body)
    if definitions is None:
        definitions = await sync_to_async(definitions_of)(tenant_id)
    definition = definitions.get(feedback.name)
    if definition is None:
        raise ScoreError("name", f"No score named {feedback.name!r} is defined for this tenant (see `scores:`).")
    problem = value_problem(definition, feedback.value)
    if problem:
        raise ScoreError("value", f"'value' {problem} for the score {feedback.name!r}.")
    now = timezone.now()
    by = "call_id" if feedback.call_id else "request_id"
    params = [
        feedback.name,
        FEEDBACK_SOURCE,
        feedback.value,
        feedback.weight,
        feedback.comment,
        orjson.dumps(feedback.metadata).decode(),
        key_id,
        now,
        now,
        tenant_id,
        *(() if admin else (key_id,)),
        feedback.call_id or feedback.request_id,
    ]
    started = time.monotonic()
    while True:
        found = await sync_to_async(_upsert)(by, admin, params)
        if found is not None:
            break
        # The call's row is not written yet (it reaches the database a flush or two after the answer):
        # wait for a young call id, briefly for a request id, else there is no such call of this key.
        if feedback.call_id:
            age = id_age_s(feedback.call_id, "call")
            if age is None or not -1.0 <= age <= settings.GATEWAY_RESPONSE_STORE_WAIT:
                return None
        elif time.monotonic() - started > REQUEST_ID_WAIT_S:
            return None
        await asyncio.sleep(0.1)
    score_id, call_id, request_id = found
    return {
        "object": "feedback",
        "id": score_id,
        "call_id": call_id,
        "request_id": request_id,
        "name": feedback.name,
        "value": feedback.value,
        "weight": feedback.weight,
    }


def scores_of(tenant_id: int, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The scores of these calls, by call id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in CallScore.objects.filter(tenant_id=tenant_id, call_id__in=call_ids).order_by("name", "source"):
        out.setdefault(s.call_id, []).append(
            {"name": s.name, "value": s.value, "weight": s.weight, "source": s.source, "comment": s.comment}
        )
    return out


# --- the `scores:` section of the tenant YAML ------------------------------------------------------------


def parse_scores(value: Any, path: str, c: Any) -> list[dict[str, Any]]:
    items = c.sequence(value, path)
    if len(items) > MAX_DEFINITIONS:
        raise c.fail(f"at most {MAX_DEFINITIONS} scores (this lists {len(items)})", path)
    out, seen = [], set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        c.mapping(item, p, {"name", "kind", "min", "max", "values", "description"}, {"name", "kind"})
        name = c.string(item["name"], f"{p}.name")
        if len(name) > MAX_NAME or not name.replace("_", "").replace("-", "").isalnum():
            raise c.fail(f"a score name is letters, digits, '-' and '_', at most {MAX_NAME} characters", f"{p}.name")
        if name in seen:
            raise c.fail(f"the score {name!r} is defined twice", f"{p}.name")
        seen.add(name)
        kind = c.string(item["kind"], f"{p}.kind")
        if kind not in ScoreKind.values:
            raise c.fail(f"kind must be one of {', '.join(ScoreKind.values)}", f"{p}.kind")
        row: dict[str, Any] = {"name": name, "kind": kind, "min": None, "max": None, "values": [], "description": ""}
        for bound in ("min", "max"):
            if item.get(bound) is not None:
                if (
                    kind != ScoreKind.NUMERIC
                    or isinstance(item[bound], bool)
                    or not isinstance(item[bound], (int, float))
                ):
                    raise c.fail(f"{bound} is a number, for a numeric score only", f"{p}.{bound}")
                row[bound] = float(item[bound])
        if kind == ScoreKind.NUMERIC and (row["min"] is None or row["max"] is None or row["min"] >= row["max"]):
            raise c.fail("a numeric score needs min below max", p)
        if kind == ScoreKind.CATEGORICAL:
            values = c.sequence(item.get("values"), f"{p}.values")
            if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                raise c.fail("a categorical score lists its values, as numbers", f"{p}.values")
            row["values"] = [float(v) for v in values]
        elif item.get("values") is not None:
            raise c.fail("values are for a categorical score only", f"{p}.values")
        description = item.get("description") or ""
        if not isinstance(description, str) or len(description) > 500:
            raise c.fail("description is text of at most 500 characters", f"{p}.description")
        row["description"] = description
        out.append(row)
    return out


def score_definitions_set(tenant: Tenant, definitions: list[dict[str, Any]], *, actor: Actor) -> bool:
    """Replace the tenant's score definitions (scores already given keep their values)."""
    current = sorted(
        ScoreDefinition.objects.filter(tenant=tenant).values(
            "name", "kind", "min_value", "max_value", "values", "description"
        ),
        key=lambda d: d["name"],
    )
    wanted = sorted(
        (
            {
                "name": d["name"],
                "kind": d["kind"],
                "min_value": d["min"],
                "max_value": d["max"],
                "values": d["values"],
                "description": d["description"],
            }
            for d in definitions
        ),
        key=lambda d: d["name"],
    )
    if current == wanted:
        return False
    with transaction.atomic():
        ScoreDefinition.objects.filter(tenant=tenant).delete()
        ScoreDefinition.objects.bulk_create([ScoreDefinition(tenant=tenant, **d) for d in wanted])
        audit(
            tenant,
            actor=actor,
            action="scores.set",
            target_type="tenant",
            target_label=tenant.slug,
            changes={"names": [d["name"] for d in wanted]},
        )
        record_change("tenant", tenant.id)  # gateway processes hold the definitions (POST /v1/feedback)
    return True


def apply_scores(tenant: Tenant, definitions: list[dict[str, Any]] | None, *, actor: Actor) -> list[str]:
    if definitions is None:
        return []
    return ["~ scores"] if score_definitions_set(tenant, definitions, actor=actor) else []


def export_scores(tenant: Tenant) -> list[dict[str, Any]] | None:
    out = []
    for d in ScoreDefinition.objects.filter(tenant=tenant).order_by("name"):
        row: dict[str, Any] = {"name": d.name, "kind": d.kind}
        if d.kind == ScoreKind.NUMERIC:
            row.update(min=d.min_value, max=d.max_value)
        if d.kind == ScoreKind.CATEGORICAL:
            row["values"] = d.values
        if d.description:
            row["description"] = d.description
        out.append(row)
    return out or None


apply_scores.export = export_scores  # type: ignore[attr-defined]
