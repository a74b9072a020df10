"""The `billing:` section of the tenant YAML: the tenant's plan.

    billing: {base_fee_usd: 49, markup_percent: 10, included_usd: 0}

Absent, the plan stays as it is; present, it is the whole plan (a field left out is 0, lines per model).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from billing.invoicing.services import MAX_MARKUP_PERCENT, MAX_PLAN_USD, plan_amount_error, plan_set
from billing.models import LineGrouping, Plan
from tenants.audit import Actor
from tenants.config import EXTENSIONS
from tenants.models import Tenant

FIELDS = {"base_fee_usd", "markup_percent", "included_usd", "line_grouping"}


def _amount(value: Any, path: str, c: Any, maximum: Decimal) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise c.fail(f"expected a number, got {type(value).__name__}", path)
    try:
        # str() first: YAML floats like 0.15 must become Decimal("0.15"), not its binary neighbour.
        number = Decimal(str(value))
    except InvalidOperation:
        raise c.fail(f"{value!r} is not a number", path) from None
    problem = plan_amount_error(number, maximum=maximum)
    if problem:
        raise c.fail(problem, path)
    return number


def parse_billing(value: Any, path: str, c: Any) -> dict:
    c.mapping(value, path, FIELDS, set())
    out: dict[str, Any] = {}
    for name, maximum in (
        ("base_fee_usd", MAX_PLAN_USD),
        ("markup_percent", MAX_MARKUP_PERCENT),
        ("included_usd", MAX_PLAN_USD),
    ):
        out[name] = _amount(value[name], f"{path}.{name}", c, maximum) if value.get(name) is not None else Decimal(0)
    grouping = value.get("line_grouping", LineGrouping.MODEL)
    if grouping not in LineGrouping.values:
        raise c.fail(f"must be one of {', '.join(LineGrouping.values)}", f"{path}.line_grouping")
    out["line_grouping"] = grouping
    return out


def apply_billing(tenant: Tenant, plan: dict | None, *, actor: Actor) -> list[str]:
    if plan is None:
        return []
    return ["~ billing"] if plan_set(tenant, actor=actor, **plan) else []


def _number(value: Decimal) -> int | float:
    # Plain YAML numbers (49, 10.5), which parse_billing reads back exactly through str().
    return int(value) if value == value.to_integral_value() else float(value)


def export_billing(tenant: Tenant) -> dict | None:
    plan = Plan.objects.filter(tenant=tenant).first()
    if plan is None:
        return None
    out: dict[str, Any] = {
        "base_fee_usd": _number(plan.base_fee_usd),
        "markup_percent": _number(plan.markup_percent),
        "included_usd": _number(plan.included_usd),
    }
    if plan.line_grouping != LineGrouping.MODEL:
        out["line_grouping"] = plan.line_grouping
    return out


apply_billing.export = export_billing  # type: ignore[attr-defined]


def register() -> None:
    EXTENSIONS["billing"] = (parse_billing, apply_billing)
