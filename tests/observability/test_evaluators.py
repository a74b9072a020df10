"""Automatic evaluators (observability.evaluators): the `evaluators:` YAML section, the rules, and the
call-log writer's hook that picks calls and runs them (Celery, eager here) on the stored bodies."""

from __future__ import annotations

import re

import orjson
import pytest

from observability.evaluators import answer_text, sampled
from observability.logbuffer import DatabaseSink
from observability.models import CallScore, Evaluator
from tenants.config import ConfigError, apply_config, export_config
from tests.helpers.billing import record

pytestmark = pytest.mark.django_db

YAML = """
tenant: acme
name: Acme Corp
providers:
  - {name: mock, kind: mock}
models:
  - {name: smart, deployments: [{provider: mock, model: mock-chat}]}
  - {name: judge, deployments: [{provider: mock, model: mock-chat}]}
scores:
  - {name: helpfulness, kind: numeric, min: 1, max: 5}
evaluators:
  - name: judge-helpfulness
    kind: llm
    model: judge
    score: helpfulness
    prompt: "Rate from 1 to 5. {request} {answer}"
    applies_to: {models: [smart], sample: 0.5}
  - {name: valid-json, kind: json_valid, score: json_ok, applies_to: {tags: [extract]}}
  - {name: has-id, kind: json_schema, score: has_id, schema: {type: object, required: [id]}}
  - {name: short, kind: max_length, score: short, max: 40}
  - {name: polite, kind: regex, score: polite, pattern: "(?i)please|thank"}
  - {name: cites, kind: contains, score: cites, value: "[1]", applies_to: {keys: [acme-service]}}
"""


@pytest.fixture
def eager_celery():
    from gateway_project.celery import app

    before, app.conf.task_always_eager = app.conf.task_always_eager, True
    yield
    app.conf.task_always_eager = before


def test_the_section_round_trips_and_refuses_what_it_cannot_run(world):
    tenant, changes = apply_config(YAML)
    assert "~ evaluators" in changes
    assert sorted(Evaluator.objects.filter(tenant=tenant).values_list("name", flat=True)) == [
        "cites",
        "has-id",
        "judge-helpfulness",
        "polite",
        "short",
        "valid-json",
    ]
    exported = export_config(tenant)
    assert "judge-helpfulness" in exported and "sample: 0.5" in exported
    assert apply_config(exported)[1] == []  # the export applies back unchanged
    bad = {
        "kind: nonsense, score: x": "kind must be one of",
        "kind: regex, score: x, pattern: '('": "not a valid regular expression",
        "kind: llm, score: helpfulness, model: judge, prompt: 'no answer here'": "{answer}",
        "kind: llm, score: helpfulness, model: nobody, prompt: '{answer}'": "'nobody' is not a model of this tenant",
        "kind: llm, score: undefined, model: judge, prompt: '{answer}'": "define the score 'undefined'",
        "kind: json_valid, score: helpfulness": "is not a boolean score",
        "kind: max_length, score: x, max: 0": "max is a whole number",
        "kind: contains, score: x": "needs 'value'",
        "kind: json_valid, score: x, pattern: 'a'": "'pattern' is not a field",
        "kind: json_valid, score: x, applies_to: {sample: 0}": "sample is a share",
    }
    base = YAML.split("evaluators:")[0]
    for fields, message in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            apply_config(base + f"evaluators:\n  - {{name: e, {fields}}}\n")
    assert Evaluator.objects.filter(tenant=tenant).count() == 6  # every refusal changed nothing


def _write(tenant, key, *, call_id: str, answer: str, model: str = "smart", tags=(), bodies: bool = True):
    r = record(tenant, key, cost=1000, model=model, tags=tags)
    r.update(call_id=call_id, request_id=f"req-{call_id}")
    if bodies:
        completion = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
        r.update(request_body='{"messages": []}', response_body=orjson.dumps(completion).decode())
    DatabaseSink().write([r])


