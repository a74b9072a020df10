"""The PII policy through the proxy, in process (pipeline.handle on one event loop): what the upstream
receives in every message position, restored JSON and streamed answers (an echoing loopback upstream
splits placeholders across events), blocks, key overrides, log-only mode, tenant isolation, and the
stored call log. The fake OpenAI upstream records every body it gets."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from django.test import RequestFactory

from observability.logbuffer import buffer
from observability.models import CallBody, CallLog
from proxy import background as tasks
from proxy import lifecycle, pipeline
from proxy.configcache import state
from proxy.inbound import anthropic
from proxy.inbound import responses as responses_api
from proxy.relay import GatewayStreamResponse
from tenants.config import apply_config
from tenants.models import Tenant, VirtualKey, hash_secret
from tests.fakes.loopback import LoopbackServer
from tests.helpers import UPSTREAM_KEY
from tests.helpers.pii_corpus import TRUE_VALUES

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = {
    "mode": "enforce",
    "detectors": {
        "email": "pseudonymize",
        "phone": "pseudonymize",
        "card": "redact",
        "iban": "redact",
        "us_ssn": "mask",
        "ip": "redact",
        "secret": "pseudonymize",
    },
    "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
    "terms": {"words": ["Project Falcon"], "action": "pseudonymize"},
    "scan_responses": False,
}
BLOCK_CARDS = {"detectors": {"email": "pseudonymize", "card": "block"}}
# Every corpus value but the private-key block (multi-line; covered by the engine's tests).
VALUES = [v for values in TRUE_VALUES.values() for v in values if "\n" not in v] + ["ORD-123456", "Project Falcon"]


@dataclass
class EchoUpstream(LoopbackServer):
    """An OpenAI-compatible upstream that answers with the last message's text: in one JSON answer,
    or streamed N characters per event for model "echo-N" (1 = every placeholder split at every offset)."""

    host: str = "127.0.0.1"
    port: int = 0
    bodies: list = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        if "colleague" in text:
            text += " Ask bob@leak.example too."  # an address the client never sent
        usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
        base = {"id": "chatcmpl-echo", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        size = int(body["model"].rpartition("-")[2])
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list, **extra) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(0, len(text), size):
            await send([{"index": 0, "delta": {"content": text[i : i + size]}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        return response

    def stop(self) -> None:
        # The gateway's pooled keep-alive connections would hold the server's clean-up for seconds: the
        # thread is a daemon, so it is left to finish on its own.
        self.loop.call_soon_threadsafe(self.loop.stop)

    def start(self) -> EchoUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.serve(app, "echo-upstream")
        return self


@pytest.fixture(scope="module")
def echo():
    server = EchoUpstream().start()
    yield server
    server.stop()


def tenant_yaml(slug: str, fake_url: str, echo_url: str) -> str:
    models = {"gpt-4o-mini": "main", "embed": "main", "echo-1": "echo", "echo-2": "echo", "echo-7": "echo"}
    upstream_ids = {"embed": "text-embedding-3-small"}
    lines = [f"tenant: {slug}", f"name: {slug.title()} Corp", "providers:"]
    for name, url in (("main", fake_url), ("echo", echo_url)):
        lines += [f"  - name: {name}", "    kind: openai-compatible", f"    base_url: {url}"]
        lines.append("    api_key: env:FAKE_UPSTREAM_KEY")
    lines.append("models:")
    for public, provider in models.items():
        lines += [f"  - name: {public}", "    deployments:"]
        lines.append(f"      - {{provider: {provider}, model: {upstream_ids.get(public, public)}}}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def world(upstream, echo, mint, monkeypatch):
    """Alice's acme with the full policy and Bob's globex without one, a key each."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    echo.bodies.clear()
    echo_url = f"http://{echo.host}:{echo.port}/v1"
    acme, _ = apply_config(tenant_yaml("acme", upstream.base_url, echo_url))
    globex, _ = apply_config(tenant_yaml("globex", upstream.base_url, echo_url))
    Tenant.objects.filter(id=acme.id).update(pii_policy=POLICY)
    state.clear()
    yield {"acme": acme, "alice": mint(acme, name="alice-app"), "bob": mint(globex, name="bob-app")}
    buffer.flush_sync()
    state.clear()


