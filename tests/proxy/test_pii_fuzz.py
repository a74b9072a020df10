"""Fuzz: PII canaries in random string positions of each front end's request schema (OpenAI chat,
embeddings, Anthropic messages; legacy completions come with issue 20) must reach neither the upstream, nor the stored
bodies, the call log or the prompt cache. Alice's tenant pseudonymizes emails and phone numbers, logs
bodies and caches answers; every request carries a fresh canary in a few random fields (seeded: a
failure names its seed and the field)."""

from __future__ import annotations

import json
import random

import pytest
import redis
from django.conf import settings

from observability.logbuffer import buffer
from observability.models import CallBody, CallLog
from proxy.configcache import state
from tenants.models import Tenant
from tests.proxy.test_pii_proxy import echo, send, world  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 40


def _canary(rnd: random.Random) -> str:
    if rnd.random() < 0.5:
        return f"canary.{rnd.randrange(16**8):08x}@leak.example"
    return f"+1 415-555-{rnd.randrange(10000):04d}"


class Builder:
    """Random requests with canaries in random string fields; `placed` names where each one went."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.placed: list[tuple[str, str]] = []

    def text(self, where: str) -> str:
        if self.rnd.random() < 0.35:
            canary = _canary(self.rnd)
            self.placed.append((where, canary))
            return f"note {canary} end"
        return "plain words"

    def chat(self) -> dict:
        t, rnd = self.text, self.rnd
        messages: list[dict] = [{"role": "system", "content": t("system")}]
        if rnd.random() < 0.5:
            messages.append({"role": "user", "name": t("messages[].name"), "content": t("user")})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": t("content part")},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"https://img.example/?q={t('image url').replace(' ', '+')}"},
                    },
                    {"type": "file", "file": {"filename": t("file name"), "file_data": "JVBERi0="}},
                ],
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": t("refusal part")}]
                if rnd.random() < 0.3
                else t("assistant"),
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": json.dumps({"q": t("tool arguments")})},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": t("tool result")})
        messages.append({"role": "user", "content": t("last user")})
        payload: dict = {"model": "echo-1", "messages": messages}
        optional = {
            "tools": lambda: [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "description": t("tool description"),
                        "parameters": {
                            "type": "object",
                            "properties": {"q": {"type": "string", "description": t("parameter description")}},
                        },
                    },
                }
            ],
            "functions": lambda: [{"name": "legacy", "description": t("legacy function")}],
            "response_format": lambda: {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": {"type": "object", "description": t("schema description")}},
            },
            "prediction": lambda: {"type": "content", "content": t("prediction")},
            "metadata": lambda: {"ticket": t("metadata")[:500]},
            "stop": lambda: [t("stop")[:60]],
            "user": lambda: t("user field"),
        }
        for name, make in optional.items():
            if rnd.random() < 0.5:
                payload[name] = make()
        return payload

    def embeddings(self) -> dict:
        return {"model": "embed", "input": [self.text("input"), self.text("input 2")], "user": self.text("user")}

    def anthropic(self) -> dict:
        t = self.text
        return {
            "model": "echo-1",
            "max_tokens": 50,
            "system": [{"type": "text", "text": t("system block")}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": t("user block")}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": t("tool_use input")}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": t("tool_result")},
                        {"type": "text", "text": t("last block")},
                    ],
                },
            ],
            "tools": [
                {
                    "name": "lookup",
                    "description": t("anthropic tool description"),
                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                }
            ],
            "stop_sequences": [t("stop sequence")[:60]],
            "metadata": {"user_id": t("metadata user")[:200]},
        }


FRONTS = {
    "chat/completions": Builder.chat,
    "embeddings": Builder.embeddings,
    "messages": Builder.anthropic,
}


@pytest.fixture
def leaky_world(world):  # noqa: F811
    Tenant.objects.filter(id=world["acme"].id).update(
        pii_policy={"detectors": {"email": "pseudonymize", "phone": "pseudonymize"}},
        log_bodies=True,
        cache_policy={"enabled": True, "ttl_s": 600},
    )
    state.clear()
    return world


@pytest.mark.parametrize("seed", range(3))
def test_no_canary_in_any_field_reaches_the_upstream_the_logs_or_the_cache(leaky_world, echo, upstream, seed):  # noqa: F811
    rnd = random.Random(seed)
    placed: list[tuple[str, str, str]] = []
    for _ in range(ROUNDS):
        endpoint = rnd.choice(list(FRONTS))
        builder = Builder(rnd)
        payload = FRONTS[endpoint](builder)
        send(leaky_world["alice"], payload, endpoint)
        placed += [(endpoint, where, canary) for where, canary in builder.placed]
    assert placed
    buffer.flush_sync()
    sent = json.dumps([echo.bodies, [r.body for r in upstream.requests]], default=str)
    stored = json.dumps(
        [[b.request_body, b.response_body] for b in CallBody.objects.filter(tenant_id=leaky_world["acme"].id)]
    )
    logs = json.dumps(
        [list(row) for row in CallLog.objects.filter(tenant=leaky_world["acme"]).values_list()], default=str
    )
    client = redis.Redis.from_url(settings.REDIS_URL)
    cached = b"".join(client.get(k) or b"" for k in client.scan_iter("*cache*") if client.type(k) == b"string")
    leaks = [
        f"{endpoint} {where}: {place}"
        for endpoint, where, canary in placed
        for place, haystack in (
            ("upstream", sent),
            ("bodies", stored),
            ("call log", logs),
            ("cache", cached.decode(errors="replace")),
        )
        if canary in haystack
    ]
    assert not leaks, f"seed {seed}: " + "; ".join(sorted(set(leaks))[:10])
