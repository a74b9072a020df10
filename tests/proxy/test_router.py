"""The routing decision in process: rules, the A/B split, the fallback chain. Pure and fast."""

from __future__ import annotations

import random

import pytest

from proxy.router import plan
from proxy.snapshot import Deployment, KeyEntry, RouteSpec, RuleSpec, SplitSpec, TenantEntry


def dep(i: int, model: str) -> Deployment:
    return Deployment(
        id=i, model_name=model, provider_name="main", kind="openai", base_url="", api_key="", upstream_model=f"u-{i}"
    )


def key(name: str = "app", key_id: int = 1, tags: tuple[str, ...] = (), metadata: dict | None = None) -> KeyEntry:
    return KeyEntry(
        key_id=key_id,
        tenant_id=1,
        name=name,
        allowed_models=frozenset(),
        expires_at=None,
        revoked=False,
        metadata=metadata or {},
        loaded_at=0.0,
        tags=tags,
    )


def tenant(routes: list[RouteSpec], rules: tuple[RuleSpec, ...] = ()) -> TenantEntry:
    return TenantEntry(
        tenant_id=1,
        slug="acme",
        models={r.name: r.deployments for r in routes},
        loaded_at=0.0,
        routes={r.name: r for r in routes},
        rules=rules,
    )


ACME = tenant(
    [
        RouteSpec(
            "smart", [dep(1, "smart"), dep(2, "smart")], fallbacks=("cheap",), context_window_fallbacks=("long",)
        ),
        RouteSpec("smart-v2", [dep(3, "smart-v2")]),
        RouteSpec("cheap", [dep(4, "cheap")]),
        RouteSpec("long", [dep(5, "long")]),
    ],
    rules=(
        RuleSpec(index=0, tags=frozenset({"batch"}), route="cheap"),
        RuleSpec(index=1, prompt_bytes_over=200_000, route="long"),
        RuleSpec(index=2, key_names=frozenset({"nightly"}), metadata=(("team", "data"),), route="cheap"),
    ),
)


def test_without_rules_the_model_and_its_fallbacks_are_planned_in_order():
    p = plan(ACME, key(), "smart")
    assert (p.model, p.rule, p.variant) == ("smart", None, None)
    assert [(g.model, [d.id for d in g.deployments]) for g in p.groups] == [("smart", [1, 2]), ("cheap", [4])]
    assert [g.model for g in p.context_window] == ["long"]


def test_no_fallback_plans_the_model_alone():
    p = plan(ACME, key(), "smart", no_fallback=True)
    assert [g.model for g in p.groups] == ["smart"] and p.context_window == []


def test_a_tag_rule_routes_batch_traffic_to_the_cheap_model():
    p = plan(ACME, key(), "smart", tags=["batch"])
    assert (p.model, p.rule) == ("cheap", 0)


def test_a_big_prompt_goes_to_the_long_model_and_a_small_one_does_not():
    assert plan(ACME, key(), "smart", prompt_bytes=200_001).model == "long"
    assert plan(ACME, key(), "smart", prompt_bytes=200_000).model == "smart"


def test_a_rule_on_key_name_and_metadata_needs_both():
    assert plan(ACME, key("nightly", metadata={"team": "data"}), "smart").rule == 2
    assert plan(ACME, key("nightly", metadata={"team": "web"}), "smart").rule is None
    assert plan(ACME, key("app", metadata={"team": "data"}), "smart").rule is None


def split_tenant(percent: float, sticky: str = "user") -> TenantEntry:
    return tenant(
        [
            RouteSpec("smart", [dep(1, "smart")], split=SplitSpec(model="smart-v2", percent=percent, sticky=sticky)),
            RouteSpec("smart-v2", [dep(3, "smart-v2")]),
        ]
    )


def test_a_ten_percent_split_lands_within_statistical_bounds():
    t = split_tenant(10)
    n = 20_000
    hits = sum(plan(t, key(), "smart", user=f"user-{i}").variant == "smart-v2" for i in range(n))
    # Binomial(20000, 0.1): standard deviation ~42; 5 sigma either side.
    assert abs(hits - n * 0.10) < 5 * (n * 0.1 * 0.9) ** 0.5


def test_the_split_is_sticky_per_user_and_per_key():
    t = split_tenant(50)
    for i in range(200):
        first = plan(t, key(), "smart", user=f"u{i}").model
        assert all(plan(t, key(), "smart", user=f"u{i}").model == first for _ in range(3))
    by_key = split_tenant(50, sticky="key")
    for k in range(50):
        assert len({plan(by_key, key(key_id=k), "smart", user=f"x{j}").model for j in range(5)}) == 1


def test_zero_and_hundred_percent_splits_are_exact():
    assert all(plan(split_tenant(0), key(), "smart", user=f"u{i}").variant is None for i in range(500))
    assert all(plan(split_tenant(100), key(), "smart", user=f"u{i}").variant == "smart-v2" for i in range(500))


def test_the_split_bucket_does_not_depend_on_the_process():
    # blake2b, not hash(): a known user lands in a known bucket on every machine and after restarts.
    from proxy.router import bucket

    # The value below was computed once, in another process: a salted hash would differ run to run.
    assert bucket(1, "smart", "alice") == pytest.approx(19.307041036043582)
    assert bucket(1, "smart", "alice") != bucket(2, "smart", "alice")


def test_weighted_plans_use_the_weights():
    heavy, light = dep(1, "w"), dep(2, "w")
    heavy.weight, light.weight = 9, 1
    t = tenant([RouteSpec("w", [heavy, light], strategy="weighted")])
    rng = random.Random(7)
    firsts = [plan(t, key(), "w", rng=rng).first.id for _ in range(5000)]
    assert 0.87 < firsts.count(1) / 5000 < 0.93
