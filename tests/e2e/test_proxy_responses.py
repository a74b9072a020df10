"""OpenAI's Responses API (/v1/responses) through the real server with the official openai SDK, served
by the chat pipeline: text answers JSON and streamed (the SDK's stream helper accumulates them),
function tool round trips (the whole conversation sent, or continued with previous_response_id on an
OpenAI-kind and an Anthropic-kind deployment), stored responses read back, listed and deleted through
the SDK, structured output through text.format, and what translation cannot do (built-in tools)
refused with the documented errors. Logged as `responses`."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from observability.models import CallLog
from tests.helpers import wait_for
from tests.openapi import validate

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_creates_a_response_and_streams_one(gateway, acme, mint, upstream):
    client = client_for(gateway, mint(acme))
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", instructions="Be brief.", input="Say hello", max_output_tokens=40
    )
    response = raw.parse()
    validate(json.loads(raw.http_response.content), "Response")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello from the fake upstream."
    assert response.usage.output_tokens == 6 and response.usage.input_tokens > 0
    sent = upstream.requests[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert sent["max_completion_tokens"] == 40

    with client.responses.stream(model="gpt-4o-mini", input=[{"role": "user", "content": "Say hello"}]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    # The wire events themselves (not the SDK's parsed copies) against OpenAI's schema.
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/responses",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": "gpt-4o-mini", "input": "Say hello", "stream": True},
    ) as wire:
        frames = [f for f in wire.read().decode().split("\n\n") if f.strip()]
    for frame in frames:
        name, data = frame.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        validate(event, "ResponseStreamEvent")
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert final.output_text == "Hello from the fake upstream." and final.usage.output_tokens == 6

    request_id = raw.headers["x-request-id"]
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists())
    log = CallLog.objects.get(request_id=request_id)
    assert log.endpoint == "responses" and log.status_code == 200 and log.cost_picodollars is not None


def test_a_function_tool_round_trip(gateway, make_tenant, mint, upstream):
    client = client_for(gateway, mint(make_tenant("acme", {"tools": "tool-call"})))
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.responses.create(model="tools", input=ask, tools=tools)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)
    follow_up = [
        *ask,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
    ]
    second = client.responses.create(model="tools", input=follow_up, tools=tools)
    assert second.output_text
    sent = upstream.requests[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call.call_id and sent[-1] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": "Sunny",
    }


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _continue_with_previous_response_id(client: openai.OpenAI, model: str) -> tuple[str, list[dict]]:
    """Ask, get a function call, answer it with previous_response_id only: (the call's id, the
    stored first response's input items)."""
    first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
        tools=[WEATHER],
    )
    assert second.previous_response_id == first.id and second.output_text
    items = client.responses.input_items.list(first.id)
    return call.call_id, [item.model_dump() for item in items.data]


