"""The OpenAI SDK through a real gateway to the fake Azure OpenAI upstream."""

from __future__ import annotations

import pytest

from tests.fakes.azure_upstream import API_KEY

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_the_openai_sdk_talks_to_azure_through_the_gateway(gateway, azure, mint, monkeypatch):
    import openai

    from tenants.config import apply_config

    monkeypatch.setenv("AZURE_KEY", API_KEY)
    acme, _changes = apply_config(
        "tenant: acme\nname: Acme Corp\nproviders:\n"
        f"  - {{name: azure-eu, kind: azure, base_url: '{azure.base_url}', api_key: env:AZURE_KEY,"
        " api_version: '2024-10-21'}\n"
        "models:\n"
        "  - {name: gpt-4o-eu, deployments: [{provider: azure-eu, model: gpt4o-prod, base_model: gpt-4o}]}\n"
        "  - {name: tools, deployments: [{provider: azure-eu, model: tools}]}\n"
        "  - {name: filtered, deployments: [{provider: azure-eu, model: filtered-prompt}]}\n"
        "  - {name: embed, deployments: [{provider: azure-eu, model: embed-small}]}\n"
    )
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(acme), max_retries=0)

    completion = client.chat.completions.create(model="gpt-4o-eu", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "Hello from the fake Azure."
    assert azure.requests[-1].headers["api-key"] == API_KEY

    stream = client.chat.completions.create(
        model="gpt-4o-eu",
        messages=[{"role": "user", "content": "Stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # Azure's first chunk without choices must not break the SDK
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake Azure."
    assert chunks[-1].usage.completion_tokens == 6

    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="tools", messages=messages, tools=[TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "tool_call_id": call.id, "content": "21C"}]
    second = client.chat.completions.create(model="tools", messages=messages, tools=[TOOL])
    assert second.choices[0].message.content == "The tool said 21C"

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="filtered", messages=[{"role": "user", "content": "x"}])
    assert refused.value.code == "content_filter"

    assert len(client.embeddings.create(model="embed", input=["a", "b"]).data) == 2
