"""What a hard budget refuses, and what it says: a call that may reach a deployment with no known price
is refused (403 model_unpriced) under a hard budget, since it could not be held to it; a call the budget
cannot fit is told what is left, what it would reserve and the largest max_tokens that fits (and that
max_tokens is admitted). In process, through pipeline.handle, on the built-in mock provider."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest
from django.test import RequestFactory

from proxy import background as tasks
from proxy import lifecycle, pipeline
from proxy.configcache import state
from tenants.config import apply_config

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: {slug}
name: {slug} Corp
providers:
  - {{name: mock, kind: mock}}
models:
  - name: local
    deployments: [{{provider: mock, model: mock-chat}}]
  - name: tuned
    deployments: [{{provider: mock, model: mock-finetune-7}}]
  - name: split
    deployments: [{{provider: mock, model: mock-chat}}]
    split: {{model: tuned, percent: 30, sticky: user}}
{budgets}
"""


@pytest.fixture
def tenants(mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    hard = "budgets:\n  - {scope: tenant, limit_usd: 0.01, period: month, mode: hard}"
    soft = "budgets:\n  - {scope: tenant, limit_usd: 0.01, period: month, mode: soft}"
    acme, _ = apply_config(YAML.format(slug="acme", budgets=hard))
    globex, _ = apply_config(YAML.format(slug="globex", budgets=soft))
    initech, _ = apply_config(YAML.format(slug="initech", budgets=""))
    state.clear()
    return {
        "alice": mint(acme, name="alice-app"),  # under a hard budget
        "bob": mint(globex, name="bob-app"),  # a soft one
        "peter": mint(initech, name="peter-app"),  # none
    }


def post(secret: str, payload: dict):
    async def go():
        request = RequestFactory().post(
            "/v1/chat/completions",
            data=orjson.dumps(payload),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        response = await pipeline.handle(request, "chat/completions")
        await tasks.drain()
        return response.status_code, orjson.loads(response.content)

    return asyncio.run(go())


def ask(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}


def test_a_hard_budget_refuses_calls_it_cannot_price(tenants):
    status, body = post(tenants["alice"], ask("tuned"))
    assert status == 403, body
    error = body["error"]
    assert error["code"] == "model_unpriced" and "'tuned' (mock/mock-finetune-7)" in error["message"]
    assert "base_model" in error["message"]
    # An A/B split to it: the calls it sends there are refused, the others served (never past the budget).
    outcomes = {post(tenants["alice"], ask("split", user=f"user-{n}"))[1].get("model", "refused") for n in range(30)}
    assert outcomes == {"mock-chat", "refused"}, outcomes
    assert post(tenants["alice"], ask("local"))[0] == 200
    # A soft budget and no budget keep working, as before.
    assert post(tenants["bob"], ask("tuned"))[0] == 200
    assert post(tenants["peter"], ask("tuned"))[0] == 200


def test_a_refused_call_is_told_the_max_tokens_that_fits_and_that_one_is_admitted(tenants):
    status, body = post(tenants["alice"], ask("local", max_tokens=100_000))
    assert status == 429 and body["error"]["code"] == "budget_exceeded", body
    message = body["error"]["message"]
    assert "0.01 USD has 0.01 USD left" in message and "would reserve up to" in message, message
    fits = int(re.search(r"max_tokens \(max_completion_tokens\) of at most (\d+) would fit", message).group(1))
    assert 1000 < fits < 100_000  # $0.01 at $0.60 per million output tokens: about 16,600
    status, body = post(tenants["alice"], ask("local", max_tokens=fits))
    assert status == 200, body
    # One more token than that would not have fitted (before this call's spend, even less).
    status, body = post(tenants["alice"], ask("local", max_tokens=fits + 1))
    assert status == 429
