"""The Azure OpenAI adapter against a loopback server that speaks Azure's wire format.

Azure is OpenAI's format behind per-deployment URLs, an api-version and an `api-key` header; its
stream starts with a chunk without choices, and its content filter refuses with code content_filter.
"""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path

import orjson
import pytest

from proxy.attempts import retry_after
from proxy.providers.azure import AzureAdapter
from proxy.providers.base import CallContext, UpstreamResult
from proxy.snapshot import Deployment
from proxy.upstream import close_client
from tests.fakes.azure_upstream import API_KEY, FakeAzure

GOLDEN = Path(__file__).parent / "golden" / "azure"
ADAPTER = AzureAdapter()
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def deployment(fake: FakeAzure, name: str = "gpt4o-prod", key: str = API_KEY, **extra) -> Deployment:
    dep = Deployment(
        id=1,
        model_name="gpt-4o-eu",
        provider_name="azure-eu",
        kind="azure",
        base_url=fake.base_url,
        api_key=key,
        upstream_model=name,
        api_version="2024-10-21",
        base_model="gpt-4o",
        **extra,
    )
    ADAPTER.prepare(dep)
    return dep


def ctx(endpoint: str = "chat/completions", *, stream: bool = False, usage: bool = False) -> CallContext:
    return CallContext(request_id="req-az", endpoint=endpoint, stream=stream, client_wants_usage=usage)


def send(dep: Deployment, payload: dict, context: CallContext | None = None) -> UpstreamResult:
    async def go():
        try:
            return await ADAPTER.send(dep, payload, context or ctx())
        finally:
            await close_client()

    return asyncio.run(go())


def stream(dep: Deployment, payload: dict, *, usage: bool = False):
    async def go():
        try:
            opened = await ADAPTER.open_stream(dep, payload, ctx(stream=True, usage=usage))
            if isinstance(opened, UpstreamResult):
                return opened, []
            events = [event async for event in opened]
            await opened.aclose()
            return opened, events
        finally:
            await close_client()

    opened, raw = asyncio.run(go())
    events = []
    for event in raw:
        data = event.strip().removeprefix(b"data: ")
        events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return opened, events


def chat(text: str = "Hi there", **extra) -> dict:
    return {"model": "gpt-4o-eu", "messages": [{"role": "user", "content": text}], **extra}


def check_golden(name: str, value: dict) -> None:
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert value == orjson.loads(path.read_bytes())


def test_alice_reaches_her_deployment_with_the_api_key_and_api_version(azure):
    payload = chat(temperature=0.3, max_tokens=50)
    before = copy.deepcopy(payload)
    result = send(deployment(azure), payload)
    assert result.status == 200
    recorded = azure.requests[-1]
    assert recorded.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert recorded.query == {"api-version": "2024-10-21"}
    assert recorded.headers["api-key"] == API_KEY
    assert "authorization" not in {h.lower() for h in recorded.headers}
    assert recorded.body == before  # forwarded as the client sent it
    check_golden("chat_request", recorded.body)
    assert payload == before
    body = orjson.loads(result.body)
    assert body["choices"][0]["message"]["content"] == "Hello from the fake Azure."
    assert body["prompt_filter_results"][0]["prompt_index"] == 0  # Azure's extra fields reach the client
    assert result.usage["completion_tokens"] == 6


def test_operator_headers_are_added_after_the_adapters_own(azure):
    send(deployment(azure, extra_headers={"x-ms-useragent": "acme-gateway"}), chat())
    assert azure.requests[-1].headers["x-ms-useragent"] == "acme-gateway"


def test_azures_first_stream_chunk_without_choices_passes_and_usage_is_still_found(azure):
    payload = chat(stream=True)
    before = copy.deepcopy(payload)
    opened, events = stream(deployment(azure), payload)
    assert payload == before
    sent = azure.requests[-1].body
    assert sent["stream_options"] == {"include_usage": True}  # asked for on the client's behalf
    check_golden("stream_request", sent)
    assert events[0]["choices"] == [] and "prompt_filter_results" in events[0]
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[1:-1] if e["choices"])
    assert text == "Hello from the fake Azure."
    assert opened.usage["completion_tokens"] == 6
    # The usage chunk the client did not ask for is hidden; Azure's filter chunk is not.
    assert not any(e.get("usage") for e in events[:-1])


