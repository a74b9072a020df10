"""An LLM-judge evaluator end to end: a call through a real gateway is logged with its bodies, the judge
(the tenant's own `judge` model, the built-in mock, which answers with the rubric's first words) is
called through the same gateway with the tenant's evaluator key, tagged `evaluator`, logged and billed,
and its reply becomes the call's helpfulness score."""

from __future__ import annotations

import httpx
import pytest

from observability.models import CallBody, CallLog, CallScore, Evaluator
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: initech
name: Initech
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
    prompt: "4 is my rating of this answer for helpfulness, from 1 to 5. Question: {request} Answer: {answer}"
    applies_to: {models: [smart]}
"""


def test_a_judge_scores_a_call_through_the_gateway(gateway, mint, settings):
    from observability.evaluators import evaluate
    from tenants.audit import Actor
    from tenants.config import apply_config
    from tenants.services import tenant_log_settings_set

    initech, _ = apply_config(YAML)
    tenant_log_settings_set(initech, log_bodies=True, log_retention_days=30, actor=Actor(label="test"))
    secret = mint(initech, name="peter-app")
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "smart", "messages": [{"role": "user", "content": "How do I file a TPS report?"}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert answer.status_code == 200
    call_id = answer.headers["x-gateway-call-id"]
    assert wait_for(lambda: CallBody.objects.filter(tenant_id=initech.id).exists(), timeout=10)

    settings.GATEWAY_SELF_URL = gateway.url
    judge = Evaluator.objects.get(tenant=initech, name="judge-helpfulness")
    assert evaluate(initech.id, call_id, judge.id) == 4.0
    score = CallScore.objects.get(tenant_id=initech.id, call_id=call_id, source="judge-helpfulness")
    assert (score.name, score.value, score.requested_model) == ("helpfulness", 4.0, "smart")

    # The judge's own call: the tenant's evaluator key, tagged, logged (and billed like any call).
    assert wait_for(lambda: CallLog.objects.filter(tenant=initech, requested_model="judge").exists(), timeout=10)
    judged = CallLog.objects.get(tenant=initech, requested_model="judge")
    assert "evaluator" in judged.tags and judged.virtual_key.name == "evaluator" and judged.status_code == 200
    bodies = CallBody.objects.filter(tenant_id=initech.id, request_id=judged.request_id)
    assert wait_for(bodies.exists, timeout=10)
    sent = bodies.get().request_body
    assert "How do I file a TPS report?" in sent and "mock model answering" in sent  # request and answer
    # A second evaluation reuses the key and replaces the score.
    assert evaluate(initech.id, call_id, judge.id) == 4.0
    assert CallScore.objects.filter(tenant_id=initech.id, call_id=call_id).count() == 1
    assert (
        CallLog.objects.filter(tenant=initech, virtual_key__name="evaluator").values("virtual_key").distinct().count()
        == 1
    )
