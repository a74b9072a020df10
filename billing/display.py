"""Money for people to read: short, but never a non-zero amount shown as zero.

Whole cents for amounts of a cent or more; below a cent, two significant digits, because small tenants
and test budgets live there ("0.00005 USD", not "0.00 USD"). Exact Decimal arithmetic throughout;
the exact figure stays available through gateway_project.common.money.format_usd.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def display_usd(amount: Decimal | int | str | None) -> str:
    """'12.35', '1,234.00', '0.0042', '0.00005'; '' for None. No currency sign: callers add "$" or " USD"."""
    if amount is None:
        return ""
    amount = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if amount == 0:
        return "0.00"
    if abs(amount) >= CENT:
        return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"
    # Two significant digits: quantize at the exponent of the second digit (0.0000523 -> 0.000052).
    step = Decimal(1).scaleb(amount.adjusted() - 1)
    rounded = amount.quantize(step, rounding=ROUND_HALF_UP)
    # 0.0040 reads better as 0.004; normalize() never drops a significant digit.
    return format(rounded.normalize(), "f")
