"""When the provider reports no usage (the client left, a stream was cut before its usage chunk), the
cost is estimated, marked, and never more than the complete call would have cost."""

from __future__ import annotations

from decimal import Decimal

import orjson

from gateway_project.common.money import Price, to_pico
from proxy.call import Call as CallRecord
from proxy.snapshot import Deployment

PRICE = Price(input=Decimal("1000"), output=Decimal("2000"))


def record(**values) -> CallRecord:
    rec = CallRecord("r", "chat/completions", 0.0)
    rec.deployment = Deployment(1, "m", "main", "openai", "", "", "m", price=PRICE)
    rec.status = 200
    for name, value in values.items():
        setattr(rec, name, value)
    return rec


def test_reported_usage_is_exact():
    rec = record()
    rec.set_usage({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
    assert rec._cost() == (to_pico(Decimal("0.02")), False, 15)


def test_a_stream_without_usage_counts_the_relayed_text_at_the_family_rate():
    # 2 events carrying 30 bytes of text: about 8 tokens at 4 characters per token, not 2.
    cost, estimated, tokens = record(prompt_estimate=4, content_events=2, content_bytes=30)._cost()
    assert estimated and tokens == 12
    assert cost == to_pico(Decimal("0.004") + Decimal("0.016"))


def test_a_stream_without_usage_counts_one_token_per_event_past_the_frames():
    # Tool-call arguments are not "content": events past the role and finish frames count one each.
    _cost, estimated, tokens = record(prompt_estimate=4, content_events=9, content_bytes=3)._cost()
    assert estimated and tokens == 11


def test_the_prompt_is_estimated_from_the_messages_by_the_model_family():
    payload = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 5}
    rec = record(prompt_estimate=999, content_events=40, content_bytes=400, payload=payload)
    _cost, estimated, tokens = rec._cost()
    # 3 + (3 + 400/4) prompt tokens, and the output capped by the request's max_tokens.
    assert estimated and tokens == 106 + 5
    claude = record(prompt_estimate=999, content_events=0, payload=payload)
    claude.deployment = Deployment(2, "m", "claude", "anthropic", "", "", "m", price=PRICE)
    assert claude._cost()[2] == 3 + 3 + 115  # 400 / 3.5, rounded up


def test_a_stream_cut_after_two_of_six_chunks_costs_less_than_the_whole_call():
    # What the fake upstream answers for this prompt: 9 + len/4 prompt tokens, one token per word.
    messages = [{"role": "user", "content": "Tell Alice about the acme account, briefly."}]
    whole = record()
    whole.set_usage({"prompt_tokens": 9 + len(messages[0]["content"]) // 4, "completion_tokens": 6, "total_tokens": 0})
    # Cut after the role chunk and two words ("Hello", " from"): 10 bytes of text over 3 events.
    payload = {"model": "m", "stream": True, "messages": messages}
    body_estimate = len(orjson.dumps(payload)) // 3 + 1  # what admission reserves for: an upper bound
    cut = record(prompt_estimate=body_estimate, content_events=3, content_bytes=10, payload=payload)
    assert cut._cost()[1] is True
    assert cut._cost()[0] < whole._cost()[0]


def test_an_absurd_usage_report_is_treated_as_no_usage():
    rec = record(prompt_estimate=4, content_events=1)
    rec.set_usage({"prompt_tokens": 2**40, "completion_tokens": 1, "total_tokens": 2**40 + 1})
    assert rec.prompt_tokens is None
    assert rec._cost()[1] is True


def test_refused_calls_cost_nothing():
    assert record(status=429)._cost() == (0, False, 0)
