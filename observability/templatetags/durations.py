"""`{{ value|ms }}`: a duration in milliseconds with the digits it needs. Sub-millisecond calls (a cache
hit, a refusal) keep theirs: rounding them to "0 ms" hid them on the dashboard and the A/B panel."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def ms(value: float | None) -> str:
    """An em dash for no calls, "<0.1" below 0.1 ms (there was traffic: never "0"), then 0.37, 4.3, 16, 12,346."""
    if value is None:
        return "—"
    if value < 0.1:
        return "<0.1"
    if value < 1:
        return f"{value:.2f}"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"
