"""Exact money: Decimal prices, cost arithmetic, model id matching, tenant overrides."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.prices import Price, find_price, format_usd, from_pico, shipped_prices, to_pico


def test_cost_is_exact_decimal_arithmetic():
    price = Price(input=Decimal("0.15"), output=Decimal("0.60"), cached_input=Decimal("0.075"))
    cost = price.cost(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    # 600 plain x 0.15 + 400 cached x 0.075 + 500 x 0.60, per million tokens
    assert cost == Decimal("0.00042")
    assert isinstance(cost, Decimal)
    assert from_pico(to_pico(cost)) == cost


def test_cache_writes_are_billed_at_their_own_rate():
    price = Price(input=Decimal("3"), output=Decimal("15"), cached_input=Decimal("0.30"), cache_write=Decimal("3.75"))
    assert price.cost(prompt_tokens=1000, completion_tokens=0, cached_tokens=200, cache_write_tokens=300) == Decimal(
        "0.002685"
    )


def test_worst_case_reservation_rounds_up_and_uses_the_output_cap():
    price = Price(input=Decimal("0.15"), output=Decimal("0.60"), max_output=16384)
    assert price.worst_case_nanos(10, None) == 9_831_900  # (10 x 0.15 + 16384 x 0.60) / 1e6 USD
    assert price.worst_case_nanos(10, 5) == 4_500
    assert Price(input=Decimal("0.0375"), output=Decimal("0")).worst_case_nanos(1, 0) == 38  # 37.5 nano rounds up


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ],
)
def test_provider_model_ids_find_their_price(model, expected):
    table = shipped_prices()
    assert find_price(model, table) is table[expected]


def test_unknown_models_have_no_price():
    assert find_price("my-finetune", shipped_prices()) is None


def test_every_supported_provider_family_ships_prices():
    import json
    from pathlib import Path

    import billing

    data = json.loads((Path(billing.__file__).parent / "data" / "prices.json").read_text())["models"]
    assert {row["provider"] for row in data.values()} >= {"openai", "anthropic", "gemini", "bedrock", "mock"}


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.01230"), "0.0123"),
        (Decimal(0), "0"),
        (Decimal("12.5"), "12.5"),
        (Decimal("1E-12"), "0.000000000001"),
    ],
)
def test_usd_strings_are_exact_and_plain(amount, text):
    assert format_usd(amount) == text


def test_the_worst_case_prices_prompt_tokens_as_possible_cache_writes():
    price = Price(input=Decimal("3"), output=Decimal("15"), cache_write=Decimal("3.75"))
    assert price.worst_case_nanos(1000, 0) == 3_750_000  # 1000 x 3.75 USD per million


def test_the_prompt_ceiling_counts_bytes_and_media_parts():
    from proxy.money import MEDIA_PART_TOKENS, prompt_ceiling

    text = b'{"messages": [{"role": "user", "content": "a a a a a a"}]}'
    assert prompt_ceiling(text) == len(text)
    image = b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}'
    # "image_url" appears twice (type and key): counted generously, never under.
    assert prompt_ceiling(image) >= len(image) + MEDIA_PART_TOKENS
