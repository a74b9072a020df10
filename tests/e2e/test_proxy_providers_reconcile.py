"""Costs of every provider kind reconcile: one gateway, one tenant fronting OpenAI-compatible, Anthropic,
Azure, Gemini and Bedrock upstreams (loopback fakes), each called through the openai SDK as JSON and
as a stream.

Alice's calls must each be logged with an exact cost computed from what the fake upstream reported
and acme's own prices (cached tokens at the cached price, cache writes at the cache-write price), the
ledger must equal the call logs (`gateway reconcile`), and `gateway spend` must add them up.

The expected usage is taken from the fakes themselves (their usage helpers applied to the request
they received, or usage a test scripted), never from the gateway's answer, so a translation that
drops or double-counts tokens shows up as a cost mismatch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core.management import call_command

from gateway_project.common.money import format_usd, from_pico
from tests.fakes import anthropic_upstream, azure_upstream, bedrock_upstream, gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import CONTENT_WORDS, FakeOpenAI
from tests.helpers import UPSTREAM_KEY, wait_for

ALICE_AWS_KEY = "AKIDALICEEXAMPLE01"
MILLION = Decimal(1_000_000)

# USD per million tokens, keyed by upstream model id (the Azure deployment by its base_model). Every
# figure differs from the shipped table, so a cost priced from the shipped row instead of acme's
# override is caught.
PRICES = {
    "gpt-4o-mini": {"input": "0.17", "output": "0.63", "cached_input": "0.085"},
    "gpt-4o": {"input": "2.6", "output": "10.4", "cached_input": "1.3"},
    "claude-sonnet-4-5": {"input": "3.1", "output": "15.5", "cached_input": "0.31", "cache_write": "3.9"},
    "gemini-2.0-flash": {"input": "0.11", "output": "0.43", "cached_input": "0.027"},
    "cached": {"input": "0.31", "output": "2.7", "cached_input": "0.077"},
    "anthropic.claude-3-5-haiku-20241022-v1:0": {
        "input": "0.83",
        "output": "4.1",
        "cached_input": "0.083",
        "cache_write": "1.03",
    },
    "cached-claude-haiku": {"input": "0.87", "output": "4.3", "cached_input": "0.087", "cache_write": "1.09"},
}

# public model -> (provider name, upstream model id, price key)
MODELS = {
    "oai": ("compat", "gpt-4o-mini", "gpt-4o-mini"),
    "claude": ("claude", "claude-sonnet-4-5", "claude-sonnet-4-5"),
    "az": ("azure-eu", "gpt4o-prod", "gpt-4o"),
    "flash": ("gemini", "gemini-2.0-flash", "gemini-2.0-flash"),
    "flash-cached": ("gemini", "cached", "cached"),
    "haiku": ("aws", "anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    "haiku-cached": ("aws", "cached-claude-haiku", "cached-claude-haiku"),
}

PROMPT = "Summarise the long shared prefix of this conversation, please."


@dataclass(frozen=True)
class Usage:
    """What the upstream reported, split the way it is billed."""

    fresh_input: int
    output: int
    cached: int = 0
    written: int = 0

    @property
    def prompt_tokens(self) -> int:
        # OpenAI's convention, which the call log follows: cache reads and writes are prompt tokens.
        return self.fresh_input + self.cached + self.written

    def cost(self, price_key: str) -> Decimal:
        p = {k: Decimal(v) for k, v in PRICES[price_key].items()}
        total = self.fresh_input * p["input"] + self.output * p["output"]
        total += self.cached * p.get("cached_input", p["input"]) + self.written * p.get("cache_write", p["input"])
        return total / MILLION


@dataclass
class Fakes:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    azure: FakeAzure
    gemini: FakeGemini
    bedrock: FakeBedrock


@pytest.fixture
def fakes(fake_openai: FakeOpenAI) -> Iterator[Fakes]:
    fake_openai.reset()
    started = [FakeAnthropic().start(), FakeAzure().start(), FakeGemini().start(), FakeBedrock().start()]
    yield Fakes(fake_openai, *started)
    for server in started:
        server.stop()


def tenant_yaml(f: Fakes) -> str:
    lines = [
        "tenant: acme",
        "name: Acme Corp",
        "providers:",
        f"  - {{name: compat, kind: openai-compatible, base_url: '{f.openai.base_url}', api_key: env:RC_OPENAI_KEY}}",
        f"  - {{name: claude, kind: anthropic, base_url: '{f.anthropic.base_url}', api_key: env:RC_ANTHROPIC_KEY}}",
        f"  - {{name: azure-eu, kind: azure, base_url: '{f.azure.base_url}', api_key: env:RC_AZURE_KEY,"
        " api_version: '2024-10-21'}",
        f"  - {{name: gemini, kind: gemini, base_url: '{f.gemini.base_url}', api_key: env:RC_GEMINI_KEY}}",
        f"  - {{name: aws, kind: bedrock, base_url: '{f.bedrock.base_url}', region: {bedrock_upstream.REGION},"
        " aws_access_key_id: env:RC_AWS_KEY_ID, aws_secret_access_key: env:RC_AWS_SECRET}",
        "models:",
    ]
    for public, (provider, upstream, price_key) in MODELS.items():
        base = f", base_model: {price_key}" if price_key != upstream else ""
        lines.append(f"  - {{name: {public}, deployments: [{{provider: {provider}, model: '{upstream}'{base}}}]}}")
    lines.append("prices:")
    for model, row in PRICES.items():
        fields = ", ".join(f"{k}: {v}" for k, v in row.items())
        lines.append(f"  - {{model: '{model}', {fields}}}")
    return "\n".join(lines) + "\n"


def test_every_providers_costs_are_exact_and_the_ledger_reconciles(fakes, gateway_factory, mint, monkeypatch):
    import openai

    from observability.models import CallLog
    from tenants.config import apply_config

    monkeypatch.setenv("RC_OPENAI_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("RC_ANTHROPIC_KEY", anthropic_upstream.API_KEY)
    monkeypatch.setenv("RC_AZURE_KEY", azure_upstream.API_KEY)
    monkeypatch.setenv("RC_GEMINI_KEY", gemini_upstream.API_KEY)
    monkeypatch.setenv("RC_AWS_KEY_ID", ALICE_AWS_KEY)
    monkeypatch.setenv("RC_AWS_SECRET", bedrock_upstream.CREDENTIALS[ALICE_AWS_KEY][0])
    acme, _changes = apply_config(tenant_yaml(fakes))
    gateway = gateway_factory()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(acme, name="alice-app"), max_retries=0)

    # Anthropic's answers are scripted so their usage is known exactly; the last two report cache
    # reads and writes (input_tokens excludes both, as Anthropic documents).
    claude_usages = [
        {"input_tokens": 21, "output_tokens": 9},
        {"input_tokens": 23, "output_tokens": 11},
        {"input_tokens": 17, "cache_read_input_tokens": 1200, "cache_creation_input_tokens": 340, "output_tokens": 13},
        {"input_tokens": 19, "cache_read_input_tokens": 2048, "cache_creation_input_tokens": 96, "output_tokens": 5},
    ]
    fakes.anthropic.script("claude-sonnet-4-5", *({"usage": u} for u in claude_usages))
    claude_reported = iter(claude_usages)

    def reported(public: str) -> Usage:
        """The usage the fake upstream behind `public` reported for the request it just received."""
        _provider, upstream, _price = MODELS[public]
        if public == "oai":
            body = fakes.openai.requests[-1].body
            prompt = 9 + sum(len(str(m.get("content", ""))) // 4 for m in body["messages"])
            return Usage(fresh_input=prompt, output=len(CONTENT_WORDS))
        if public == "claude":
            u = next(claude_reported)
            return Usage(
                fresh_input=u["input_tokens"],
                output=u["output_tokens"],
                cached=u.get("cache_read_input_tokens", 0),
                written=u.get("cache_creation_input_tokens", 0),
            )
        if public == "az":
            u = fakes.azure._usage(fakes.azure.requests[-1].body, len(azure_upstream.WORDS))
            cached = u["prompt_tokens_details"]["cached_tokens"]
            return Usage(fresh_input=u["prompt_tokens"] - cached, output=u["completion_tokens"], cached=cached)
        if public.startswith("flash"):
            produced = len(gemini_upstream.WORDS)  # one part per word; a stream's last chunk has the total
            u = fakes.gemini._usage(fakes.gemini.requests[-1].body, upstream, produced)
            cached = u.get("cachedContentTokenCount", 0)  # part of promptTokenCount, as Google counts it
            return Usage(fresh_input=u["promptTokenCount"] - cached, output=u["candidatesTokenCount"], cached=cached)
        u = fakes.bedrock._usage(upstream)
        return Usage(
            fresh_input=u["inputTokens"],
            output=u["outputTokens"],
            cached=u.get("cacheReadInputTokens", 0),
            written=u.get("cacheWriteInputTokens", 0),
        )

    calls = [(m, s) for m in MODELS for s in (False, True)] + [("claude", False), ("claude", True)]
    expected: dict[str, tuple[str, Usage]] = {}
    for n, (public, stream) in enumerate(calls):
        request_id = f"rc-{n}-{public}-{'stream' if stream else 'json'}"
        messages = [{"role": "user", "content": PROMPT}]
        headers = {"x-request-id": request_id}
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=public,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                )
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), request_id
            assert chunks[-1].usage is not None, request_id
        else:
            answer = client.chat.completions.create(model=public, messages=messages, extra_headers=headers)
            assert answer.choices[0].message.content, request_id
        expected[request_id] = (public, reported(public))

    assert wait_for(lambda: CallLog.objects.filter(tenant=acme).count() == len(calls), timeout=10)
    logs = {log.request_id: log for log in CallLog.objects.filter(tenant=acme)}
    assert set(logs) == set(expected)

    # Every call is checked before failing, so a report names every provider that is off, not just the first.
    mismatches = []
    for request_id, (public, usage) in expected.items():
        log = logs[request_id]
        provider, upstream, price_key = MODELS[public]
        want_cost = usage.cost(price_key)
        assert want_cost * 10**12 == int(want_cost * 10**12), "prices must make costs exact in picodollars"
        got = {
            "status": log.status_code,
            "provider": log.provider,
            "upstream_model": log.upstream_model,
            "prompt_tokens": log.prompt_tokens,
            "completion_tokens": log.completion_tokens,
            "cost_estimated": log.cost_estimated,
            "cost": log.cost_usd,
        }
        want = {
            "status": 200,
            "provider": provider,
            "upstream_model": upstream,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.output,
            "cost_estimated": False,
            "cost": want_cost,
        }
        if got != want:
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            mismatches.append(f"{request_id}: got != want {diff}")
    assert not mismatches, "\n".join(mismatches)

    out = io.StringIO()
    call_command("gateway", "reconcile", "--tenant", "acme", stdout=out)
    assert out.getvalue().strip() == "ledger matches call logs"

    out = io.StringIO()
    call_command("gateway", "spend", "--tenant", "acme", "--json", stdout=out)
    spend = json.loads(out.getvalue())
    logged_total = sum(from_pico(log.cost_picodollars) for log in logs.values())
    assert logged_total == sum(usage.cost(MODELS[public][2]) for public, usage in expected.values())
    assert spend["total_usd"] == format_usd(logged_total)
    assert spend["by_key"] == {"alice-app": format_usd(logged_total)}
    by_model: dict[str, Decimal] = {}
    for log in logs.values():
        by_model[log.requested_model] = by_model.get(log.requested_model, Decimal(0)) + log.cost_usd
    assert spend["by_model"] == {m: format_usd(c) for m, c in sorted(by_model.items())}
