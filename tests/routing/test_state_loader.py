"""proxy.loader builds RouteSpec / RuleSpec / Deployment.weight from the stored routing config."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from proxy.loader import load_tenant
from proxy.snapshot import CooldownSpec, RouteSpec, RuleSpec, SplitSpec
from tenants.config import apply_config
from tests.helpers.routing import ACME

pytestmark = pytest.mark.django_db


def test_alices_routing_reaches_the_proxy_config():
    tenant, _ = apply_config(ACME)
    entry = load_tenant(tenant.id)
    assert set(entry.routes) == set(entry.models) == {"smart", "smart-v2", "cheap", "long"}
    smart = entry.routes["smart"]
    assert smart.deployments is entry.models["smart"]
    assert [(d.provider_name, d.upstream_model, d.weight) for d in smart.deployments] == [
        ("main", "gpt-4o", 3),
        ("backup", "gpt-4o", 1),
    ]
    assert smart == RouteSpec(
        name="smart",
        deployments=smart.deployments,
        strategy="weighted",
        retries=2,
        timeout_s=60.0,
        fallbacks=("cheap",),
        context_window_fallbacks=("long",),
        split=SplitSpec(model="smart-v2", percent=10.0, sticky="user"),
        cooldown=CooldownSpec(failures=5, window_s=60.0, cooldown_s=12.5),
    )
    assert entry.routes["cheap"] == RouteSpec(name="cheap", deployments=entry.models["cheap"])
    assert entry.rules == (
        RuleSpec(index=0, tags=frozenset({"batch"}), route="cheap"),
        RuleSpec(index=1, prompt_bytes_over=200000, route="long"),
        RuleSpec(
            index=2,
            key_names=frozenset({"ci"}),
            metadata=(("team", "ml"),),
            users=frozenset({"u1", "u2"}),
            route="cheap",
        ),
    )


def test_loading_costs_the_same_queries_for_four_models_or_twelve():
    tenant, _ = apply_config(ACME)
    with CaptureQueriesContext(connection) as few:
        load_tenant(tenant.id)
    more = ACME.replace(
        "rules:",
        "".join(
            f"  - name: extra-{i}\n    retries: 3\n    deployments:\n      - {{provider: main, model: m{i}}}\n"
            for i in range(8)
        )
        + "rules:",
    )
    apply_config(more)
    with CaptureQueriesContext(connection) as many:
        entry = load_tenant(tenant.id)
    assert entry.routes["extra-7"].retries == 3
    assert len(many) == len(few)
