"""The MCP gateway through a real gateway, with the official `mcp` SDK on both sides: a fake upstream
built with the SDK's server classes (tests.fakes.mcp_upstream), and the SDK's client connecting to
/mcp with a virtual key.

Hooli (Gavin's key) has two servers: `github` (Streamable HTTP, a bearer token) and `docs` (the same
fake over the older HTTP+SSE transport). Gavin's key may call github's search_issues and get_issue
and everything of docs; delete_repo is never relayed. Bob's globex key, on the same gateway, sees none
of hooli's servers. Hooli pseudonymizes e-mail addresses and scans answers.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from observability.models import CallBody, CallLog
from tests.fakes.mcp_upstream import FakeMcpUpstream
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BEARER = "ghp-test-token-0123456789"

YAML = """
tenant: hooli
name: Hooli
mcp_servers:
  - {{name: github, url: '{url}', bearer: env:GITHUB_MCP_TOKEN, timeout_s: 5}}
  - {{name: docs, url: '{sse_url}', transport: sse}}
pii:
  mode: enforce
  scan_responses: true
  detectors: {{email: pseudonymize}}
guardrails:
  - {{name: pi, check: prompt_injection, on: input, action: block, threshold: 0.5}}
"""

GAVIN_ACCESS = {"github": ["search_issues", "get_issue", "slow", "fail", "leak", "fetch_page"], "docs": "*"}


@pytest.fixture(scope="module")
def fake_mcp():
    server = FakeMcpUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def hooli(fake_mcp, monkeypatch):
    from tenants.audit import Actor
    from tenants.config import apply_config
    from tenants.services import tenant_log_settings_set

    monkeypatch.setenv("GITHUB_MCP_TOKEN", BEARER)
    tenant, changes = apply_config(YAML.format(url=fake_mcp.url, sse_url=fake_mcp.sse_url))
    assert "+ mcp server github" in changes and "+ mcp server docs" in changes
    tenant_log_settings_set(tenant, log_bodies=True, log_retention_days=30, actor=Actor(label="test"))
    return tenant


def connect(gateway, key: str, path: str = "/mcp") -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    return Client(streamable_http_client(f"{gateway.url}{path}", http_client=http))


def run(coro):
    return asyncio.run(coro)


def logged(**filters) -> list[CallLog]:
    return list(CallLog.objects.filter(endpoint="mcp", **filters).order_by("created_at"))


def test_a_key_lists_only_its_tools_calls_one_and_is_refused_another(gateway, hooli, mint, fake_mcp):
    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)

    async def scenario():
        async with connect(gateway, gavin) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("github__search_issues", {"query": "flaky test"})
            with pytest.raises(MCPError) as refused:
                await client.call_tool("github__delete_repo", {"repo": "hooli/core"})
            docs = await client.call_tool("docs__get_issue", {"number": 7})
            return tools, result, refused.value, docs

    before = len(fake_mcp.calls)
    tools, result, refused, docs = run(scenario())
    assert "github__search_issues" in tools and "github__get_issue" in tools
    assert "github__delete_repo" not in tools  # not in the key's list for github
    assert "docs__delete_repo" in tools  # docs: "*"
    assert result.content[0].text == "found 2 issues for flaky test"
    assert "github__delete_repo" in str(refused) and "not allowed" in str(refused)
    assert json.loads(docs.content[0].text)["number"] == 7 or docs.structured_content["number"] == 7
    made = [name for name, _args in fake_mcp.calls[before:]]
    assert made == ["search_issues", "get_issue"]  # delete_repo never reached the server
    # The bearer token went to the Streamable HTTP server, never the virtual key.
    assert any(h.get("authorization") == f"Bearer {BEARER}" for h in fake_mcp.headers_seen)
    assert not any(gavin in json.dumps(h) for h in fake_mcp.headers_seen)

    assert wait_for(lambda: len(logged()) >= 3, timeout=10)
    rows = {(r.provider, r.upstream_model): r for r in logged()}
    search = rows[("github", "search_issues")]
    assert search.status_code == 200 and search.requested_model == "github__search_issues"
    assert search.virtual_key.name == "gavin-agent" and search.cost_picodollars == 0
    assert search.attempts[0]["request_bytes"] > 0 and search.attempts[0]["response_bytes"] > 0
    assert wait_for(lambda: CallBody.objects.filter(request_id=search.request_id).exists(), timeout=10)
    body = CallBody.objects.get(request_id=search.request_id)
    assert "flaky test" in body.request_body and "found 2 issues" in body.response_body
    denied = rows[("github", "delete_repo")]
    assert denied.status_code == 403 and denied.error_type == "tool_not_allowed"
    assert rows[("docs", "get_issue")].status_code == 200  # over the SSE transport


def test_another_tenants_key_sees_none_of_them_and_a_key_without_mcp_is_refused(gateway, hooli, mint, globex):
    bob = mint(globex, name="bob-agent", mcp={"github": "*"})  # globex has no server named github
    plain = mint(hooli, name="gavin-chat")  # no mcp field: no MCP access

    async def scenario():
        async with connect(gateway, bob) as client:
            tools = (await client.list_tools()).tools
            with pytest.raises(MCPError) as refused:
                await client.call_tool("github__search_issues", {"query": "x"})
            return tools, refused.value

    tools, refused = run(scenario())
    assert tools == []
    assert "github" in str(refused)
    answer = httpx.post(
        f"{gateway.url}/mcp",
        headers={"Authorization": f"Bearer {plain}", "Accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
    )
    assert answer.status_code == 403 and "no MCP access" in answer.json()["error"]["message"]
    scoped = httpx.post(
        f"{gateway.url}/mcp/github",
        headers={"Authorization": f"Bearer {bob}"},
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
    )
    assert scoped.status_code == 404  # not hooli's github, nor its existence, for globex


def test_a_revoked_key_is_refused_within_a_second(gateway, hooli, mint):
    from tenants.audit import Actor
    from tenants.models import VirtualKey
    from tenants.services import virtual_key_revoke

    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)
    headers = {"Authorization": f"Bearer {gavin}", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    first = httpx.post(f"{gateway.url}/mcp", headers=headers, json=init)
    assert first.status_code == 200 and first.headers["mcp-session-id"]
    session = {**headers, "Mcp-Session-Id": first.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    virtual_key_revoke(hooli, key=VirtualKey.objects.get(name="gavin-agent"), actor=Actor.cli())

    def refused() -> bool:
        answer = httpx.post(f"{gateway.url}/mcp", headers=session, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        return answer.status_code == 401 and "revoked" in answer.json()["error"]["message"]

    assert wait_for(refused, timeout=1.0, interval=0.05)


def test_pii_in_a_tool_argument_never_reaches_the_server_and_answers_are_scanned(gateway, hooli, mint, fake_mcp):
    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)

    async def scenario():
        async with connect(gateway, gavin, "/mcp/github") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            echoed = await client.call_tool("leak", {"text": "mail peter@initech.example"})
            return names, echoed

    before = len(fake_mcp.calls)
    names, echoed = run(scenario())
    assert "leak" in names and "delete_repo" not in names  # /mcp/<server>: the server's own names
    sent = fake_mcp.calls[before:][-1]
    assert sent[0] == "leak" and "peter@initech.example" not in sent[1]["text"]
    assert "<EMAIL_1>" in sent[1]["text"]
    text = echoed.content[0].text
    assert "peter@initech.example" in text  # the pseudonym restored for the client
    assert "jane.roe@example.org" not in text  # a new address in the answer is removed (scan_responses)
    assert wait_for(lambda: any(r.upstream_model == "leak" for r in logged()), timeout=10)
    row = next(r for r in logged() if r.upstream_model == "leak")
    assert row.pii_actions.get("email", {}).get("pseudonymize", 0) >= 1  # the argument (and the answer scan)
    assert wait_for(lambda: CallBody.objects.filter(request_id=row.request_id).exists(), timeout=10)
    assert "peter@initech.example" not in CallBody.objects.get(request_id=row.request_id).request_body


def test_progress_is_relayed_and_a_failing_tool_and_a_slow_one_are_logged(gateway, hooli, mint, fake_mcp):
    from tenants.config import apply_config

    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def scenario():
        async with connect(gateway, gavin) as client:
            await client.call_tool("github__search_issues", {"query": "p"}, progress_callback=on_progress)
            failed = await client.call_tool("github__fail", {"reason": "disk full"})
            return failed

    failed = run(scenario())
    assert progress and progress[-1][0] == 2
    assert failed.is_error is True
    assert wait_for(lambda: any(r.upstream_model == "fail" for r in logged()), timeout=10)
    row = next(r for r in logged() if r.upstream_model == "fail")
    assert row.status_code == 200 and row.error_type == "tool_error"

    # A server slower than its timeout_s: the client gets an MCP error, the call is logged as a 504.
    apply_config(YAML.format(url=fake_mcp.url, sse_url=fake_mcp.sse_url).replace("timeout_s: 5", "timeout_s: 0.5"))

    async def slow():
        async with connect(gateway, gavin) as client:
            with pytest.raises(MCPError) as timed_out:
                await client.call_tool("github__slow", {"seconds": 2})
            return timed_out.value

    assert wait_for(lambda: True, timeout=0.6)  # the config change reaches the gateway (invalidation)
    error = run(slow())
    assert "did not answer within 0.5 s" in str(error)
    assert wait_for(lambda: any(r.upstream_model == "slow" for r in logged()), timeout=10)
    assert next(r for r in logged() if r.upstream_model == "slow").status_code == 504


def test_resources_and_prompts_are_relayed(gateway, hooli, mint):
    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)

    async def scenario():
        async with connect(gateway, gavin) as client:
            resources = await client.list_resources()
            readme = await client.read_resource("repo://readme")
            prompts = await client.list_prompts()
            prompt = await client.get_prompt("docs__summarize", {"number": "3"})
            pong = await client.send_ping()
            return resources, readme, prompts, prompt, pong

    resources, readme, prompts, prompt, _pong = run(scenario())
    assert "repo://readme" in {str(r.uri) for r in resources.resources}
    assert readme.contents[0].text.startswith("# Fake repo")
    assert {"github__summarize", "docs__summarize"} <= {p.name for p in prompts.prompts}
    assert "Summarize issue 3" in prompt.messages[0].content.text


def test_rpm_per_key_is_enforced_for_tool_calls(gateway, hooli, mint):
    from billing.models import LimitScope
    from billing.services import rate_limit_set
    from tenants.audit import Actor
    from tenants.models import VirtualKey

    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)
    key = VirtualKey.objects.get(name="gavin-agent")
    rate_limit_set(hooli, scope=LimitScope.KEY, ref=str(key.id), rpm=2, tpm=None, actor=Actor.cli())

    async def scenario():
        async with connect(gateway, gavin) as client:
            await client.call_tool("github__get_issue", {"number": 1})
            await client.call_tool("github__get_issue", {"number": 2})
            with pytest.raises(MCPError) as limited:
                await client.call_tool("github__get_issue", {"number": 3})
            return limited.value

    assert "requests per minute" in str(run(scenario()))
    assert wait_for(lambda: any(r.status_code == 429 for r in logged()), timeout=10)


def test_an_injection_in_a_tool_result_is_blocked_before_the_agent_reads_it(gateway, hooli, mint, fake_mcp):
    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)

    async def scenario():
        async with connect(gateway, gavin) as client:
            with pytest.raises(MCPError) as blocked:
                await client.call_tool("github__fetch_page", {"url": "https://docs.example/page"})
            fine = await client.call_tool("github__get_issue", {"number": 4})
            return blocked.value, fine

    blocked, fine = run(scenario())
    assert "'pi'" in str(blocked) and "attacker.example" not in str(blocked)
    assert fine.is_error is not True
    assert wait_for(lambda: any(r.upstream_model == "fetch_page" for r in logged()), timeout=10)
    row = next(r for r in logged() if r.upstream_model == "fetch_page")
    assert row.error_type == "guardrail_blocked" and row.guardrails["pi"]["outcome"] == "block"


def test_a_client_that_leaves_cancels_the_tool_upstream_and_the_call_is_logged(gateway, hooli, mint, fake_mcp):
    gavin = mint(hooli, name="gavin-agent", mcp=GAVIN_ACCESS)
    headers = {"Authorization": f"Bearer {gavin}", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    session = httpx.post(f"{gateway.url}/mcp", headers=headers, json=init).headers["mcp-session-id"]
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "github__slow", "arguments": {"seconds": 4}},
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/mcp", headers={**headers, "Mcp-Session-Id": session}, json=call, timeout=1.0)
    assert wait_for(lambda: ("slow-cancelled", {"seconds": 4}) in fake_mcp.calls, timeout=3)
    assert wait_for(lambda: any(r.upstream_model == "slow" and r.status_code == 499 for r in logged()), timeout=10)
