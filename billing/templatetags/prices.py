"""Price facts in console pages that belong to other apps (routing's models list and model page).

Routing may not import billing (billing depends on routing), so routing's templates ask billing
through these tags instead of routing's selectors computing the flag.
"""

from __future__ import annotations

from django import template

from billing.selectors import deployment_has_price, price_table_for
from gateway_project.common.money import Price

register = template.Library()


@register.simple_tag
def price_table(tenant) -> dict[str, Price]:
    """One read per page (the tenant's overrides), then every deployment is checked in memory."""
    return price_table_for(tenant.id)


@register.filter
def unpriced(deployment, table: dict[str, Price]) -> bool:
    return not deployment_has_price(deployment.upstream_model, deployment.base_model, table)
