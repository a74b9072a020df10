"""A key's own guardrails, in process: acme's checks refuse the word "falcon". Alice's inherit key runs
them (400 guardrail_blocked), her quiet key has [] and runs none, and her eagle key has its own check,
which refuses "eagle" and lets "falcon" through: a key's checks replace the tenant's, never add to them,
on its chat calls and on the results of its MCP tool calls."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from observability.logbuffer import buffer
from proxy import background as tasks
from proxy import lifecycle, pipeline
from proxy.configcache import state
from proxy.loader import load_key, load_tenant
from proxy.mcp.endpoint import Ctx, McpError, ToolCall
from routing.policies.services import virtual_key_guardrails_set
from tenants.audit import Actor
from tenants.config import apply_config
from tenants.models import VirtualKey, hash_secret

pytestmark = pytest.mark.django_db(transaction=True)

YAML = """
tenant: acme
name: Acme Corp
providers:
  - {name: mock, kind: mock}
models:
  - name: local
    deployments: [{provider: mock, model: mock-chat}]
guardrails:
  - {name: no-falcon, check: keywords, on: input, words: [falcon]}
"""


@pytest.fixture
def keys(mint, monkeypatch):
    monkeypatch.setattr(lifecycle, "_started", True)
    acme, _ = apply_config(YAML)
    secrets = {name: mint(acme, name=name) for name in ("inherit", "quiet", "eagle")}
    actor = Actor.cli()
    virtual_key_guardrails_set(acme, key=VirtualKey.objects.get(name="quiet"), guardrails=[], actor=actor)
    own = [{"name": "no-eagle", "check": "keywords", "on": "input", "words": ["eagle"]}]
    virtual_key_guardrails_set(acme, key=VirtualKey.objects.get(name="eagle"), guardrails=own, actor=actor)
    state.clear()
    return secrets


def _chat(secret: str, text: str) -> tuple[int, dict]:
    async def go():
        request = RequestFactory().post(
            "/v1/chat/completions",
            data=orjson.dumps({"model": "local", "messages": [{"role": "user", "content": text}]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        response = await pipeline.handle(request, "chat/completions")
        await tasks.drain()
        return response.status_code, orjson.loads(response.content)

    result = asyncio.run(go())
    buffer.flush_sync()  # the call's log row, written while this test's database is there
    return result


def test_a_key_that_inherits_runs_the_tenants_checks(keys):
    status, body = _chat(keys["inherit"], "Tell me about the falcon")
    assert status == 400 and body["error"]["code"] == "guardrail_blocked", body
    assert "no-falcon" in body["error"]["message"] and "Tell me" not in body["error"]["message"]
    assert _chat(keys["inherit"], "Tell me about the eagle")[0] == 200


def test_a_key_with_no_checks_runs_none(keys):
    status, body = _chat(keys["quiet"], "Tell me about the falcon")
    assert status == 200, body


def test_a_key_with_its_own_checks_runs_them_instead_of_the_tenants(keys):
    status, body = _chat(keys["eagle"], "Tell me about the eagle")
    assert status == 400 and body["error"]["code"] == "guardrail_blocked", body
    assert "no-eagle" in body["error"]["message"]
    status, body = _chat(keys["eagle"], "Tell me about the falcon")
    assert status == 200, body


def test_an_mcp_tool_result_is_checked_with_the_keys_own_checks(keys):
    """/mcp reads a tool's result with the same checks as the key's chat calls (proxy.mcp.endpoint)."""
    tenant = load_tenant(VirtualKey.objects.get(name="inherit").tenant_id)
    request = RequestFactory().post("/mcp")

    def guard(name: str, text: str) -> None:
        key = load_key(hash_secret(keys[name]))
        ToolCall(Ctx(request, key, tenant, None), 1, {"name": "docs__search"})._guard(
            {"content": [{"type": "text", "text": text}]}
        )

    with pytest.raises(McpError, match="no-falcon"):
        guard("inherit", "the falcon flies")
    guard("quiet", "the falcon flies")
    guard("eagle", "the falcon flies")
    with pytest.raises(McpError, match="no-eagle"):
        guard("eagle", "the eagle flies")
