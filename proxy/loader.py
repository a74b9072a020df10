"""Every database read that builds the proxy's in-process tenant config: prices, limits and budgets.

Runs in a worker thread when a tenant is (re)loaded, never per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from billing.selectors import tenant_timezone
from gateway_project.common.money import NANO, Price, find_price, pico_to_nanos_ceil, shipped_prices
from proxy.limits import limiter
from proxy.state import BudgetSpec


@dataclass
class MoneyConfig:
    tz: ZoneInfo
    prices: dict[str, Price]
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None
    deployment_limits: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    budgets: list = field(default_factory=list)

    def price_for(self, upstream_model: str, base_model: str = "") -> Price | None:
        """The deployment's price: its base_model's when set (a custom upstream id has no entry of its
        own), else the upstream model's. An unknown base_model is not priced as the upstream id: the
        operator named the model on purpose, so a typo shows up as "no known price" instead."""
        return find_price(base_model or upstream_model, self.prices)


def load_money_config(tenant_id: int) -> MoneyConfig:
    from billing.models import Budget, LimitScope, PriceOverride, RateLimit

    prices = dict(shipped_prices())
    for o in PriceOverride.objects.filter(tenant_id=tenant_id):
        prices[o.model] = Price(
            input=o.input,
            output=o.output,
            cached_input=o.cached_input,
            cache_write=o.cache_write,
            max_output=prices[o.model].max_output if o.model in prices else Price(o.input, o.output).max_output,
        )
    config = MoneyConfig(tz=tenant_timezone(tenant_id), prices=prices)
    for limit in RateLimit.objects.filter(tenant_id=tenant_id).exclude(scope=LimitScope.KEY):
        if limit.scope == LimitScope.TENANT:
            config.tenant_rpm, config.tenant_tpm = limit.rpm, limit.tpm
        elif limit.scope == LimitScope.DEPLOYMENT and limit.ref.isdigit():
            config.deployment_limits[int(limit.ref)] = (limit.rpm, limit.tpm)
    for budget in Budget.objects.filter(tenant_id=tenant_id):
        kind, _, value = budget.scope.partition(":")
        spec = BudgetSpec(
            id=budget.id,
            scope_kind=kind,
            scope_value=value,
            limit_nanos=int(budget.limit_usd * NANO),
            period=budget.period,
            hard=budget.mode == "hard",
            alert_at=tuple(sorted(int(a) for a in budget.alert_at)),
        )
        # The period's counter is started from the ledger by admission, when it finds none
        # (proxy.money._admit_seeding): a new period, a new budget or a Redis restart alike.
        config.budgets.append(spec)
    return config


def budget_counter_key(budget_id: int, period: str) -> str:
    return f"gw:b:{budget_id}:{period}"


def seed_budget_counter(budget_id: int, counter_key: str, tz: ZoneInfo, now: datetime) -> None:
    """Start a budget period's counter from the ledger (SET NX: a live counter is never overwritten)."""
    from billing.models import Budget
    from billing.selectors import spent_in_period_pico

    budget = Budget.objects.filter(id=budget_id).first()
    spent = spent_in_period_pico(budget, now=now, tz=tz) if budget else 0
    limiter().seed_spent(counter_key, pico_to_nanos_ceil(spent))
