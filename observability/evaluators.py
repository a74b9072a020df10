"""Automatic evaluators: scores given to calls after they are logged, off the request path.

A tenant defines them in `evaluators:` (tenant YAML, `gateway export`): a rule (`json_valid`,
`json_schema`, `regex`, `max_length`, `contains`: 1 when the answer passes, else 0) or an LLM judge
(`llm`: one of the tenant's own models, called through the gateway itself with a rubric over the call's
request and answer, its reply parsed to the score's value). Each applies to some models, variants, keys
or tags (each list empty: any) and a `sample` share of them (by the call id's hash: the same call is
always in or out).

What they read is what the call log keeps of the call: its bodies as sent upstream, after the data
policy (never raw personal data), so evaluators need body logging on (tenant settings); calls without
stored bodies are skipped. The log writer's hook (`on_calls`) picks the calls and enqueues one Celery
task per call (eager on the embedded default); judge calls are tagged `evaluator`, logged and billed
like any other, and never evaluated in turn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from observability.models import CallBody, CallLog, CallScore, Evaluator, EvaluatorKind, ScoreKind
from observability.scores import BUILT_IN, CALL_COLUMNS, MAX_NAME, definitions_of, from_call, value_problem
from tenants.audit import Actor, audit
from tenants.models import Tenant

logger = logging.getLogger(__name__)

EVALUATOR_TAG = "evaluator"
MAX_EVALUATORS = 50
MAX_PROMPT = 20_000
MAX_PATTERN = 1_000
RULE_KINDS = {k for k in EvaluatorKind.values if k != EvaluatorKind.LLM}
FIELDS = {"name", "kind", "score", "model", "prompt", "applies_to", "schema", "pattern", "max", "value"}
APPLIES_TO = {"models", "variants", "keys", "tags", "sample"}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


# --- the `evaluators:` section of the tenant YAML ---------------------------------------------------------


def _names(value: Any, path: str, c: Any) -> list[str]:
    return [c.string(v, f"{path}[{i}]") for i, v in enumerate(c.sequence(value, path))]


def parse_evaluators(value: Any, path: str, c: Any) -> list[dict[str, Any]]:  # noqa: C901
    items = c.sequence(value, path)
    if len(items) > MAX_EVALUATORS:
        raise c.fail(f"at most {MAX_EVALUATORS} evaluators (this lists {len(items)})", path)
    out, seen = [], set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        c.mapping(item, p, FIELDS, {"name", "kind", "score"})
        name = c.string(item["name"], f"{p}.name")
        if len(name) > MAX_NAME or not name.replace("_", "").replace("-", "").isalnum():
            raise c.fail(
                f"an evaluator name is letters, digits, '-' and '_', at most {MAX_NAME} characters", f"{p}.name"
            )
        if name in seen:
            raise c.fail(f"the evaluator {name!r} is defined twice", f"{p}.name")
        seen.add(name)
        kind = c.string(item["kind"], f"{p}.kind")
        if kind not in EvaluatorKind.values:
            raise c.fail(f"kind must be one of {', '.join(EvaluatorKind.values)}", f"{p}.kind")
        score = c.string(item["score"], f"{p}.score")
        if len(score) > MAX_NAME:
            raise c.fail(f"a score name has at most {MAX_NAME} characters", f"{p}.score")
        row: dict[str, Any] = {"name": name, "kind": kind, "score": score, "model": "", "prompt": "", "params": {}}
        allowed = {
            EvaluatorKind.LLM: {"model", "prompt"},
            EvaluatorKind.JSON_VALID: set(),
            EvaluatorKind.JSON_SCHEMA: {"schema"},
            EvaluatorKind.REGEX: {"pattern"},
            EvaluatorKind.MAX_LENGTH: {"max"},
            EvaluatorKind.CONTAINS: {"value"},
        }[kind]
        for field in ("model", "prompt", "schema", "pattern", "max", "value"):
            if item.get(field) is not None and field not in allowed:
                raise c.fail(f"{field!r} is not a field of a {kind} evaluator", f"{p}.{field}")
            if field in allowed and item.get(field) is None:
                raise c.fail(f"a {kind} evaluator needs {field!r}", f"{p}.{field}")
        if kind == EvaluatorKind.LLM:
            row["model"] = c.string(item["model"], f"{p}.model")
            row["prompt"] = c.string(item["prompt"], f"{p}.prompt")
            if len(row["prompt"]) > MAX_PROMPT or "{answer}" not in row["prompt"]:
                raise c.fail(
                    f"the prompt names {{answer}} (and may name {{request}}), at most {MAX_PROMPT} characters",
                    f"{p}.prompt",
                )
        elif kind == EvaluatorKind.JSON_SCHEMA:
            schema = item["schema"]
            if not isinstance(schema, dict):
                raise c.fail("schema is a JSON schema (a mapping)", f"{p}.schema")
            try:
                import jsonschema

                jsonschema.validators.validator_for(schema).check_schema(schema)
            except Exception as exc:
                raise c.fail(f"not a valid JSON schema: {str(exc).splitlines()[0][:200]}", f"{p}.schema") from None
            row["params"] = {"schema": schema}
        elif kind == EvaluatorKind.REGEX:
            pattern = c.string(item["pattern"], f"{p}.pattern")
            if len(pattern) > MAX_PATTERN:
                raise c.fail(f"a pattern has at most {MAX_PATTERN} characters", f"{p}.pattern")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise c.fail(f"not a valid regular expression: {exc}", f"{p}.pattern") from None
            row["params"] = {"pattern": pattern}
        elif kind == EvaluatorKind.MAX_LENGTH:
            limit = item["max"]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise c.fail("max is a whole number of characters, at least 1", f"{p}.max")
            row["params"] = {"max": limit}
        elif kind == EvaluatorKind.CONTAINS:
            row["params"] = {"value": c.string(item["value"], f"{p}.value")}
        applies = item.get("applies_to") or {}
        c.mapping(applies, f"{p}.applies_to", APPLIES_TO, set())
        for field in ("models", "variants", "keys", "tags"):
            row[field] = _names(applies[field], f"{p}.applies_to.{field}", c) if applies.get(field) is not None else []
        sample = applies.get("sample", 1.0)
        if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0 < sample <= 1:
            raise c.fail("sample is a share of the calls, more than 0 and at most 1", f"{p}.applies_to.sample")
        row["sample"] = float(sample)
        out.append(row)
    return out


def _check_references(tenant: Tenant, wanted: list[dict[str, Any]]) -> None:
    from routing.selectors import model_names_for
    from tenants.config import ConfigError

    definitions = definitions_of(tenant.id)
    models = set(model_names_for(tenant))
    for i, e in enumerate(wanted):
        definition = definitions.get(e["score"])
        if e["kind"] == EvaluatorKind.LLM:
            if e["model"] not in models:
                raise ConfigError(f"evaluators[{i}].model: {e['model']!r} is not a model of this tenant")
            if definition is None:
                raise ConfigError(f"evaluators[{i}].score: define the score {e['score']!r} under scores: (its range)")
        elif definition is not None and definition["kind"] != ScoreKind.BOOLEAN:
            raise ConfigError(f"evaluators[{i}].score: a rule gives 0 or 1; {e['score']!r} is not a boolean score")


def evaluators_set(tenant: Tenant, wanted: list[dict[str, Any]], *, actor: Actor) -> bool:
    """Replace the tenant's evaluators; False when nothing changed."""
    _check_references(tenant, wanted)
    fields = ("name", "kind", "score", "model", "prompt", "params", "sample")
    current = [
        {
            **{f: getattr(e, f) for f in fields},
            "models": e.models_filter,
            "variants": e.variants_filter,
            "keys": e.keys_filter,
            "tags": e.tags_filter,
        }
        for e in Evaluator.objects.filter(tenant=tenant).order_by("name")
    ]
    ordered = sorted(wanted, key=lambda e: e["name"])
    if current == ordered:
        return False
    with transaction.atomic():
        # Rows are kept by name and changed in place: a back-fill or a queued evaluation of an evaluator
        # that was only edited still finds it (its id stays).
        existing = {e.name: e for e in Evaluator.objects.filter(tenant=tenant)}
        Evaluator.objects.filter(tenant=tenant).exclude(name__in=[e["name"] for e in ordered]).delete()
        for e in ordered:
            row = existing.get(e["name"]) or Evaluator(tenant=tenant)
            for f in fields:
                setattr(row, f, e[f])
            row.models_filter, row.variants_filter = e["models"], e["variants"]
            row.keys_filter, row.tags_filter = e["keys"], e["tags"]
            row.save()
        audit(
            tenant,
            actor=actor,
            action="evaluators.set",
            target_type="tenant",
            target_label=tenant.slug,
            changes={"names": [e["name"] for e in ordered]},
        )
    return True