async def post(secret: str, payload: dict, endpoint: str = "chat/completions"):
    request = RequestFactory().post(
        f"/v1/{endpoint}",
        data=orjson.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    if endpoint == "messages":
        response = await pipeline.handle(request, "chat/completions", front=anthropic.ANTHROPIC, label="messages")
    elif endpoint == "responses":
        response = await pipeline.handle(request, "chat/completions", front=responses_api.RESPONSES, label="responses")
    else:
        response = await pipeline.handle(request, endpoint)
    stream = response.events if isinstance(response, GatewayStreamResponse) else None
    content = b"".join([chunk async for chunk in stream]) if stream is not None else response.content
    return response, content


def send(secret: str, payload: dict, endpoint: str = "chat/completions"):
    async def go():
        result = await post(secret, payload, endpoint)
        await tasks.drain()
        return result

    return asyncio.run(go())


def streamed(raw: bytes) -> str:
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def logged(response) -> CallLog:
    buffer.flush_sync()
    return CallLog.objects.get(request_id=response["x-request-id"])


def row_text(row: CallLog) -> str:
    return json.dumps({f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields}, default=str)


def test_no_corpus_value_reaches_the_upstream_in_any_message_position(world, upstream):
    text = " | ".join(VALUES)
    conversation = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": f"Known facts: {text}"},
            {"role": "user", "content": [{"type": "text", "text": f"Mine: {text}"}]},
            {
                "role": "assistant",
                "content": f"Noted {text}",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": json.dumps({"query": text})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"Result: {text}"},
            {"role": "user", "content": f"And again {text}"},
        ],
    }
    response, body = send(world["alice"], conversation)
    assert response.status_code == 200, body
    embed, _ = send(world["alice"], {"model": "embed", "input": [text, "plain"]}, "embeddings")
    assert embed.status_code == 200
    received = json.dumps([r.body for r in upstream.requests])
    leaked = [v for v in VALUES if v in received or json.dumps(v)[1:-1] in received]
    assert leaked == []
    assert "<EMAIL_1>" in received and "[CARD]" in received and "[ORDER_ID]" in received
    # The same value is the same pseudonym in every position of one request.
    assert received.count("<EMAIL_1>") >= 5
    row = logged(response)
    assert row.pii_actions["email"]["pseudonymize"] == 6 * len(TRUE_VALUES["email"])  # six positions
    assert row.pii_actions["order_id"] == {"redact": 6}
    assert not [v for v in VALUES if v in row_text(row)]
    # Bob's tenant has no policy: Alice's does not touch his calls.
    content = "I am jo@x.example, card 4111 1111 1111 1111"
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    response, _ = send(world["bob"], payload)
    assert response.status_code == 200
    assert upstream.requests[-1].body["messages"][0]["content"] == content
    assert logged(response).pii_actions == {}


