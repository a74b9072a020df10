"""The OpenAI SDK through a real gateway to the fake Bedrock upstream: chat, streams, tools, embeddings."""

from __future__ import annotations

import json

import pytest

from tests.fakes.bedrock_upstream import CREDENTIALS, REGION, FakeBedrock, fake_vector

TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
ALICE_KEY = "AKIDALICEEXAMPLE01"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def acme_on_bedrock(bedrock: FakeBedrock, gateway, mint, monkeypatch):
    """Alice's tenant with a chat model and two embedding models on the fake Bedrock, and an SDK client."""
    import openai

    from tenants.config import apply_config

    monkeypatch.setenv("ACME_AWS_KEY_ID", ALICE_KEY)
    monkeypatch.setenv("ACME_AWS_SECRET", CREDENTIALS[ALICE_KEY][0])
    acme, _changes = apply_config(
        "tenant: acme\n"
        "name: Acme Corp\n"
        "providers:\n"
        f"  - {{name: aws, kind: bedrock, base_url: '{bedrock.base_url}', region: {REGION},"
        " aws_access_key_id: env:ACME_AWS_KEY_ID, aws_secret_access_key: env:ACME_AWS_SECRET}\n"
        "models:\n"
        "  - name: claude\n"
        "    deployments: [{provider: aws, model: 'anthropic.claude-3-5-haiku-20241022-v1:0'}]\n"
        "  - name: titan\n"
        f"    deployments: [{{provider: aws, model: '{TITAN}'}}]\n"
        "  - name: cohere\n"
        f"    deployments: [{{provider: aws, model: '{COHERE}'}}]\n"
    )
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(acme), max_retries=0)


def test_the_openai_sdk_talks_to_bedrock_through_the_gateway(bedrock, gateway, mint, monkeypatch):
    client = acme_on_bedrock(bedrock, gateway, mint, monkeypatch)

    answer = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "Hello from the fake Bedrock."
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 7)

    stream = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = list(stream)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == "Hello from the fake Bedrock."
    assert parts[-1].usage.total_tokens == 19

    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL])
    tool_call = first.choices[0].message.tool_calls[0]
    assert (tool_call.function.name, json.loads(tool_call.function.arguments)) == ("get_weather", {"city": "Paris"})
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": tool_call.id, "content": "18C and sunny"},
    ]
    second = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "The tool said: 18C and sunny"
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256") for r in bedrock.requests)


def test_the_openai_sdk_gets_bedrock_embeddings_through_the_gateway(bedrock, gateway, mint, monkeypatch):
    import openai

    client = acme_on_bedrock(bedrock, gateway, mint, monkeypatch)

    # The SDK asks for base64 by default and decodes it back to floats itself.
    titan = client.embeddings.create(model="titan", input=["Alice's first note", "second"], dimensions=512)
    assert [row.embedding for row in titan.data] == [fake_vector(t, 512) for t in ["Alice's first note", "second"]]
    assert (titan.usage.prompt_tokens, titan.usage.total_tokens) == (4, 4)
    assert [r.body["dimensions"] for r in bedrock.requests] == [512, 512]

    raw = client.embeddings.with_raw_response.create(model="cohere", input="one document")
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)  # base64 on the wire
    assert raw.parse().data[0].embedding == fake_vector("one document", 1024)
    assert bedrock.requests[-1].body == {"texts": ["one document"], "input_type": "search_document"}

    with pytest.raises(openai.BadRequestError, match="token arrays"):
        client.embeddings.create(model="titan", input=[[15339, 1917]])
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256") for r in bedrock.requests)
