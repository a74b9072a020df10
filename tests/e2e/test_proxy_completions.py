"""OpenAI's legacy completions (/v1/completions) through the real server with the official openai SDK:
relayed as sent to deployments that have the endpoint (echo, logprobs, suffix, several prompts), served
by the chat pipeline elsewhere (another kind, or a data policy on the route), JSON and streamed, what
chat models cannot do refused there with a 400 naming the parameter, logged and billed as `completions`."""

from __future__ import annotations

import json

import openai
import pytest
from django.db.models import Sum

from billing.models import SpendLedger
from observability.models import CallLog
from tests.helpers import wait_for
from tests.openapi import validate

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_gets_completions_relayed_json_and_streamed(gateway, acme, mint, upstream):
    """Acme's gpt-4o-mini is an OpenAI-compatible deployment with no data policy: the client's own body
    goes to its /completions (the model swapped), and the answer and chunks come back as they are."""
    client = client_for(gateway, mint(acme))
    raw = client.completions.with_raw_response.create(model="gpt-4o-mini", prompt="Say hello", max_tokens=20)
    completion = raw.parse()
    validate(json.loads(raw.http_response.content), "CreateCompletionResponse")
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-fake")
    assert completion.choices[0].text == "Hello from the fake upstream."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 6
    sent = upstream.requests[-1]
    assert sent.path == "/v1/completions"
    assert sent.body == {"model": "gpt-4o-mini", "prompt": "Say hello", "max_tokens": 20}

    # What only the upstream's own completions can do works when relayed: echo, logprobs, suffix,
    # several prompts, n.
    echoed = client.completions.create(
        model="gpt-4o-mini", prompt=["Say hello", "Say bye"], echo=True, logprobs=1, suffix="!", n=2
    )
    assert [c.text for c in echoed.choices] == ["Say hello" + "Hello from the fake upstream."] * 2 + [
        "Say bye" + "Hello from the fake upstream."
    ] * 2
    assert echoed.choices[0].logprobs.tokens[0] == "Hello" and echoed.usage.completion_tokens == 24
    assert upstream.requests[-1].body["suffix"] == "!"

    # A stream: the gateway asks for usage (to bill) and hides the usage chunk the client did not ask for.
    plain = list(client.completions.create(model="gpt-4o-mini", prompt="Say hello", stream=True))
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].text for c in plain) == "Hello from the fake upstream."
    assert all(c.choices for c in plain)
    chunks = list(
        client.completions.create(
            model="gpt-4o-mini", prompt=["Say hello"], stream=True, stream_options={"include_usage": True}
        )
    )
    for chunk in chunks:
        # Like OpenAI's own stream, chunks before the last carry finish_reason null, which the spec's
        # (shared) response schema does not allow: the last text chunk and the usage chunk are checked.
        if not chunk.choices or chunk.choices[0].finish_reason is not None:
            validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

    request_id = raw.headers["x-request-id"]
    assert wait_for(lambda: CallLog.objects.filter(request_id=request_id).exists())
    log = CallLog.objects.get(request_id=request_id)
    assert log.endpoint == "completions" and log.status_code == 200 and log.cost_picodollars is not None
    assert log.completion_tokens == 6
    assert wait_for(lambda: CallLog.objects.filter(endpoint="completions").count() == 4)
    streamed = CallLog.objects.filter(endpoint="completions").order_by("-id")[1]
    assert streamed.completion_tokens == 6  # billed from the usage the gateway asked for
    billed = SpendLedger.objects.filter(tenant=acme).aggregate(s=Sum("cost_picodollars"))["s"]
    assert billed == CallLog.objects.filter(tenant=acme).aggregate(s=Sum("cost_picodollars"))["s"]


TRANSLATED = """
tenant: initech
name: Initech
providers:
  - {{name: main, kind: openai-compatible, base_url: '{url}', api_key: env:FAKE_UPSTREAM_KEY}}
models:
  - name: gpt-4o-mini
    deployments: [{{provider: main, model: gpt-4o-mini}}]
pii:
  mode: enforce
  detectors: {{email: redact}}
"""


def test_with_a_data_policy_completions_are_translated_to_chat(gateway, mint, upstream, monkeypatch):
    """Peter's initech redacts e-mails: the policy reads and rewrites chat payloads, so the request is
    served as chat (the address never leaves), echo included, and answered as a text_completion."""
    from tenants.config import apply_config
    from tests.helpers import UPSTREAM_KEY

    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    initech, _ = apply_config(TRANSLATED.format(url=upstream.base_url))
    client = client_for(gateway, mint(initech, name="peter-app"))
    raw = client.completions.with_raw_response.create(model="gpt-4o-mini", prompt="Mail peter@initech.test", echo=True)
    validate(json.loads(raw.http_response.content), "CreateCompletionResponse")
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions" and "peter@initech.test" not in json.dumps(sent.body)
    assert sent.body["max_tokens"] == 16  # the legacy default
    assert raw.parse().choices[0].text == "Mail peter@initech.test" + "Hello from the fake upstream."
    chunks = list(client.completions.create(model="gpt-4o-mini", prompt="Say hello", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream."
    assert wait_for(lambda: CallLog.objects.filter(tenant=initech, endpoint="completions").count() == 2)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"suffix": "and then"}, "suffix"),
        ({"logprobs": 2}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": [[1, 2, 3]]}, "prompt"),
        ({"prompt": ["one", "two"]}, "prompt"),
    ],
)
def test_what_a_chat_model_cannot_honour_is_a_400_naming_the_parameter(gateway, acme, mint, upstream, kwargs, param):
    """`local` is served by the built-in mock, through chat: what only a relay can serve is refused."""
    sent = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway, mint(acme)).completions.create(**{"model": "local", "prompt": "hi", **kwargs})
    assert caught.value.body["param"] == param
    validate({"error": caught.value.body}, "ErrorResponse")
    assert len(upstream.requests) == sent  # never forwarded


def test_the_built_in_mock_serves_completions_too(gateway, acme, mint):
    completion = client_for(gateway, mint(acme)).completions.create(model="local", prompt="ping", max_tokens=50)
    assert "mock" in completion.choices[0].text and completion.model