def test_a_tool_round_trip_continued_with_previous_response_id_on_openai(gateway, make_tenant, mint, upstream):
    client = client_for(gateway, mint(make_tenant("acme", {"tools": "tool-call"})))
    call_id, items = _continue_with_previous_response_id(client, "tools")
    sent = upstream.requests[-1].body["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call_id, "content": "Sunny"}
    assert [item["type"] for item in items] == ["message"]


def test_a_tool_round_trip_continued_with_previous_response_id_on_anthropic(
    gateway_factory, fake_anthropic, mint, monkeypatch
):
    from tenants.config import apply_config
    from tests.fakes.anthropic_upstream import API_KEY

    fake_anthropic.reset()
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", API_KEY)
    yaml = "\n".join(
        [
            "tenant: initech",
            "name: Initech",
            "providers:",
            f"  - {{name: claude, kind: anthropic, base_url: '{fake_anthropic.base_url}', api_key: env:ANTHROPIC_TEST_KEY}}",
            "models:",
            "  - name: claude",
            "    deployments:",
            "      - {provider: claude, model: claude-sonnet-4-5}",
        ]
    )
    initech, _ = apply_config(yaml + "\n")
    client = client_for(gateway_factory(), mint(initech, name="peter-app"))
    fake_anthropic.script(
        "claude-sonnet-4-5",
        {"content": [{"type": "tool_use", "id": "toolu_01Paris", "name": "get_weather", "input": {"city": "Paris"}}]},
    )
    call_id, _items = _continue_with_previous_response_id(client, "claude")
    assert call_id == "toolu_01Paris"
    # Anthropic's own wire format: the earlier turn came back as tool_use, the output as tool_result.
    sent = fake_anthropic.requests[-1].body["messages"]
    assert sent[0]["role"] == "user" and sent[1]["content"][-1]["type"] == "tool_use"
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_01Paris", "content": "Sunny"}


def test_a_stored_response_is_read_listed_and_deleted_through_the_sdk(gateway, acme, globex, mint, upstream):
    alice = client_for(gateway, mint(acme, name="alice-app"))
    bob = client_for(gateway, mint(globex, name="bob-app"))
    created = alice.responses.create(model="gpt-4o-mini", input=[{"role": "user", "content": "Say hello"}])
    again = alice.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == created.output_text and again.store is True
    raw = alice.responses.input_items.with_raw_response.list(created.id)
    validate(json.loads(raw.http_response.content), "ResponseItemList")
    assert [item.content[0].text for item in raw.parse().data] == ["Say hello"]
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(created.id)  # Bob's globex never reads Acme's responses
    alice.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        alice.responses.retrieve(created.id)
    assert caught.value.body["code"] == "response_not_found"
    unkept = alice.responses.create(model="gpt-4o-mini", input="Say hello", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(unkept.id)


def test_what_translation_cannot_do_is_refused_clearly(gateway, acme, mint, upstream):
    client = client_for(gateway, mint(acme))
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-4o-mini", input="again", previous_response_id="resp_unknown")
    assert caught.value.body["code"] == "response_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input="news?", tools=[{"type": "web_search"}])
    assert "web_search" in caught.value.body["message"] and caught.value.body["param"] == "tools[0]"


def test_structured_output_through_responses_parse_and_chat_parse_with_the_built_in_mock(gateway, acme, mint):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int
        coastal: bool

    client = client_for(gateway, mint(acme))
    parsed = client.responses.parse(model="local", input="A city, please", text_format=City)
    assert isinstance(parsed.output_parsed, City)
    chat = client.chat.completions.parse(
        model="local", messages=[{"role": "user", "content": "A city, please"}], response_format=City
    )
    assert isinstance(chat.choices[0].message.parsed, City)


OPENAI_KIND = """
tenant: hooli
name: Hooli
providers:
  - {{name: openai, kind: openai, base_url: '{url}', api_key: env:FAKE_UPSTREAM_KEY}}
  - {{name: compat, kind: openai-compatible, base_url: '{url}', api_key: env:FAKE_UPSTREAM_KEY}}
models:
  - name: gpt-5
    deployments: [{{provider: openai, model: gpt-5-2025-08-07}}]
  - name: compat
    deployments: [{{provider: compat, model: gpt-4o-mini}}]
"""


def test_openai_deployments_relay_the_responses_api_natively(gateway, mint, upstream, monkeypatch):
    """Gavin's hooli routes gpt-5 to a deployment of kind openai: requests are relayed to OpenAI's own
    Responses API (built-in tools work, the body goes as sent with the model swapped, events come back
    untouched), billed from its usage, stored and continued like translated ones."""
    from tenants.config import apply_config
    from tests.helpers import UPSTREAM_KEY

    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    hooli, _ = apply_config(OPENAI_KIND.format(url=upstream.base_url))
    client = client_for(gateway, mint(hooli, name="gavin-app"))
    raw = client.responses.with_raw_response.create(
        model="gpt-5", input="Latest news?", tools=[{"type": "web_search"}], reasoning={"effort": "low"}
    )
    first = raw.parse()
    assert [item.type for item in first.output] == ["web_search_call", "message"]
    assert first.output_text == "Hello from the fake upstream." and first.id.startswith("resp_openai")
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses" and sent.body["model"] == "gpt-5-2025-08-07"
    assert sent.body["tools"] == [{"type": "web_search"}] and sent.body["reasoning"] == {"effort": "low"}

    with client.responses.stream(model="gpt-5", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "Hello from the fake upstream." and final.usage.output_tokens == 6

    # Kept by the gateway (OpenAI's id), and continued from its store: the conversation goes upstream
    # as input items, since OpenAI's store may not have it (another provider may have answered it).
    assert client.responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(model="gpt-5", previous_response_id=first.id, input="And more?")
    assert second.output_text
    sent = upstream.requests[-1].body
    assert "previous_response_id" not in sent
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][0]["content"][0] == {"type": "input_text", "text": "Latest news?"}

    request_id = raw.headers["x-request-id"]
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists())
    log = CallLog.objects.get(request_id=request_id)
    assert log.endpoint == "responses" and log.prompt_tokens > 0 and log.completion_tokens == 6
    assert log.cost_picodollars is not None and log.cost_picodollars > 0

    # A built-in tool where the route translates (openai-compatible): a 400 naming it.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="compat", input="news?", tools=[{"type": "web_search"}])
    assert caught.value.body["param"] == "tools[0]" and "web_search" in caught.value.body["message"]
