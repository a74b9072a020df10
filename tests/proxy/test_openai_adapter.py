"""The OpenAI adapter builds its request without touching the client's payload, which the attempt
loop reuses for the next deployment (of any provider) and later steps may read."""

from __future__ import annotations

import asyncio
import copy

import orjson

from proxy.providers.base import CallContext
from proxy.providers.openai import OpenAIAdapter
from proxy.snapshot import Deployment


def build(dep: Deployment, payload: dict, ctx: CallContext):
    async def go():  # the shared client belongs to the running event loop
        return OpenAIAdapter().build(dep, payload, ctx)

    return asyncio.run(go())


def deployment(upstream_model: str, **extra) -> Deployment:
    dep = Deployment(
        id=1,
        model_name="smart",
        provider_name="main",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test-key-000",
        upstream_model=upstream_model,
        **extra,
    )
    OpenAIAdapter().prepare(dep)
    return dep


def test_the_request_is_built_without_changing_the_payload():
    payload = {"model": "smart", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    before = copy.deepcopy(payload)
    ctx = CallContext(request_id="r1", endpoint="chat/completions", stream=True)
    first = build(deployment("gpt-4o"), payload, ctx)
    second = build(deployment("gpt-4o-mini"), payload, ctx)
    assert payload == before
    assert orjson.loads(first.content)["model"] == "gpt-4o"
    assert orjson.loads(second.content)["model"] == "gpt-4o-mini"
    assert orjson.loads(second.content)["stream_options"] == {"include_usage": True}


def test_operator_headers_are_sent_on_every_call():
    ctx = CallContext(request_id="r1", endpoint="chat/completions", stream=False)
    dep = deployment("gpt-4o", extra_headers={"OpenAI-Organization": "org-acme"})
    request = build(dep, {"model": "smart", "messages": []}, ctx)
    assert request.headers["openai-organization"] == "org-acme"
    assert request.headers["authorization"] == "Bearer sk-test-key-000"
