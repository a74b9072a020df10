"""The price table and exact cost arithmetic. Money is Decimal, never float.

Prices are USD per million tokens, shipped in data/prices.json for the current models of every
provider family, with per-tenant overrides (negotiated prices) from billing.PriceOverride.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from functools import cache
from pathlib import Path
from typing import Any

MILLION = Decimal(1_000_000)
PICO = Decimal(10**12)
# Budgets are counted in Redis as integer nano-dollars (Lua numbers are doubles: exact to 2**53,
# i.e. about 9 million USD per counter). Reservations round up, so a budget is never overshot.
NANO = Decimal(1_000_000_000)
DEFAULT_MAX_OUTPUT = 16_384
_ID_PREFIX = re.compile(r"^(models/|(us|eu|apac|global|jp|au|ca|us-gov)\.)")
_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-v\d+(:\d+)?|-latest|-preview(-\d{2}-\d{4})?)$")


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    max_output: int = DEFAULT_MAX_OUTPUT
    # Derived once (see worst_case_nanos); not part of the price's identity.
    int_rates: tuple[int, int] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "int_rates", _worst_case_rates(self))

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> Decimal:
        """Exact cost of one call. Cached and cache-write tokens are part of prompt_tokens (OpenAI's
        convention) and are billed at their own rate instead of the input rate."""
        cached = min(cached_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        plain = prompt_tokens - cached - written
        total = plain * self.input + completion_tokens * self.output
        total += cached * (self.cached_input if self.cached_input is not None else self.input)
        total += written * (self.cache_write if self.cache_write is not None else self.input)
        return total / MILLION

    def worst_case_nanos(self, prompt_tokens: int, max_output: int | None) -> int:
        out = max_output if max_output is not None else self.max_output
        rates = self.int_rates
        if rates is not None:
            # Every admission with a hard budget asks this: integer picodollars per token give the
            # same exact answer as the Decimal below at a fraction of its cost.
            pico = prompt_tokens * rates[0] + out * rates[1]
            return -(-pico // 1000)
        # Prompt tokens may turn out to be cache writes, billed above the input price.
        prompt_rate = max(self.input, self.cache_write or self.input)
        cost = (prompt_tokens * prompt_rate + out * self.output) / MILLION
        return to_nanos_ceil(cost)


def _worst_case_rates(price: Price) -> tuple[int, int] | None:
    """(prompt, output) rates in integer picodollars per token, or None when a price has more than six
    decimals (USD per million tokens) and only Decimal is exact."""
    prompt_rate = max(price.input, price.cache_write or price.input)
    pico = (prompt_rate * MILLION, price.output * MILLION)  # USD per million tokens -> pico USD per token
    return (int(pico[0]), int(pico[1])) if all(v == v.to_integral_value() for v in pico) else None


def to_pico(amount: Decimal) -> int:
    """USD -> integer picodollars, rounded up (costs are exact at this scale; see billing.models)."""
    return int((amount * PICO).to_integral_value(rounding=ROUND_CEILING))


def from_pico(value: int) -> Decimal:
    return Decimal(value) / PICO


def to_nanos_ceil(amount: Decimal) -> int:
    return int((amount * NANO).to_integral_value(rounding=ROUND_CEILING))


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def price_families() -> dict[str, dict[str, Any]]:
    """The shipped table as data/prices.json holds it: one block per provider family, with its sources."""
    table = Path(__file__).parent / "data" / "prices.json"
    families: dict[str, dict[str, Any]] = json.loads(table.read_text())["families"]
    return families


@cache
def shipped_prices() -> dict[str, Price]:
    out = {}
    for family in price_families().values():
        for model, row in family["models"].items():
            out[model] = Price(
                input=Decimal(row["input"]),
                output=Decimal(row["output"]),
                cached_input=_dec(row.get("cached_input")),
                cache_write=_dec(row.get("cache_write")),
                max_output=int(row.get("max_output", DEFAULT_MAX_OUTPUT)),
            )
    return out


def find_price(model: str, table: dict[str, Price]) -> Price | None:
    """Exact id, then without a Bedrock region/profile or Gemini "models/" prefix, then without a
    date/version suffix (gpt-4o-mini-2024-07-18, anthropic.claude-...-20250929-v1:0), then the longest
    known prefix (claude-opus-4-0 -> claude-opus-4)."""
    if model in table:
        return table[model]
    # Bedrock cross-region inference profiles prefix the model id ("us.anthropic.claude-..."): the
    # shipped rows are the global on-demand prices (see data/prices.json).
    stripped = _ID_PREFIX.sub("", model)
    if stripped in table:
        return table[stripped]
    for _ in range(3):
        shorter = _DATE_SUFFIX.sub("", stripped)
        if shorter == stripped:
            break
        stripped = shorter
        if stripped in table:
            return table[stripped]
    best = max((name for name in table if stripped.startswith(name + "-")), key=len, default=None)
    return table[best] if best else None


def format_usd(amount: Decimal) -> str:
    """An exact decimal string without exponent or trailing zeros: Decimal('0.01230') -> '0.0123'."""
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")


def pico_to_nanos_ceil(picodollars: int) -> int:
    """Ledger units (1e-12 USD) to budget counter units (1e-9 USD), rounded up: never under-counts."""
    return -(-picodollars // 1000)
