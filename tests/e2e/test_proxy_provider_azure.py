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


@pytest.mark.django_db(transaction=True)
def test_the_responses_api_is_relayed_to_azure_v1_surface(gateway, azure, mint, monkeypatch):
    """Ada's Azure deployment serves /v1/responses natively: the client's body goes to Azure's v1
    Responses API with the deployment's name as the model and the key in api-key; built-in tools work,
    the events come back untouched, and the call is billed from Azure's usage."""
    import openai

    from observability.models import CallLog
    from tenants.config import apply_config
    from tests.helpers import wait_for
    from tests.openapi import validate

    monkeypatch.setenv("AZURE_KEY", API_KEY)
    tenant, _changes = apply_config(
        "tenant: lovelace\nname: Lovelace Labs\nproviders:\n"
        f"  - {{name: azure-eu, kind: azure, base_url: '{azure.base_url}', api_key: env:AZURE_KEY,"
        " api_version: '2024-10-21'}\n"
        "models:\n"
        "  - {name: gpt-5, deployments: [{provider: azure-eu, model: gpt5-prod, base_model: gpt-4o}]}\n"
    )
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(tenant, name="ada-app"), max_retries=0)
    raw = client.responses.with_raw_response.create(model="gpt-5", input="News?", tools=[{"type": "web_search"}])
    response = raw.parse()
    validate(raw.http_response.json(), "Response")
    assert response.id.startswith("resp_azure") and [i.type for i in response.output] == ["web_search_call", "message"]
    sent = azure.requests[-1]
    assert sent.path == "/openai/v1/responses" and "api-version" not in sent.query
    assert sent.headers["api-key"] == API_KEY and sent.body["model"] == "gpt5-prod"
    assert sent.body["tools"] == [{"type": "web_search"}]

    with client.responses.stream(model="gpt-5", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "Hello from the fake upstream." and final.usage.output_tokens == 6

    request_id = raw.headers["x-request-id"]
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists())
    log = CallLog.objects.get(request_id=request_id)
    assert log.endpoint == "responses" and log.completion_tokens == 6 and log.cost_picodollars > 0
