"""Exact money: Decimal prices, cost arithmetic, model id matching, tenant overrides."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway_project.common.money import Price, find_price, format_usd, from_pico, shipped_prices, to_pico


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
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
    ],
)
def test_provider_model_ids_find_their_price(model, expected):
    table = shipped_prices()
    assert find_price(model, table) is table[expected]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # Bedrock model ids: vendor prefix, release date and a ":0" version suffix.
        ("anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4"),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku"),
        ("anthropic.claude-opus-4-1-20250805-v1:0", "anthropic.claude-opus-4-1"),
        # Cross-region inference profiles put a region or "global." in front.
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5"),
        ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-3-7-sonnet"),
        ("apac.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4"),
        ("global.anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-opus-4-5"),
        ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5"),
        ("us.amazon.nova-pro-v1:0", "amazon.nova-pro"),
        # A profile prefix and a snapshot the table doesn't list: the longest known prefix.
        ("us.anthropic.claude-opus-4-0-v1:0", "anthropic.claude-opus-4"),
    ],
)
def test_bedrock_ids_with_region_prefixes_and_version_suffixes_find_their_price(model, expected):
    table = shipped_prices()
    assert find_price(model, table) is table[expected]


@pytest.mark.parametrize(
    ("model", "expected_input"),
    [
        # Longest-prefix matching would otherwise bill these at their cheaper family head's price.
        ("o3-pro", "20.00"),
        ("o1-pro-2025-03-19", "150.00"),
        ("gpt-5-pro", "15.00"),
        ("o1-mini-2024-09-12", "1.10"),
        ("claude-opus-4-5-20251101", "5.00"),
    ],
)
def test_premium_and_cheaper_siblings_are_not_priced_as_their_prefix(model, expected_input):
    assert find_price(model, shipped_prices()).input == Decimal(expected_input)


def test_anthropic_rows_price_cache_reads_at_a_tenth_and_writes_at_a_quarter_more():
    for name, price in shipped_prices().items():
        # Claude 3 Haiku's published cache prices are rounded (0.03 and 0.30 for 0.025 and 0.3125).
        if (
            name.startswith(("claude-", "anthropic.claude-"))
            and price.cache_write is not None
            and "3-haiku" not in name
        ):
            assert price.cached_input == price.input / 10, name
            assert price.cache_write == price.input * Decimal("1.25"), name


def test_base_model_prices_a_custom_bedrock_deployment_name():
    from zoneinfo import ZoneInfo

    from proxy.loader import MoneyConfig

    config = MoneyConfig(tz=ZoneInfo("UTC"), prices=dict(shipped_prices()))
    # Alice's provisioned-throughput ARN has no row of its own; its base_model names the model.
    arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
    assert config.price_for(arn) is None
    price = config.price_for(arn, "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert price is shipped_prices()["anthropic.claude-sonnet-4-5"]


def test_every_price_family_cites_its_source():
    from gateway_project.common.money import price_families

    for name, family in price_families().items():
        assert family["source"] and family["models"], name
        if name != "mock":
            assert all(url.startswith("https://") for url in family["source"]), name


def test_unknown_models_have_no_price():
    assert find_price("my-finetune", shipped_prices()) is None


def test_every_supported_provider_family_ships_prices():
    from gateway_project.common.money import price_families

    assert set(price_families()) >= {"openai", "anthropic", "gemini", "bedrock", "mock"}


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
    from proxy.admission import MEDIA_PART_TOKENS, prompt_ceiling

    text = b'{"messages": [{"role": "user", "content": "a a a a a a"}]}'
    assert prompt_ceiling(text) == len(text)
    image = b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}'
    # "image_url" appears twice (type and key): counted generously, never under.
    assert prompt_ceiling(image) >= len(image) + MEDIA_PART_TOKENS


def test_worst_case_integer_path_matches_decimal_arithmetic() -> None:
    # Admission uses integer picodollar rates when a price has at most six decimals; the answer must be
    # exactly the Decimal one, rounded up, for prices of every shape (and Decimal past six decimals).
    import random

    from gateway_project.common.money import MILLION, to_nanos_ceil

    rng = random.Random(7)
    rates = ["0", "0.000001", "0.0000001", "0.0375", "0.15", "0.6", "1.23456789", "2.5", "75"]
    for _ in range(5000):
        write = rng.choice([None, *rates])
        price = Price(
            Decimal(rng.choice(rates)),
            Decimal(rng.choice(rates)),
            None,
            Decimal(write) if write is not None else None,
        )
        prompt, out = rng.randint(0, 10**7), rng.randint(0, 10**6)
        prompt_rate = max(price.input, price.cache_write or price.input)
        expected = to_nanos_ceil((prompt * prompt_rate + out * price.output) / MILLION)
        assert price.worst_case_nanos(prompt, out) == expected
    assert Price(Decimal("1.23456789"), Decimal("0")).int_rates is None
    assert Price(Decimal("0.15"), Decimal("0.6")).int_rates == (150_000, 600_000)
