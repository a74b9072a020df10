"""The order in which a model's deployments are tried, per strategy (proxy/strategies.py).

Alice's acme model "smart" has deployments on three providers: main, backup and cheap.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from gateway_project.common.money import Price
from proxy.breakers import Health
from proxy.strategies import NAMES, order


@dataclass
class Dep:  # the fields of proxy.snapshot.Deployment that strategies read
    id: int
    provider_name: str
    weight: int = 1
    price: Any = None


@dataclass
class Unweighted:  # a Deployment from before the weight field existed
    id: int
    provider_name: str
    price: Any = None


@pytest.fixture
def health() -> Health:
    return Health("")


def names(deployments) -> list[str]:
    return [d.provider_name for d in deployments]


MAIN, BACKUP, CHEAP = Dep(1, "main"), Dep(2, "backup"), Dep(3, "cheap")


def test_every_strategy_returns_each_deployment_once_without_touching_the_input(health):
    deployments = [MAIN, BACKUP, CHEAP]
    for strategy in NAMES:
        ordered = order(strategy, deployments, health, rng=random.Random(1))
        assert sorted(names(ordered)) == ["backup", "cheap", "main"], strategy
        assert ordered is not deployments
    assert deployments == [MAIN, BACKUP, CHEAP]
    assert order("weighted", [MAIN], health) == [MAIN]
    assert order("least-latency", [], health) == []


def test_an_unknown_strategy_is_refused(health):
    with pytest.raises(ValueError, match="fastest"):
        order("fastest", [MAIN, BACKUP], health)


def test_priority_keeps_the_listed_order(health):
    health.begin(1)
    health.success(1, 9.0)
    assert names(order("priority", [MAIN, BACKUP, CHEAP], health)) == ["main", "backup", "cheap"]
    assert names(order("priority", [CHEAP, MAIN, BACKUP], health)) == ["cheap", "main", "backup"]


def test_least_latency_tries_unmeasured_deployments_first_then_the_fastest(health):
    slow, fast, new, also_fast = Dep(1, "slow"), Dep(2, "fast"), Dep(3, "new"), Dep(4, "also-fast")
    health.success(1, 2.0)
    health.success(2, 0.5)
    health.success(4, 0.5)
    assert names(order("least-latency", [slow, fast, new, also_fast], health)) == ["new", "fast", "also-fast", "slow"]
    # Ties keep the listed order.
    assert names(order("least-latency", [also_fast, fast], health)) == ["also-fast", "fast"]
    # The average moves: after fast gets slow, slow leads.
    for _ in range(10):
        health.success(2, 5.0)
    assert names(order("least-latency", [slow, fast, also_fast], health)) == ["also-fast", "slow", "fast"]


def test_lowest_cost_compares_input_plus_output_and_puts_unpriced_last(health):
    # Cheaper input, dearer in total: input + output decides.
    cheap_input = Dep(1, "cheap-input", price=Price(input=Decimal("1"), output=Decimal("10")))
    balanced = Dep(2, "balanced", price=Price(input=Decimal("5"), output=Decimal("5")))
    unpriced = Dep(3, "unpriced")
    same = Dep(4, "same-as-balanced", price=Price(input=Decimal("4"), output=Decimal("6")))
    assert names(order("lowest-cost", [unpriced, cheap_input, balanced, same], health)) == [
        "balanced",
        "same-as-balanced",
        "cheap-input",
        "unpriced",
    ]


def test_least_busy_tries_the_fewest_in_flight_first_ties_in_listed_order(health):
    for _ in range(3):
        health.begin(MAIN.id)
    health.begin(BACKUP.id)
    assert names(order("least-busy", [MAIN, BACKUP, CHEAP], health)) == ["cheap", "backup", "main"]
    health.begin(CHEAP.id)
    assert names(order("least-busy", [MAIN, BACKUP, CHEAP], health)) == ["backup", "cheap", "main"]
    health.end(MAIN.id)
    health.end(MAIN.id)
    health.end(MAIN.id)
    assert names(order("least-busy", [MAIN, BACKUP, CHEAP], health)) == ["main", "backup", "cheap"]


def _within(observed: int, trials: int, p: float) -> bool:
    # Five standard deviations: a correct implementation fails about once in 3.5 million runs.
    return abs(observed - trials * p) <= 5 * math.sqrt(trials * p * (1 - p))


def test_weighted_orders_follow_the_weights_without_replacement(health):
    deployments = [Dep(1, "a", weight=5), Dep(2, "b", weight=3), Dep(3, "c", weight=2)]
    weights = {d.provider_name: d.weight for d in deployments}
    rng = random.Random(20240609)
    trials = 20_000
    counts = Counter(tuple(names(order("weighted", deployments, health, rng=rng))) for _ in range(trials))
    assert sum(counts.values()) == trials
    for perm in itertools.permutations("abc"):
        # First by weight among all three, second by weight among the other two.
        p = weights[perm[0]] / 10 * weights[perm[1]] / (10 - weights[perm[0]])
        assert _within(counts[perm], trials, p), (perm, counts[perm], trials * p)


def test_weighted_without_weights_is_uniform_and_zero_weight_goes_last(health):
    rng = random.Random(7)
    trials = 9_000
    plain = [Unweighted(1, "a"), Unweighted(2, "b"), Unweighted(3, "c")]
    firsts = Counter(order("weighted", plain, health, rng=rng)[0].provider_name for _ in range(trials))
    assert all(_within(firsts[n], trials, 1 / 3) for n in "abc"), firsts

    drained = [Dep(1, "drained", weight=0), Dep(2, "a", weight=1), Dep(3, "off", weight=0), Dep(4, "b", weight=1)]
    for _ in range(200):
        ordered = names(order("weighted", drained, health, rng=rng))
        assert ordered[2:] == ["drained", "off"]
    assert names(order("weighted", [Dep(1, "x", weight=0), Dep(2, "y", weight=0)], health)) == ["x", "y"]


def test_weighted_is_reproducible_with_a_seeded_rng(health):
    deployments = [Dep(1, "a", weight=3), Dep(2, "b", weight=1)]
    first = [names(order("weighted", deployments, health, rng=random.Random(3))) for _ in range(20)]
    second = [names(order("weighted", deployments, health, rng=random.Random(3))) for _ in range(20)]
    assert first == second
