"""The same structured output through the official openai SDK's `chat.completions.parse` on every
provider kind, through a real gateway: OpenAI relays `response_format`, Anthropic and Bedrock get a
forced tool named `gateway_json_response` whose input comes back as the content, Gemini gets
responseMimeType and responseSchema. Alice's acme uses OpenAI and Claude; Bob's globex uses Gemini and
Bedrock. Each answer parses to the same City and validates against OpenAI's schema."""

from __future__ import annotations

import json

import openai
from pydantic import BaseModel

from proxy.providers.base import STRUCTURED_TOOL_DESCRIPTION
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.bedrock_upstream import CREDENTIALS, REGION
from tests.fakes.gemini_upstream import API_KEY as GEMINI_KEY
from tests.helpers import UPSTREAM_KEY
from tests.openapi import validate

FORCED_TOOL = "gateway_json_response"
BEDROCK_CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
BOB_AWS_KEY = "ASIABOBTEMPEXAMPLE"


class City(BaseModel):
    name: str
    population: int
    coastal: bool


MARSEILLE = City(name="Marseille", population=873076, coastal=True)
ASK = [{"role": "user", "content": "The largest port city of France, please."}]

# What the SDK makes of City (strict: every property required, no others), as each provider gets it.
CITY_SCHEMA = {
    "properties": {
        "name": {"title": "Name", "type": "string"},
        "population": {"title": "Population", "type": "integer"},
        "coastal": {"title": "Coastal", "type": "boolean"},
    },
    "required": ["name", "population", "coastal"],
    "title": "City",
    "type": "object",
    "additionalProperties": False,
}


def acme_for_alice(gateway, mint, monkeypatch, *, openai_url: str, anthropic_url: str) -> openai.OpenAI:
    from tenants.config import apply_config

    monkeypatch.setenv("ACME_OPENAI_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("ACME_ANTHROPIC_KEY", ANTHROPIC_KEY)
    acme, _changes = apply_config(
        "tenant: acme\n"
        "name: Acme Corp\n"
        "providers:\n"
        f"  - {{name: openai, kind: openai, base_url: '{openai_url}', api_key: env:ACME_OPENAI_KEY}}\n"
        f"  - {{name: claude, kind: anthropic, base_url: '{anthropic_url}', api_key: env:ACME_ANTHROPIC_KEY}}\n"
        "models:\n"
        "  - name: gpt\n"
        "    deployments: [{provider: openai, model: gpt-4o-2024-08-06}]\n"
        "  - name: claude\n"
        "    deployments: [{provider: claude, model: claude-sonnet-4-5}]\n"
    )
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(acme, name="alice-app"), max_retries=0)


def globex_for_bob(gateway, mint, monkeypatch, *, gemini_url: str, bedrock_url: str) -> openai.OpenAI:
    from tenants.config import apply_config

    monkeypatch.setenv("GLOBEX_GEMINI_KEY", GEMINI_KEY)
    monkeypatch.setenv("GLOBEX_AWS_KEY_ID", BOB_AWS_KEY)
    monkeypatch.setenv("GLOBEX_AWS_SECRET", CREDENTIALS[BOB_AWS_KEY][0])
    monkeypatch.setenv("GLOBEX_AWS_TOKEN", CREDENTIALS[BOB_AWS_KEY][1])
    globex, _changes = apply_config(
        "tenant: globex\n"
        "name: Globex\n"
        "providers:\n"
        f"  - {{name: gemini, kind: gemini, base_url: '{gemini_url}', api_key: env:GLOBEX_GEMINI_KEY}}\n"
        f"  - {{name: aws, kind: bedrock, base_url: '{bedrock_url}', region: {REGION},"
        " aws_access_key_id: env:GLOBEX_AWS_KEY_ID, aws_secret_access_key: env:GLOBEX_AWS_SECRET,"
        " aws_session_token: env:GLOBEX_AWS_TOKEN}\n"
        "models:\n"
        "  - name: gemini\n"
        "    deployments: [{provider: gemini, model: gemini-2.0-flash}]\n"
        "  - name: claude\n"
        f"    deployments: [{{provider: aws, model: '{BEDROCK_CLAUDE}'}}]\n"
    )
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=mint(globex, name="bob-app"), max_retries=0)


def parse_city(client: openai.OpenAI, model: str) -> tuple[City, dict]:
    """The parsed City of one `chat.completions.parse` call, and the JSON answer it came in."""
    raw = client.chat.completions.with_raw_response.parse(model=model, messages=ASK, response_format=City)
    answer = json.loads(raw.http_response.content)
    assert json.loads(answer["choices"][0]["message"]["content"]) == MARSEILLE.model_dump()
    assert answer["choices"][0]["finish_reason"] == "stop"
    message = raw.parse().choices[0].message
    assert not message.tool_calls
    return message.parsed, answer


