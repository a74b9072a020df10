"""OpenAI's legacy completions (/v1/completions) through the real server with the official openai SDK:
served by the chat pipeline on any provider kind, JSON and streamed, echo honoured, what chat models
cannot do refused with a 400 naming the parameter, logged and billed as `completions`."""

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


def test_the_openai_sdk_gets_completions_json_and_streamed(gateway, acme, mint, upstream):
    client = client_for(gateway, mint(acme))
    raw = client.completions.with_raw_response.create(model="gpt-4o-mini", prompt="Say hello", max_tokens=20)
    completion = raw.parse()
    validate(json.loads(raw.http_response.content), "CreateCompletionResponse")
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "Hello from the fake upstream."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 6
    sent = upstream.requests[-1].body
    assert sent["messages"] == [{"role": "user", "content": "Say hello"}] and sent["max_tokens"] == 20

    # The legacy default of 16 tokens, and echo: the prompt comes first in the text.
    echoed = client.completions.create(model="gpt-4o-mini", prompt="Say hello", echo=True)
    assert upstream.requests[-1].body["max_tokens"] == 16
    assert echoed.choices[0].text == "Say hello" + "Hello from the fake upstream."

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
    assert wait_for(lambda: CallLog.objects.filter(endpoint="completions").count() == 3)
    billed = SpendLedger.objects.filter(tenant=acme).aggregate(s=Sum("cost_picodollars"))["s"]
    assert billed == CallLog.objects.filter(tenant=acme).aggregate(s=Sum("cost_picodollars"))["s"]


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
    sent = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway, mint(acme)).completions.create(**{"model": "gpt-4o-mini", "prompt": "hi", **kwargs})
    assert caught.value.body["param"] == param
    validate({"error": caught.value.body}, "ErrorResponse")
    assert len(upstream.requests) == sent  # never forwarded


def test_the_built_in_mock_serves_completions_too(gateway, acme, mint):
    completion = client_for(gateway, mint(acme)).completions.create(model="local", prompt="ping", max_tokens=50)
    assert "mock" in completion.choices[0].text and completion.model