def apply_evaluators(tenant: Tenant, wanted: list[dict[str, Any]] | None, *, actor: Actor) -> list[str]:
    if wanted is None:
        return []
    return ["~ evaluators"] if evaluators_set(tenant, wanted, actor=actor) else []


def export_evaluators(tenant: Tenant) -> list[dict[str, Any]] | None:
    out = []
    for e in Evaluator.objects.filter(tenant=tenant).order_by("name"):
        row: dict[str, Any] = {"name": e.name, "kind": e.kind, "score": e.score}
        if e.kind == EvaluatorKind.LLM:
            row.update(model=e.model, prompt=e.prompt)
        row.update(e.params)
        applies: dict[str, Any] = {}
        for field, value in (
            ("models", e.models_filter),
            ("variants", e.variants_filter),
            ("keys", e.keys_filter),
            ("tags", e.tags_filter),
        ):
            if value:
                applies[field] = list(value)
        if e.sample != 1.0:
            applies["sample"] = e.sample
        if applies:
            row["applies_to"] = applies
        out.append(row)
    return out or None


apply_evaluators.export = export_evaluators  # type: ignore[attr-defined]


# --- which calls --------------------------------------------------------------------------------------


def sampled(call_id: str, evaluator: str, share: float) -> bool:
    """The same call is always in or out of one evaluator's sample (a hash, not a coin)."""
    if share >= 1.0:
        return True
    digest = hashlib.blake2b(f"{evaluator}:{call_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def applies(e: Evaluator, record: dict[str, Any], key_name: str) -> bool:
    tags = record.get("tags") or []
    return (
        (not e.models_filter or record.get("requested_model") in e.models_filter)
        and (not e.variants_filter or (record.get("variant") or "control") in e.variants_filter)
        and (not e.keys_filter or key_name in e.keys_filter)
        and (not e.tags_filter or any(t in e.tags_filter for t in tags))
    )


def on_calls(records: list[dict[str, Any]]) -> None:
    """Log writer hook: enqueue the evaluation of each call an evaluator applies to (calls with stored
    bodies, answered, not a judge's own)."""
    wanted = [
        r
        for r in records
        if isinstance(r.get("tenant_id"), int)
        and r.get("call_id")
        and "response_body" in r
        and (r.get("status_code") or 0) < 400
        and EVALUATOR_TAG not in (r.get("tags") or ())
    ]
    if not wanted:
        return
    by_tenant: dict[int, list[Evaluator]] = {}
    for e in Evaluator.objects.filter(tenant_id__in={r["tenant_id"] for r in wanted}):
        by_tenant.setdefault(e.tenant_id, []).append(e)
    if not by_tenant:
        return
    from observability.tasks import evaluate_call
    from tenants.models import VirtualKey

    key_names = dict(
        VirtualKey.objects.filter(
            id__in={r.get("virtual_key_id") for r in wanted if r.get("virtual_key_id")}
        ).values_list("id", "name")
    )
    for r in wanted:
        for e in by_tenant.get(r["tenant_id"], ()):
            if applies(e, r, key_names.get(r.get("virtual_key_id"), "")) and sampled(r["call_id"], e.name, e.sample):
                try:
                    evaluate_call.delay(r["tenant_id"], r["call_id"], e.id)
                except Exception:
                    logger.exception("could not enqueue evaluator %s", e.name)


# --- evaluating one call ------------------------------------------------------------------------------


def answer_text(response_body: str) -> str:
    """The answer's text from a stored response body: a chat completion's message content (or a
    streamed answer's deltas, stored as text), a Responses API output_text; else the body itself."""
    try:
        data = orjson.loads(response_body)
    except orjson.JSONDecodeError:
        return response_body
    if isinstance(data, dict):
        choices = data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                return content
            text = choices[0].get("text")
            if isinstance(text, str):
                return text
        if isinstance(data.get("output"), list):
            parts = [
                p.get("text", "")
                for item in data["output"]
                if isinstance(item, dict)
                for p in item.get("content") or ()
                if isinstance(p, dict) and p.get("type") == "output_text"
            ]
            return "".join(parts)
    return response_body


def rule_score(e: Evaluator, answer: str) -> float:
    kind, params = e.kind, e.params
    if kind == EvaluatorKind.MAX_LENGTH:
        return float(len(answer) <= int(params["max"]))
    if kind == EvaluatorKind.CONTAINS:
        return float(params["value"] in answer)
    if kind == EvaluatorKind.REGEX:
        return float(re.search(params["pattern"], answer) is not None)
    try:
        value = json.loads(answer)
    except ValueError:
        return 0.0
    if kind == EvaluatorKind.JSON_VALID:
        return 1.0
    import jsonschema

    return float(jsonschema.validators.validator_for(params["schema"])(params["schema"]).is_valid(value))


def judge_score(e: Evaluator, request_body: str, answer: str, definition: dict[str, Any]) -> float | None:
    """Ask the tenant's own model, through this gateway, with the evaluator's key; the first number in the
    reply, if it is a valid value of the score."""
    from observability.judge import judge_key

    secret = judge_key(e.tenant)
    prompt = e.prompt.replace("{request}", request_body).replace("{answer}", answer)
    response = httpx.post(
        f"{settings.GATEWAY_SELF_URL.rstrip('/')}/v1/chat/completions",
        json={"model": e.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0},
        headers={"Authorization": f"Bearer {secret}", "x-gateway-tags": EVALUATOR_TAG},
        timeout=settings.GATEWAY_EVALUATOR_TIMEOUT,
    )
    response.raise_for_status()
    reply = answer_text(response.text)
    match = _NUMBER.search(reply)
    if match is None:
        return None
    value = float(match.group())
    return None if value_problem(definition, value) else value


def evaluate(tenant_id: int, call_id: str, evaluator_id: int) -> float | None:
    """Score one call by one evaluator and store it (source: the evaluator's name); the value, or None
    when the call, its bodies or a usable verdict is missing."""
    e = Evaluator.objects.select_related("tenant").filter(id=evaluator_id, tenant_id=tenant_id).first()
    log = (
        CallLog.objects.filter(tenant_id=tenant_id, call_id=call_id)
        .order_by("-created_at")
        .values(*CALL_COLUMNS)
        .first()
    )
    if e is None or log is None:
        return None
    body = CallBody.objects.filter(tenant_id=tenant_id, request_id=log["request_id"]).order_by("-created_at").first()
    if body is None:
        return None
    answer = answer_text(body.response_body)
    definitions = definitions_of(tenant_id)
    definition = definitions.get(e.score) or BUILT_IN.get(e.score) or {"kind": ScoreKind.BOOLEAN}
    if e.kind == EvaluatorKind.LLM:
        value = judge_score(e, body.request_body, answer, definition)
    else:
        value = rule_score(e, answer)
    if value is None:
        return None
    CallScore.objects.update_or_create(
        tenant_id=tenant_id,
        call_id=call_id,
        name=e.score,
        source=e.name,
        defaults={
            **from_call(log),
            "value": value,
            "weight": 1.0,
            "updated_at": timezone.now(),
        },
    )
    return value


@dataclass(frozen=True, slots=True)
class Backfill:
    calls: int
    scored: int


def backfill(
    tenant: Tenant,
    evaluator_name: str,
    *,
    since: Any,
    until: Any,
    progress: Callable[[Backfill, int], None] | None = None,
) -> Backfill:
    """Run one evaluator over a tenant's past calls in [since, until) that have stored bodies.
    `progress(so_far, total)` is told after each call; `total` is counted first (calls logged while it
    runs may make it go past)."""
    e = Evaluator.objects.get(tenant=tenant, name=evaluator_name)
    rows = CallLog.objects.filter(tenant=tenant, created_at__gte=since, created_at__lt=until, status_code__lt=400)
    rows = rows.exclude(call_id="")
    total = rows.count() if progress is not None else 0
    calls = scored = 0
    for call_id in rows.values_list("call_id", flat=True).iterator():
        calls += 1
        if evaluate(tenant.id, call_id, e.id) is not None:
            scored += 1
        if progress is not None:
            progress(Backfill(calls, scored), max(total, calls))
    return Backfill(calls, scored)