def validate_answer(answer: dict) -> None:
    """The answer against OpenAI's CreateChatCompletionResponse (the translating adapters once left out
    `refusal`, and Bedrock `logprobs`, both required even when null)."""
    validate(answer, "CreateChatCompletionResponse")


def test_alice_parses_a_city_from_an_openai_deployment_which_gets_the_format_as_sent(
    gateway, upstream, claude, mint, monkeypatch
):
    client = acme_for_alice(gateway, mint, monkeypatch, openai_url=upstream.base_url, anthropic_url=claude.base_url)
    upstream.script("gpt-4o-2024-08-06", {"content": MARSEILLE.model_dump_json()})

    parsed, answer = parse_city(client, "gpt")

    assert parsed == MARSEILLE
    sent = upstream.requests[-1].body
    assert sent["model"] == "gpt-4o-2024-08-06"
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": CITY_SCHEMA, "strict": True},
    }
    validate_answer(answer)


def test_alice_parses_a_city_from_claude_through_the_forced_tool_whole_and_streamed(
    gateway, upstream, claude, mint, monkeypatch
):
    client = acme_for_alice(gateway, mint, monkeypatch, openai_url=upstream.base_url, anthropic_url=claude.base_url)
    tool_use = {"type": "tool_use", "id": "toolu_01Marseille", "name": FORCED_TOOL, "input": MARSEILLE.model_dump()}
    claude.script("claude-sonnet-4-5", {"content": [tool_use]}, {"content": [tool_use]})

    parsed, answer = parse_city(client, "claude")

    assert parsed == MARSEILLE
    sent = claude.requests[-1].body
    assert sent["tools"] == [
        {"name": FORCED_TOOL, "description": STRUCTURED_TOOL_DESCRIPTION, "input_schema": CITY_SCHEMA}
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": FORCED_TOOL}
    assert "response_format" not in sent

    with client.chat.completions.stream(model="claude", messages=ASK, response_format=City) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    # The tool's input arrives in pieces as content deltas; the SDK parses the whole of it once done.
    assert len([e for e in events if e.type == "content.delta"]) >= 2
    done = [e for e in events if e.type == "content.done"]
    assert len(done) == 1 and done[0].parsed == MARSEILLE
    assert final.choices[0].message.parsed == MARSEILLE
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    sent = claude.requests[-1].body
    assert sent["stream"] is True and sent["tool_choice"] == {"type": "tool", "name": FORCED_TOOL}

    validate_answer(answer)


def test_bob_parses_a_city_from_gemini_which_gets_a_json_mime_type_and_the_schema(
    gateway, gemini, bedrock, mint, monkeypatch
):
    client = globex_for_bob(gateway, mint, monkeypatch, gemini_url=gemini.base_url, bedrock_url=bedrock.base_url)
    gemini.script("gemini-2.0-flash", {"text": MARSEILLE.model_dump_json()})

    parsed, answer = parse_city(client, "gemini")

    assert parsed == MARSEILLE
    config = gemini.requests[-1].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    # Gemini's schema dialect has no additionalProperties: the rest of the schema goes as it was.
    assert config["responseSchema"] == {k: v for k, v in CITY_SCHEMA.items() if k != "additionalProperties"}
    validate_answer(answer)


def test_bob_parses_a_city_from_claude_on_bedrock_through_the_forced_tool(gateway, gemini, bedrock, mint, monkeypatch):
    client = globex_for_bob(gateway, mint, monkeypatch, gemini_url=gemini.base_url, bedrock_url=bedrock.base_url)
    use = {"toolUseId": "tooluse_marseille01", "name": FORCED_TOOL, "input": MARSEILLE.model_dump()}
    bedrock.script(BEDROCK_CLAUDE, {"content": [{"toolUse": use}], "stopReason": "tool_use"})

    parsed, answer = parse_city(client, "claude")

    assert parsed == MARSEILLE
    sent = bedrock.requests[-1].body
    spec = {"name": FORCED_TOOL, "description": STRUCTURED_TOOL_DESCRIPTION, "inputSchema": {"json": CITY_SCHEMA}}
    assert sent["toolConfig"] == {"tools": [{"toolSpec": spec}], "toolChoice": {"tool": {"name": FORCED_TOOL}}}
    assert bedrock.requests[-1].path.endswith("/converse")
    validate_answer(answer)
