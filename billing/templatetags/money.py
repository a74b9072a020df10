"""Money in templates: rounded for reading, with the exact amount one hover away."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

from billing.prices import format_usd

register = template.Library()


@register.filter
def usd(amount: Decimal | None) -> str:
    """$12.35 for dollars, $0.0042 for the fractions of a cent that small tenants mostly spend."""
    if amount is None:
        return ""
    amount = Decimal(amount)
    step = Decimal("0.01") if abs(amount) >= 1 or amount == 0 else Decimal("0.0001")
    return f"${amount.quantize(step, rounding=ROUND_HALF_UP):,}"


@register.filter
def usd_exact(amount: Decimal | None) -> str:
    # The ledger is exact to the picodollar; finance can check a rounded figure against this.
    return "" if amount is None else f"${format_usd(Decimal(amount))}"