def test_pseudonyms_are_restored_in_json_and_streamed_answers(world, echo):
    text = "Write to jane.doe@example.com or +44 20 7946 0958 about Project Falcon, key AKIAIOSFODNN7EXAMPLE."
    response, body = send(world["alice"], {"model": "echo-1", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200
    assert orjson.loads(body)["choices"][0]["message"]["content"] == text
    sent = echo.bodies[-1]["messages"][-1]["content"]
    assert sent == "Write to <EMAIL_1> or <PHONE_1> about <TERM_1>, key <SECRET_1>."
    for model in ("echo-1", "echo-2", "echo-7"):
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response, raw = send(world["alice"], payload)
        assert response.status_code == 200
        assert streamed(raw) == text, model
        assert b"<EMAIL_1>" not in raw and b"EMAIL" not in raw
    assert echo.bodies[-1]["messages"][-1]["content"] == sent
    # With the prompt cache on, the cache keys on and stores the redacted exchange; a hit is restored.
    Tenant.objects.filter(id=world["acme"].id).update(cache_policy={"enabled": True, "ttl_s": 600})
    state.clear()
    calls = len(echo.bodies)
    payload = {"model": "echo-7", "messages": [{"role": "user", "content": text}]}
    first, _ = send(world["alice"], payload)
    hit, body = send(world["alice"], payload)
    streamed_hit, raw = send(world["alice"], {**payload, "stream": True})
    assert (first["x-gateway-cache"], hit["x-gateway-cache"], streamed_hit["x-gateway-cache"]) == ("miss", "hit", "hit")
    assert len(echo.bodies) == calls + 1
    assert orjson.loads(body)["choices"][0]["message"]["content"] == text
    assert streamed(raw) == text
    Tenant.objects.filter(id=world["acme"].id).update(cache_policy=None)
    state.clear()
    # scan_responses: an address the model came up with reaches neither the client nor the stored body.
    Tenant.objects.filter(id=world["acme"].id).update(pii_policy={**POLICY, "scan_responses": True}, log_bodies=True)
    state.clear()
    question = "My colleague is jane.doe@example.com"
    for stream in (False, True):
        payload = {"model": "echo-2", "messages": [{"role": "user", "content": question}], "stream": stream}
        response, raw = send(world["alice"], payload)
        got = streamed(raw) if stream else orjson.loads(raw)["choices"][0]["message"]["content"]
        assert got == question + " Ask [EMAIL] too.", stream
        stored = CallBody.objects.get(request_id=logged(response).request_id)
        assert "<EMAIL_1>" in stored.response_body and "[EMAIL]" in stored.response_body
        assert "leak.example" not in stored.response_body + stored.request_body
        assert "jane.doe" not in stored.response_body + stored.request_body
    Tenant.objects.filter(id=world["acme"].id).update(pii_policy=POLICY, log_bodies=False)
    state.clear()
    # Anthropic's format (/v1/messages): translated both ways so the policy governs it the same.
    for stream in (False, True):
        payload = {"model": "echo-2", "max_tokens": 100, "messages": [{"role": "user", "content": text}]}
        response, raw = send(world["alice"], {**payload, "stream": stream}, "messages")
        assert response.status_code == 200
        if stream:
            deltas = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
            got = "".join(d["delta"].get("text", "") for d in deltas if d.get("type") == "content_block_delta")
        else:
            got = "".join(block["text"] for block in orjson.loads(raw)["content"] if block["type"] == "text")
        assert got == text, stream
        assert echo.bodies[-1]["messages"][-1]["content"] == sent


def test_block_log_only_mode_and_key_overrides(world, upstream, mint):
    Tenant.objects.filter(id=world["acme"].id).update(pii_policy=BLOCK_CARDS)
    state.clear()
    card = "4111 1111 1111 1111"
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Charge {card} for jo@x.example"}]}
    response, body = send(world["alice"], payload)
    assert response.status_code == 400
    error = orjson.loads(body)["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "pii_blocked",
        "invalid_request_error",
        "messages[0].content",
    )
    assert "'card'" in error["message"] and "4111" not in error["message"]
    assert upstream.calls("gpt-4o-mini") == 0
    row = logged(response)
    assert (row.status_code, row.error_type) == (400, "pii_blocked")
    assert row.pii_actions == {"card": {"block": 1}, "email": {"pseudonymize": 1}}
    assert "4111" not in row_text(row) and "jo@x.example" not in row_text(row)
    # A key's own policy replaces the tenant's, in both directions.
    strict = mint(world["acme"], name="strict")
    lax = mint(world["acme"], name="lax")
    VirtualKey.objects.filter(key_hash=hash_secret(strict)).update(pii_policy={"detectors": {"email": "redact"}})
    VirtualKey.objects.filter(key_hash=hash_secret(lax)).update(pii_policy={"detectors": {}})
    state.clear()
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I am jo@x.example, ORD-123456"}]}
    for secret, expected in (
        (strict, "I am [EMAIL], ORD-123456"),
        (lax, "I am jo@x.example, ORD-123456"),
        (world["alice"], "I am <EMAIL_1>, ORD-123456"),
    ):
        response, _ = send(secret, payload)
        assert response.status_code == 200
        assert upstream.requests[-1].body["messages"][0]["content"] == expected
    # log-only mode: what goes upstream is unchanged, the log counts what would have happened.
    Tenant.objects.filter(id=world["acme"].id).update(pii_policy={**BLOCK_CARDS, "mode": "log-only"})
    state.clear()
    content = "Charge 4111 1111 1111 1111 for jo@x.example"
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    response, _ = send(world["alice"], payload)
    assert response.status_code == 200
    assert upstream.requests[-1].body["messages"][0]["content"] == content
    assert logged(response).pii_actions == {"card": {"would-block": 1}, "email": {"would-pseudonymize": 1}}


def test_an_end_user_id_holding_personal_data_is_stored_as_what_was_sent_upstream(world, upstream):
    from datetime import UTC, datetime
    from decimal import Decimal

    from billing.models import SpendLedger
    from billing.selectors import spent_in_period_pico
    from billing.services import budget_upsert
    from tenants.audit import Actor

    payload = {"model": "gpt-4o-mini", "user": "eve@e.example", "messages": [{"role": "user", "content": "hi"}]}
    first, _ = send(world["alice"], payload)
    second, _ = send(world["alice"], payload)
    assert first.status_code == second.status_code == 200
    sent = [r.body["user"] for r in upstream.requests[-2:]]
    assert sent[0] == sent[1] and sent[0].startswith("user-")  # stable: per-user figures still add up
    rows = [logged(first), logged(second)]
    assert {row.end_user for row in rows} == {sent[0]}
    assert all("eve@e.example" not in row_text(row) for row in rows)
    assert set(SpendLedger.objects.filter(tenant=world["acme"]).values_list("end_user", flat=True)) == {sent[0]}
    # A budget on that end user (named as the client sends it) still finds its spend in the ledger.
    budget, _ = budget_upsert(
        world["acme"],
        scope="user:eve@e.example",
        limit_usd=Decimal("5"),
        period="month",
        mode="hard",
        actor=Actor.cli(),
    )
    assert spent_in_period_pico(budget, now=datetime.now(UTC), tz=UTC) == sum(r.cost_picodollars or 0 for r in rows)
    # Bob's tenant has no policy: his end-user ids are stored as sent.
    response, _ = send(world["bob"], {**payload, "user": "bob-user-7"})
    assert logged(response).end_user == "bob-user-7"
