"""When the provider reports no usage, the cost is estimated on the high side and marked."""

from __future__ import annotations

from decimal import Decimal

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


def test_a_stream_without_usage_counts_content_bytes_when_chunks_carry_several_tokens():
    # 2 events carrying 30 bytes of text: at least 10 tokens, not 2.
    cost, estimated, tokens = record(prompt_estimate=4, content_events=2, content_bytes=30)._cost()
    assert estimated and tokens == 14
    assert cost == to_pico(Decimal("0.004") + Decimal("0.020"))


def test_a_stream_without_usage_counts_one_token_per_event_at_least():
    _cost, estimated, tokens = record(prompt_estimate=4, content_events=9, content_bytes=3)._cost()
    assert estimated and tokens == 13


def test_an_absurd_usage_report_is_treated_as_no_usage():
    rec = record(prompt_estimate=4, content_events=1)
    rec.set_usage({"prompt_tokens": 2**40, "completion_tokens": 1, "total_tokens": 2**40 + 1})
    assert rec.prompt_tokens is None
    assert rec._cost()[1] is True


def test_refused_calls_cost_nothing():
    assert record(status=429)._cost() == (0, False, 0)