def test_the_usage_chunk_reaches_a_client_that_asked_for_it(azure):
    opened, events = stream(deployment(azure), chat(stream=True, stream_options={"include_usage": True}), usage=True)
    usage_chunks = [e for e in events[:-1] if e.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["usage"] == opened.usage


def test_a_filtered_prompt_is_a_400_with_code_content_filter(azure):
    dep = deployment(azure, "filtered-prompt")
    for result in (send(dep, chat()), stream(dep, chat(stream=True))[0]):
        assert result.status == 400
        error = orjson.loads(result.body)["error"]
        assert error["code"] == "content_filter"
        assert error["type"] == "invalid_request_error"
        assert "content management policy" in error["message"]
        assert result.error_type == "content_filter"


def test_a_filtered_answer_with_nothing_in_it_is_a_400_content_filter(azure):
    result = send(deployment(azure, "filtered-answer"), chat())
    assert result.status == 400
    assert orjson.loads(result.body)["error"]["code"] == "content_filter"
    assert result.usage["prompt_tokens"] > 0  # the prompt was processed and is still counted


def test_a_stream_cut_by_the_content_filter_keeps_its_finish_reason(azure):
    _opened, events = stream(deployment(azure, "filtered-stream"), chat(stream=True))
    reasons = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
    assert reasons[-1] == "content_filter"
    assert events[-1] == "[DONE]"


def test_a_rate_limit_keeps_azures_retry_hints(azure):
    azure.script("gpt4o-prod", {"status": 429}, {"status": 429})
    for result in (send(deployment(azure), chat()), stream(deployment(azure), chat(stream=True))[0]):
        assert result.status == 429
        assert result.headers["retry-after"] == "6"
        assert result.headers["retry-after-ms"] == "6000"
        assert retry_after(result) == 6.0
        assert "exceeded token rate limit" in orjson.loads(result.body)["error"]["message"]


@pytest.mark.parametrize(("status", "code"), [(404, "DeploymentNotFound"), (500, None)])
def test_other_errors_keep_their_status_and_code(azure, status, code):
    azure.script("gpt4o-prod", {"status": status})
    result = send(deployment(azure), chat())
    assert result.status == status
    assert orjson.loads(result.body)["error"]["code"] == code


def test_a_wrong_key_is_a_401(azure):
    result = send(deployment(azure, key="az-wrong-key-99999"), chat())
    assert result.status == 401
    assert "invalid subscription key" in orjson.loads(result.body)["error"]["message"]


def test_tools_round_trip_in_json_and_in_a_stream(azure):
    dep = deployment(azure, "tools")
    payload = chat("Weather in Paris?", tools=[TOOL])
    message = orjson.loads(send(dep, payload).body)["choices"][0]["message"]
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather"

    payload["messages"] += [message, {"role": "tool", "tool_call_id": call["id"], "content": "21C"}]
    answer = orjson.loads(send(dep, payload).body)["choices"][0]["message"]["content"]
    assert answer == "The tool said 21C"
    assert azure.requests[-1].body["messages"][-1] == {"role": "tool", "tool_call_id": "call_az1", "content": "21C"}

    _opened, events = stream(dep, chat("Weather?", tools=[TOOL], stream=True))
    pieces = [
        tc["function"].get("arguments", "")
        for e in events[:-1]
        if e["choices"]
        for tc in e["choices"][0]["delta"].get("tool_calls") or ()
    ]
    assert orjson.loads("".join(pieces)) == {"city": "Paris"}


def test_embeddings_go_to_the_deployments_embeddings_url(azure):
    result = send(deployment(azure, "embed-small"), {"model": "e", "input": ["a", "b"]}, ctx("embeddings"))
    assert azure.requests[-1].path == "/openai/deployments/embed-small/embeddings"
    assert azure.requests[-1].query == {"api-version": "2024-10-21"}
    assert len(orjson.loads(result.body)["data"]) == 2
    assert result.usage == {"prompt_tokens": 3, "total_tokens": 3}
