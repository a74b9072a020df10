"""The order in which a model's deployments are tried, one function per routing strategy.

Every deployment appears once. Skipping deployments whose breaker is open is the attempt loop's job,
not the strategy's: a fully open model still has an order, which the simulator shows. Models have one
to five deployments, so plain sorts and loops over small lists beat any cleverer structure; every
strategy reads only process memory (Health) and the deployment itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.breakers import Health
    from proxy.snapshot import Deployment

_INFINITY = Decimal("Infinity")


def _priority(deployments: list[Deployment], health: Health, rng: random.Random | None) -> list[Deployment]:
    return list(deployments)


def _weighted(deployments: list[Deployment], health: Health, rng: random.Random | None) -> list[Deployment]:
    # Draw without replacement: the first by weight among all, the next by weight among the rest...
    # Weight 0 is never drawn while a positive weight remains; such deployments come last, in order.
    draw = (rng or random).random
    rest = list(deployments)
    weights = [max(getattr(d, "weight", 1), 0) for d in rest]
    total = sum(weights)
    out: list[Deployment] = []
    while len(rest) > 1 and total > 0:
        point = draw() * total
        chosen = -1
        for i, weight in enumerate(weights):
            if weight:
                chosen = i  # float rounding can leave point just past the end: keep the last positive one
                if point < weight:
                    break
                point -= weight
        out.append(rest.pop(chosen))
        total -= weights.pop(chosen)
    out += rest
    return out


def _least_latency(deployments: list[Deployment], health: Health, rng: random.Random | None) -> list[Deployment]:
    # Unknown latency first, so that a new (or never successful) deployment gets measured. The sort is
    # stable: ties keep the listed order.
    latency = health.latency

    def key(d: Deployment) -> float:
        value = latency(d.id)
        return -1.0 if value is None else value

    return sorted(deployments, key=key)


def _price_key(d: Deployment) -> Decimal:
    # Input plus output price per token: the ordering is the same per million. Unpriced last.
    price = d.price
    return _INFINITY if price is None else price.input + price.output


def _lowest_cost(deployments: list[Deployment], health: Health, rng: random.Random | None) -> list[Deployment]:
    return sorted(deployments, key=_price_key)


def _least_busy(deployments: list[Deployment], health: Health, rng: random.Random | None) -> list[Deployment]:
    in_flight = health.in_flight
    return sorted(deployments, key=lambda d: in_flight(d.id))


_STRATEGIES: dict[str, Callable[[list[Deployment], Health, random.Random | None], list[Deployment]]] = {
    "priority": _priority,
    "weighted": _weighted,
    "least-latency": _least_latency,
    "lowest-cost": _lowest_cost,
    "least-busy": _least_busy,
}
# What the config accepts as `strategy:`.
NAMES = frozenset(_STRATEGIES)


def order(
    strategy: str, deployments: list[Deployment], health: Health, rng: random.Random | None = None
) -> list[Deployment]:
    """Every deployment once, in the order to try them (a new list; the input is not changed)."""
    try:
        pick = _STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown routing strategy {strategy!r}") from None
    if len(deployments) < 2:
        return list(deployments)
    return pick(deployments, health, rng)
