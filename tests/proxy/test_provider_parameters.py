"""Every OpenAI chat parameter, for every translating adapter: carried, refused, or ignored as documented.

The contract (README, "Request parameters by provider kind"): a parameter the provider's format can
carry reaches the provider's own field; one it cannot, where leaving it out would change the answer,
is a 400 in OpenAI's shape naming it (`param`) before any upstream call; harmless metadata is left out
and listed. Each adapter keeps the three in one table (CARRIED, IGNORED, REFUSED); these tests run
against the loopback fakes (`claude`, `gemini`, `bedrock`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from proxy.providers import adapter_for, anthropic, bedrock, gemini
from proxy.providers.base import CHAT_PARAMETERS, STRUCTURED_TOOL, CallContext, UpstreamResult, UpstreamStream
from proxy.providers.gemini import to_openai_completion
from proxy.snapshot import Deployment
from proxy.upstream import close_client
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.bedrock_upstream import CREDENTIALS, REGION
from tests.fakes.gemini_upstream import API_KEY as GEMINI_KEY

TABLES = {"anthropic": anthropic, "gemini": gemini, "bedrock": bedrock}
FAKES = {"anthropic": "claude", "gemini": "gemini", "bedrock": "bedrock"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# A value that asks for something, for each parameter an adapter may refuse.
ASKING = {
    "n": 2,
    "logprobs": True,
    "top_logprobs": 2,
    "seed": 7,
    "frequency_penalty": 0.5,
    "presence_penalty": 0.5,
    "logit_bias": {"1734": -100},
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "verbosity": "low",
    "web_search_options": {},
    "moderation": {"model": "omni-moderation-latest"},
    "functions": [TOOL["function"]],
    "function_call": "auto",
}
IGNORABLE = {
    "user": "alice@acme",
    "safety_identifier": "user-7f3a",
    "metadata": {"team": "web"},
    "store": True,
    "service_tier": "flex",
    "prompt_cache_key": "acme-support",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "30m"},
    "prediction": {"type": "content", "content": "Hello"},
}


def deployment(kind: str, fake: Any) -> Deployment:
    fields: dict[str, Any] = {
        "id": 1,
        "model_name": "m",
        "provider_name": kind,
        "kind": kind,
        "base_url": fake.base_url,
    }
    if kind == "anthropic":
        fields |= {"api_key": ANTHROPIC_KEY, "upstream_model": "claude-sonnet-4-5"}
    elif kind == "gemini":
        fields |= {"api_key": GEMINI_KEY, "upstream_model": "gemini-2.0-flash"}
    else:
        key_id = next(iter(CREDENTIALS))
        secret, _token = CREDENTIALS[key_id]
        fields |= {
            "api_key": "",
            "upstream_model": "anthropic.claude-3-5-haiku-20241022-v1:0",
            "region": REGION,
            "aws_access_key_id": key_id,
            "aws_secret_access_key": secret,
        }
    dep = Deployment(**fields)
    adapter_for(kind).prepare(dep)
    return dep


def call(kind: str, fake: Any, payload: dict, *, stream: bool = False) -> UpstreamResult | UpstreamStream:
    """One call through the adapter (a stream is read to its end)."""
    ctx = CallContext(request_id="req-params", endpoint="chat/completions", stream=stream)
    adapter = adapter_for(kind)

    async def go():
        try:
            if not stream:
                return await adapter.send(deployment(kind, fake), payload, ctx)
            opened = await adapter.open_stream(deployment(kind, fake), payload, ctx)
            if isinstance(opened, UpstreamStream):
                _events = [event async for event in opened]
                await opened.aclose()
            return opened
        finally:
            await close_client()  # the shared client belongs to this event loop

    return asyncio.run(go())


def chat(**extra: Any) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **extra}


def sent(fake: Any) -> dict:
    return fake.requests[-1].body


# --- the tables ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TABLES)
def test_each_adapter_sorts_every_openai_parameter_exactly_once(kind):
    table = TABLES[kind]
    carried, ignored, refused = table.CARRIED, table.IGNORED, frozenset(table.REFUSED)
    assert not (carried & ignored) and not (carried & refused) and not (ignored & refused)
    assert carried | ignored | refused == CHAT_PARAMETERS


# --- carried: the provider's own field ---------------------------------------------------------------------

CARRIED: list[tuple[str, str, dict, Callable[[Any], Any], Any]] = [
    ("anthropic", "max_tokens", {"max_tokens": 77}, lambda r: r.body["max_tokens"], 77),
    ("anthropic", "max_completion_tokens", {"max_completion_tokens": 77}, lambda r: r.body["max_tokens"], 77),
    ("anthropic", "stop", {"stop": "END"}, lambda r: r.body["stop_sequences"], ["END"]),
    ("anthropic", "temperature", {"temperature": 0.3}, lambda r: r.body["temperature"], 0.3),
    ("anthropic", "top_p", {"top_p": 0.5}, lambda r: r.body["top_p"], 0.5),
    ("anthropic", "tools", {"tools": [TOOL]}, lambda r: r.body["tools"][0]["name"], "get_weather"),
    (
        "anthropic",
        "tool_choice",
        {"tools": [TOOL], "tool_choice": "required"},
        lambda r: r.body["tool_choice"]["type"],
        "any",
    ),
    (
        "anthropic",
        "parallel_tool_calls",
        {"tools": [TOOL], "parallel_tool_calls": False},
        lambda r: r.body["tool_choice"]["disable_parallel_tool_use"],
        True,
    ),
    (
        "anthropic",
        "response_format",
        {"response_format": {"type": "json_object"}},
        lambda r: r.body["tool_choice"]["name"],
        STRUCTURED_TOOL,
    ),
    (
        "anthropic",
        "reasoning_effort",
        {"reasoning_effort": "low", "max_tokens": 4096},
        lambda r: r.body["thinking"],
        {"type": "enabled", "budget_tokens": 1024},
    ),
    ("anthropic", "user", {"user": "alice@acme"}, lambda r: r.body["metadata"], {"user_id": "alice@acme"}),
    (
        "anthropic",
        "safety_identifier",
        {"safety_identifier": "user-7f3a"},
        lambda r: r.body["metadata"],
        {"user_id": "user-7f3a"},
    ),
    ("anthropic", "stream", {"stream": True}, lambda r: r.body["stream"], True),
    ("gemini", "max_tokens", {"max_tokens": 77}, lambda r: r.body["generationConfig"]["maxOutputTokens"], 77),
    (
        "gemini",
        "max_completion_tokens",
        {"max_completion_tokens": 77},
        lambda r: r.body["generationConfig"]["maxOutputTokens"],
        77,
    ),
    ("gemini", "stop", {"stop": ["END"]}, lambda r: r.body["generationConfig"]["stopSequences"], ["END"]),
    ("gemini", "temperature", {"temperature": 0.3}, lambda r: r.body["generationConfig"]["temperature"], 0.3),
    ("gemini", "top_p", {"top_p": 0.5}, lambda r: r.body["generationConfig"]["topP"], 0.5),
    ("gemini", "n", {"n": 2}, lambda r: r.body["generationConfig"]["candidateCount"], 2),
    ("gemini", "seed", {"seed": 7}, lambda r: r.body["generationConfig"]["seed"], 7),
    (
        "gemini",
        "presence_penalty",
        {"presence_penalty": 0.5},
        lambda r: r.body["generationConfig"]["presencePenalty"],
        0.5,
    ),
    (
        "gemini",
        "frequency_penalty",
        {"frequency_penalty": 0.5},
        lambda r: r.body["generationConfig"]["frequencyPenalty"],
        0.5,
    ),
    ("gemini", "logprobs", {"logprobs": True}, lambda r: r.body["generationConfig"]["responseLogprobs"], True),
    (
        "gemini",
        "top_logprobs",
        {"logprobs": True, "top_logprobs": 3},
        lambda r: r.body["generationConfig"]["logprobs"],
        3,
    ),
    (
        "gemini",
        "tools",
        {"tools": [TOOL]},
        lambda r: r.body["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather",
    ),
    (
        "gemini",
        "tool_choice",
        {"tools": [TOOL], "tool_choice": "required"},
        lambda r: r.body["toolConfig"]["functionCallingConfig"]["mode"],
        "ANY",
    ),
    (
        "gemini",
        "response_format",
        {"response_format": {"type": "json_object"}},
        lambda r: r.body["generationConfig"]["responseMimeType"],
        "application/json",
    ),
    (
        "gemini",
        "reasoning_effort",
        {"reasoning_effort": "high"},
        lambda r: r.body["generationConfig"]["thinkingConfig"],
        {"thinkingBudget": 24576},
    ),
    ("gemini", "stream", {"stream": True}, lambda r: r.path.endswith(":streamGenerateContent"), True),
    ("bedrock", "max_tokens", {"max_tokens": 77}, lambda r: r.body["inferenceConfig"]["maxTokens"], 77),
    (
        "bedrock",
        "max_completion_tokens",
        {"max_completion_tokens": 77},
        lambda r: r.body["inferenceConfig"]["maxTokens"],
        77,
    ),
    ("bedrock", "stop", {"stop": "END"}, lambda r: r.body["inferenceConfig"]["stopSequences"], ["END"]),
    ("bedrock", "temperature", {"temperature": 0.3}, lambda r: r.body["inferenceConfig"]["temperature"], 0.3),
    ("bedrock", "top_p", {"top_p": 0.5}, lambda r: r.body["inferenceConfig"]["topP"], 0.5),
    (
        "bedrock",
        "tools",
        {"tools": [TOOL]},
        lambda r: r.body["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather",
    ),
    (
        "bedrock",
        "tool_choice",
        {"tools": [TOOL], "tool_choice": "required"},
        lambda r: r.body["toolConfig"]["toolChoice"],
        {"any": {}},
    ),
    (
        "bedrock",
        "response_format",
        {"response_format": {"type": "json_object"}},
        lambda r: r.body["toolConfig"]["toolChoice"],
        {"tool": {"name": STRUCTURED_TOOL}},
    ),
    ("bedrock", "stream", {"stream": True}, lambda r: r.path.endswith("/converse-stream"), True),
]


def test_every_carried_parameter_has_a_case():
    covered = {(kind, name) for kind, name, *_ in CARRIED}
    # messages and model are in every request; stream_options is the gateway's own (the usage chunk).
    expected = {
        (kind, name)
        for kind, table in TABLES.items()
        for name in table.CARRIED - {"messages", "model", "stream_options"}
    }
    assert covered == expected


@pytest.mark.parametrize(
    ("kind", "param", "extra", "read", "expected"), CARRIED, ids=[f"{c[0]}-{c[1]}" for c in CARRIED]
)
def test_a_carried_parameter_reaches_the_providers_own_field(request, kind, param, extra, read, expected):
    fake = request.getfixturevalue(FAKES[kind])
    result = call(kind, fake, chat(**extra), stream=bool(extra.get("stream")))
    assert result.status == 200, getattr(result, "body", b"")
    assert read(fake.requests[-1]) == expected


# --- refused: a 400 naming the parameter, and no upstream call ---------------------------------------------

REFUSED = [(kind, name) for kind, table in TABLES.items() for name in table.REFUSED]
HARMLESS = [(kind, name) for kind, table in TABLES.items() for name, rule in table.REFUSED.items() if rule.harmless]


@pytest.mark.parametrize(("kind", "param"), REFUSED, ids=[f"{k}-{p}" for k, p in REFUSED])
@pytest.mark.parametrize("stream", [False, True], ids=["send", "stream"])
def test_a_parameter_the_provider_cannot_carry_is_a_400_naming_it(request, kind, param, stream):
    fake = request.getfixturevalue(FAKES[kind])
    result = call(kind, fake, chat(**{param: ASKING[param]}), stream=stream)
    assert isinstance(result, UpstreamResult) and result.status == 400
    error = orjson.loads(result.body)["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    harmless = TABLES[kind].REFUSED[param].harmless
    assert error["code"] == ("unsupported_value" if harmless else "unsupported_parameter")
    assert fake.requests == []


@pytest.mark.parametrize(("kind", "param"), HARMLESS, ids=[f"{k}-{p}" for k, p in HARMLESS])
def test_the_default_value_of_a_refused_parameter_asks_for_nothing_and_passes(request, kind, param):
    fake = request.getfixturevalue(FAKES[kind])
    assert call(kind, fake, chat()).status == 200
    baseline = sent(fake)
    value = TABLES[kind].REFUSED[param].harmless[0]
    assert call(kind, fake, chat(**{param: value})).status == 200
    assert sent(fake) == baseline


def test_n_true_is_not_n_1(claude):
    result = call("anthropic", claude, chat(n=True))
    assert result.status == 400 and orjson.loads(result.body)["error"]["param"] == "n"


# --- ignored: the request succeeds, and the provider never sees it ------------------------------------------

IGNORED = [(kind, name) for kind, table in TABLES.items() for name in sorted(table.IGNORED)]


@pytest.mark.parametrize(("kind", "param"), IGNORED, ids=[f"{k}-{p}" for k, p in IGNORED])
def test_an_ignored_parameter_succeeds_and_is_not_sent(request, kind, param):
    fake = request.getfixturevalue(FAKES[kind])
    assert call(kind, fake, chat()).status == 200
    baseline = sent(fake)
    assert call(kind, fake, chat(**{param: IGNORABLE[param]})).status == 200
    assert sent(fake) == baseline


# --- value-level refusals inside the translation also name their parameter ----------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "param"),
    [
        ("anthropic", {"response_format": {"type": "json_object"}, "tools": [TOOL]}, "response_format"),
        ("bedrock", {"response_format": {"type": "json_object"}, "tools": [TOOL]}, "response_format"),
        ("anthropic", {"response_format": {"type": "yaml"}}, "response_format"),
        ("gemini", {"response_format": {"type": "yaml"}}, "response_format"),
        ("anthropic", {"reasoning_effort": "extreme"}, "reasoning_effort"),
        ("gemini", {"reasoning_effort": "extreme"}, "reasoning_effort"),
        ("anthropic", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
        ("gemini", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
        ("bedrock", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_value_the_translation_cannot_express_names_its_parameter(request, kind, extra, param):
    fake = request.getfixturevalue(FAKES[kind])
    result = call(kind, fake, chat(**extra))
    assert result.status == 400
    assert orjson.loads(result.body)["error"]["param"] == param
    assert fake.requests == []


# --- Gemini: reasoning_effort for Gemini 3, and log probabilities back ---------------------------------------


@pytest.mark.parametrize(("effort", "level"), [("low", "low"), ("high", "high"), ("none", "minimal")])
def test_gemini_3_takes_reasoning_effort_as_its_thinking_level(effort, level):
    body = gemini.to_gemini(chat(reasoning_effort=effort), "models/gemini-3-pro-preview")
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": level}


def test_gemini_log_probabilities_come_back_in_openais_shape():
    data = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hi!"}]},
                "finishReason": "STOP",
                "logprobsResult": {
                    "chosenCandidates": [
                        {"token": "Hi", "logProbability": -0.1},
                        {"token": "!", "logProbability": -0.5},
                    ],
                    "topCandidates": [
                        {
                            "candidates": [
                                {"token": "Hi", "logProbability": -0.1},
                                {"token": "Hey", "logProbability": -2.5},
                            ]
                        },
                        {"candidates": [{"token": "!", "logProbability": -0.5}]},
                    ],
                },
            }
        ]
    }
    choice = to_openai_completion(data, "gemini-2.0-flash", "req-1")["choices"][0]
    assert choice["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
                ],
            },
            {
                "token": "!",
                "logprob": -0.5,
                "bytes": [33],
                "top_logprobs": [{"token": "!", "logprob": -0.5, "bytes": [33]}],
            },
        ],
        "refusal": None,
    }
    del data["candidates"][0]["logprobsResult"]
    assert to_openai_completion(data, "gemini-2.0-flash", "req-1")["choices"][0]["logprobs"] is None
