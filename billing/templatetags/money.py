"""Money in templates: rounded for reading (billing.display), with the exact amount one hover away."""

from __future__ import annotations

from decimal import Decimal

from django import template

from billing.display import display_usd
from gateway_project.common.money import format_usd

register = template.Library()


@register.filter
def usd(amount: Decimal | None) -> str:
    """$12.35 for dollars, $0.0042 for the fractions of a cent that small tenants mostly spend."""
    if amount is None:
        return ""
    text = display_usd(amount)
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


@register.filter
def usd_exact(amount: Decimal | None) -> str:
    # The ledger is exact to the picodollar; finance can check a rounded figure against this.
    return "" if amount is None else f"${format_usd(Decimal(amount))}"