def test_rules_score_the_calls_they_apply_to_after_they_are_logged(world, eager_celery):
    tenant, _ = apply_config(YAML)
    key = world.objects["key"]  # acme-service
    _write(tenant, key, call_id="call_json", answer='{"id": 7}', tags=["extract"])
    _write(
        tenant,
        key,
        call_id="call_prose",
        answer="Please see the answer [1], it is long enough to fail.",
        tags=["extract"],
    )
    _write(tenant, key, call_id="call_nobody", answer='{"id": 1}', bodies=False)  # no stored bodies: skipped
    scores = {(s.call_id, s.source): s.value for s in CallScore.objects.filter(tenant_id=tenant.id)}
    assert scores[("call_json", "valid-json")] == 1.0 and scores[("call_prose", "valid-json")] == 0.0
    assert scores[("call_json", "has-id")] == 1.0 and scores[("call_prose", "has-id")] == 0.0
    assert scores[("call_json", "short")] == 1.0 and scores[("call_prose", "short")] == 0.0
    assert scores[("call_json", "polite")] == 0.0 and scores[("call_prose", "polite")] == 1.0
    assert scores[("call_prose", "cites")] == 1.0
    assert not any(call_id == "call_nobody" for call_id, _ in scores)
    score = CallScore.objects.get(tenant_id=tenant.id, call_id="call_json", source="valid-json")
    assert (score.name, score.requested_model, score.virtual_key_id) == ("json_ok", "smart", key.id)

    # Not tagged extract: valid-json leaves it alone; tagged evaluator (a judge's own call): nothing does.
    _write(tenant, key, call_id="call_plain", answer="{}")
    _write(tenant, key, call_id="call_judge", answer="{}", tags=["evaluator", "extract"])
    sources = set(CallScore.objects.filter(tenant_id=tenant.id, call_id="call_plain").values_list("source", flat=True))
    assert "valid-json" not in sources and "has-id" in sources
    assert not CallScore.objects.filter(tenant_id=tenant.id, call_id="call_judge").exists()
    # Bob's globex has no evaluators: its calls get no scores.
    _write(world.globex, world.objects["g_key"], call_id="call_globex", answer='{"id": 1}', tags=["extract"])
    assert not CallScore.objects.filter(tenant_id=world.globex.id).exists()


def test_sampling_is_stable_per_call_and_near_the_share():
    chosen = [sampled(f"call_{i}", "judge", 0.1) for i in range(20_000)]
    assert 0.09 < sum(chosen) / len(chosen) < 0.11
    assert chosen == [sampled(f"call_{i}", "judge", 0.1) for i in range(20_000)]
    assert all(sampled(f"call_{i}", "judge", 1.0) for i in range(100))


def test_the_answer_is_read_from_each_stored_format():
    assert answer_text('{"choices": [{"message": {"content": "hi"}}]}') == "hi"
    assert answer_text('{"choices": [{"text": "legacy"}]}') == "legacy"
    output = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "from responses"}]}]}
    assert answer_text(orjson.dumps(output).decode()) == "from responses"
    assert answer_text("streamed deltas as text") == "streamed deltas as text"


def test_the_judge_key_is_reused_and_replaced_when_revoked_or_unreadable(world):
    """Acme's judge key is made once and reused; a revoked key, or a secret encrypted under a key since
    rotated away, gets a new one. Bob's globex gets a key of its own."""
    from observability.judge import judge_key
    from observability.models import JudgeKey

    first = judge_key(world.acme)
    assert judge_key(world.acme) == first
    row = JudgeKey.objects.get(tenant=world.acme)
    row.key.revoked = True
    row.key.save(update_fields=["revoked"])
    second = judge_key(world.acme)
    assert second != first
    JudgeKey.objects.filter(tenant=world.acme).update(secret="not-a-token-of-ours")
    third = judge_key(world.acme)
    assert third not in (first, second) and judge_key(world.acme) == third
    assert judge_key(world.globex) != third


def test_an_edited_evaluator_keeps_its_row_so_a_running_back_fill_still_finds_it(world):
    tenant, _changes = apply_config(YAML)
    before = dict(Evaluator.objects.filter(tenant=tenant).values_list("name", "id"))
    _tenant, changes = apply_config(
        YAML.replace("max: 40", "max: 60").replace("  - {name: cites", "  # - {name: cites")
    )
    assert "~ evaluators" in changes
    after = dict(Evaluator.objects.filter(tenant=tenant).values_list("name", "id"))
    assert "cites" not in after
    assert {name: before[name] for name in after} == after  # the same rows, "short" changed in place
    assert Evaluator.objects.get(tenant=tenant, name="short").params["max"] == 60
