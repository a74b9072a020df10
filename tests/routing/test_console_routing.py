"""The routing console: a model's routing settings and weights, the rules page, the live health panel,
the A/B comparison and the simulate panel. Alice (owner of acme) edits; Charlie (viewer) reads only;
Bob (globex) gets 404 for all of it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from observability.models import CallLog
from observability.selectors import percentile, split_comparison
from proxy.breakers import health
from proxy.snapshot import CooldownSpec
from routing.models import ModelDeployment, ModelRoute, RouteRule
from routing.services import model_deployments_set, model_routes_set, route_rules_set
from tenants.audit import Actor

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def models(world):
    mock = world.objects["provider"]
    for name in ("cheap", "smart-v2"):
        model_deployments_set(world.acme, model_name=name, deployments=[(mock, f"{name}-up")], actor=Actor.cli())
    return world


def route_form(**changes) -> dict:
    data = {
        "strategy": "priority",
        "retries": "1",
        "timeout_s": "600",
        "fallbacks": "",
        "context_window_fallbacks": "",
        "split_model": "",
        "split_percent": "",
        "split_sticky": "user",
        "cooldown_failures": "3",
        "cooldown_window_s": "60",
        "cooldown_s": "30",
    }
    return {**data, **changes}


def route_url(name: str = "gpt-4o-mini", slug: str = "acme") -> str:
    return reverse("model-route", kwargs={"slug": slug, "name": name})


# --- Model routing settings ------------------------------------------------------------------------


def test_alice_edits_strategy_fallbacks_split_and_cooldown(models, client_as):
    client = client_as(models.alice)
    response = client.post(
        route_url(),
        route_form(
            strategy="least-latency",
            retries="3",
            timeout_s="45",
            fallbacks="cheap",
            split_model="smart-v2",
            split_percent="10",
            split_sticky="key",
            cooldown_failures="2",
            cooldown_s="90",
        ),
        **HTMX,
    )
    assert response.status_code == 200
    assert b"Saved" in response.content
    row = ModelRoute.objects.get(tenant=models.acme, model_name="gpt-4o-mini")
    assert row.settings() == {
        "strategy": "least-latency",
        "retries": 3,
        "timeout_s": 45.0,
        "fallbacks": ["cheap"],
        "context_window_fallbacks": [],
        "split": {"model": "smart-v2", "percent": 10.0, "sticky": "key"},
        "cooldown": {"failures": 2, "window_s": 60.0, "cooldown_s": 90.0},
    }
    # The page shows what was saved.
    page = client.get(reverse("model-detail", kwargs={"slug": "acme", "name": "gpt-4o-mini"}))
    assert b'value="least-latency" selected' in page.content
    assert b'value="cheap"' in page.content


def test_a_fallback_cycle_is_shown_on_the_field_and_changes_nothing(models, client_as):
    model_routes_set(models.acme, routes={"cheap": {"fallbacks": ["gpt-4o-mini"]}}, actor=Actor.cli())
    response = client_as(models.alice).post(route_url(), route_form(fallbacks="cheap"), **HTMX)
    assert response.status_code == 200
    assert b"cycle" in response.content
    assert b'id="id_fallbacks_error"' in response.content
    assert not ModelRoute.objects.filter(tenant=models.acme, model_name="gpt-4o-mini").exists()


def test_an_unknown_fallback_is_refused(models, client_as):
    response = client_as(models.alice).post(route_url(), route_form(fallbacks="cheap, nope"), **HTMX)
    assert b"unknown model" in response.content
    assert not ModelRoute.objects.filter(tenant=models.acme, model_name="gpt-4o-mini").exists()


def test_a_split_needs_a_percent(models, client_as):
    response = client_as(models.alice).post(route_url(), route_form(split_model="smart-v2"), **HTMX)
    assert b'id="id_split_percent_error"' in response.content
    assert not ModelRoute.objects.filter(tenant=models.acme).exists()


def test_deployment_weights_are_edited_with_the_deployments(models, client_as):
    provider = models.objects["provider"]
    data = {
        "dep-TOTAL_FORMS": "2",
        "dep-INITIAL_FORMS": "1",
        "dep-0-provider": str(provider.id),
        "dep-0-model": "mock-chat",
        "dep-0-weight": "3",
        "dep-0-ORDER": "1",
        "dep-1-provider": str(provider.id),
        "dep-1-model": "other-up",
        "dep-1-weight": "",
        "dep-1-ORDER": "2",
    }
    url = reverse("model-detail", kwargs={"slug": "acme", "name": "gpt-4o-mini"})
    response = client_as(models.alice).post(url, data, **HTMX)
    assert response.status_code == 200
    weights = list(
        ModelDeployment.objects.filter(tenant=models.acme, model_name="gpt-4o-mini").values_list(
            "upstream_model", "weight"
        )
    )
    assert weights == [("mock-chat", 3), ("other-up", 1)]
    response = client_as(models.alice).post(url, {**data, "dep-0-weight": "0"}, **HTMX)
    assert b'id="id_dep-0-weight_error"' in response.content


def test_a_viewer_reads_but_cannot_save(models, client_as):
    charlie = client_as(models.charlie)
    page = charlie.get(reverse("model-detail", kwargs={"slug": "acme", "name": "gpt-4o-mini"}))
    assert page.status_code == 200
    assert b"Save routing" not in page.content
    assert charlie.post(route_url(), route_form(strategy="weighted"), **HTMX).status_code == 403
    assert not ModelRoute.objects.filter(tenant=models.acme).exists()


def test_bob_gets_404_on_alices_model_routing(models, client_as):
    bob = client_as(models.bob)
    assert bob.post(route_url(), route_form(strategy="weighted")).status_code == 404
    # Through his own tenant, Alice's model name is just unknown.
    assert bob.post(route_url("cheap", slug="globex"), route_form()).status_code == 404
    assert not ModelRoute.objects.exists()


# --- Rules -----------------------------------------------------------------------------------------


def rules_data(*rules: dict, initial: int = 0) -> dict:
    data = {"rule-TOTAL_FORMS": str(len(rules)), "rule-INITIAL_FORMS": str(initial)}
    for i, rule in enumerate(rules):
        for field, value in rule.items():
            data[f"rule-{i}-{field}"] = value
    return data


def test_alice_edits_the_ordered_rules(models, client_as):
    url = reverse("route-rules", kwargs={"slug": "acme"})
    client = client_as(models.alice)
    response = client.post(
        url,
        rules_data(
            {"tags": "batch, nightly", "route": "cheap", "ORDER": "2"},
            {"key": "acme-service", "metadata": "team=ml", "route": "smart-v2", "ORDER": "1"},
            {"prompt_bytes_over": "5000", "user": "carol", "route": "cheap", "ORDER": "3"},
        ),
        **HTMX,
    )
    assert response.status_code == 200
    assert b"Saved" in response.content
    assert [(r.match, r.route) for r in RouteRule.objects.filter(tenant=models.acme)] == [
        ({"key": ["acme-service"], "metadata": {"team": "ml"}}, "smart-v2"),
        ({"tags": ["batch", "nightly"]}, "cheap"),
        ({"user": ["carol"], "prompt_bytes_over": 5000}, "cheap"),
    ]
    # Shown back in that order, ready to edit; removing one keeps the others.
    page = client.get(url)
    assert page.content.index(b"acme-service") < page.content.index(b"batch, nightly")
    response = client.post(
        url,
        rules_data(
            {"key": "acme-service", "metadata": "team=ml", "route": "smart-v2", "ORDER": "1", "DELETE": "on"},
            {"tags": "batch, nightly", "route": "cheap", "ORDER": "2"},
            initial=2,
        ),
        **HTMX,
    )
    assert [r.route for r in RouteRule.objects.filter(tenant=models.acme)] == ["cheap"]


def test_a_rule_without_conditions_is_refused_with_its_position(models, client_as):
    route_rules_set(models.acme, rules=[{"if": {"tags": ["x"]}, "route": "cheap"}], actor=Actor.cli())
    url = reverse("route-rules", kwargs={"slug": "acme"})
    response = client_as(models.alice).post(
        url, rules_data({"tags": "x", "route": "cheap"}, {"route": "smart-v2"}, initial=1), **HTMX
    )
    assert b"Rule 2" in response.content
    assert b"at least one condition" in response.content
    assert [r.match for r in RouteRule.objects.filter(tenant=models.acme)] == [{"tags": ["x"]}]


def test_bad_metadata_is_shown_on_its_field(models, client_as):
    url = reverse("route-rules", kwargs={"slug": "acme"})
    response = client_as(models.alice).post(url, rules_data({"metadata": "team", "route": "cheap"}), **HTMX)
    assert b'id="id_rule-0-metadata_error"' in response.content
    assert not RouteRule.objects.exists()


def test_a_viewer_cannot_change_rules_and_bob_cannot_see_them(models, client_as):
    url = reverse("route-rules", kwargs={"slug": "acme"})
    route_rules_set(models.acme, rules=[{"if": {"tags": ["secret-tag"]}, "route": "cheap"}], actor=Actor.cli())
    charlie = client_as(models.charlie)
    page = charlie.get(url)
    assert b"secret-tag" in page.content and b"Save rules" not in page.content
    assert charlie.post(url, rules_data({"tags": "y", "route": "cheap"})).status_code == 403
    bob = client_as(models.bob)
    assert bob.get(url).status_code == 404
    assert b"secret-tag" not in bob.get(reverse("route-rules", kwargs={"slug": "globex"})).content
    assert [r.match for r in RouteRule.objects.filter(tenant=models.acme)] == [{"tags": ["secret-tag"]}]


# --- Simulate panel --------------------------------------------------------------------------------


def test_the_simulate_panel_shows_the_decision(models, client_as):
    route_rules_set(models.acme, rules=[{"if": {"tags": ["batch"]}, "route": "cheap"}], actor=Actor.cli())
    url = reverse("routing-simulate", kwargs={"slug": "acme"})
    response = client_as(models.charlie).post(url, {"model": "gpt-4o-mini", "tags": "batch"}, **HTMX)
    assert response.status_code == 200
    assert b"<strong>cheap</strong> (rule 1 matched)" in response.content
    assert b"mock/cheap-up" in response.content
    response = client_as(models.charlie).post(url, {"model": "gpt-4o-mini"}, **HTMX)
    assert b"<strong>gpt-4o-mini</strong>." in response.content


def test_bob_cannot_pick_alices_models_in_his_simulator(models, client_as):
    url = reverse("routing-simulate", kwargs={"slug": "globex"})
    response = client_as(models.bob).post(url, {"model": "cheap"}, **HTMX)
    assert b"Select a valid choice" in response.content
    assert b"cheap-up" not in response.content


# --- Health panel ----------------------------------------------------------------------------------


def test_the_health_panel_shows_breakers_error_rate_and_latency(models, client_as):
    dep = ModelDeployment.objects.get(tenant=models.acme, model_name="cheap")
    other = ModelDeployment.objects.get(tenant=models.acme, model_name="gpt-4o-mini")
    now = timezone.now()
    attempts = [
        {"deployment": dep.id, "provider": "mock", "model": "cheap-up", "status": 500, "latency_ms": 10, "error": "x"},
        {"deployment": dep.id, "provider": "mock", "model": "cheap-up", "status": 200, "latency_ms": 30, "error": ""},
    ]
    for i in range(2):
        CallLog.objects.create(
            tenant=models.acme, request_id=f"r{i}", endpoint="chat", status_code=200, latency_ms=40, attempts=attempts
        )
    # Older than the 15-minute window, and another tenant's: neither counts.
    CallLog.objects.create(
        tenant=models.acme,
        created_at=now - timedelta(minutes=20),
        request_id="old",
        endpoint="chat",
        status_code=500,
        latency_ms=1,
        attempts=[{"deployment": dep.id, "status": 500, "latency_ms": 1, "error": "x"}],
    )
    health.failure(other.id, CooldownSpec(failures=1, window_s=60, cooldown_s=300))
    try:
        response = client_as(models.charlie).get(reverse("routing-health", kwargs={"slug": "acme"}), **HTMX)
    finally:
        health._deps.pop(other.id, None)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html  # the fragment only, for the 5-second refresh
    row = html[html.index("mock/cheap-up") :]
    row = row[: row.index("</tr>")]
    assert "closed" in row and ">4<" in row and "50 %" in row and "20 ms" in row
    row = html[html.index('"Model">gpt-4o-mini<') :]
    assert 'badge-danger">open' in row[: row.index("</tr>")]


def test_the_models_page_polls_the_health_panel(models, client_as):
    page = client_as(models.charlie).get(reverse("models", kwargs={"slug": "acme"})).content.decode()
    assert 'hx-get="/t/acme/routing/health/"' in page and 'hx-trigger="load, every 5s"' in page


# --- A/B comparison --------------------------------------------------------------------------------


def _log(tenant, variant: str, status: int, latency: float, tokens: int, pico: int, **extra) -> None:
    CallLog.objects.create(
        tenant=tenant,
        request_id="r",
        endpoint="chat",
        requested_model=extra.pop("model", "gpt-4o-mini"),
        variant=variant,
        status_code=status,
        latency_ms=latency,
        total_tokens=tokens,
        cost_picodollars=pico,
        **extra,
    )


def test_the_ab_selector_compares_control_and_variant(models):
    acme = models.acme
    for latency in (100, 200, 300, 400):
        _log(acme, "", 200, latency, 10, 1_000_000_000)  # $0.001 each
    _log(acme, "", 500, 1000, 0, 0)
    _log(acme, "smart-v2", 200, 50, 20, 3_000_000_000)
    _log(acme, "smart-v2", 200, 150, 20, 3_000_000_000)
    # Not counted: too old, another model, another tenant, another variant.
    _log(acme, "", 200, 9999, 99, 99, created_at=timezone.now() - timedelta(days=8))
    _log(acme, "", 200, 9999, 99, 99, model="cheap")
    _log(models.globex, "", 200, 9999, 99, 99)
    _log(acme, "old-variant", 200, 9999, 99, 99)

    control, variant = split_comparison(acme, "gpt-4o-mini", "smart-v2", since=timezone.now() - timedelta(days=7))
    assert (control.group, control.requests, control.errors, control.tokens) == ("control", 5, 1, 40)
    assert control.error_rate == pytest.approx(0.2)
    assert control.cost_usd == Decimal("0.004")
    assert control.p50_ms == pytest.approx(300)
    assert control.p95_ms == pytest.approx(percentile([100, 200, 300, 400, 1000], 0.95))
    assert (variant.group, variant.requests, variant.errors, variant.tokens) == ("smart-v2", 2, 0, 40)
    assert variant.p50_ms == pytest.approx(100)
    assert variant.cost_usd == Decimal("0.006")


def test_percentile_interpolates_like_postgres():
    assert percentile([], 0.5) is None
    assert percentile([5], 0.95) == 5
    assert percentile([100, 200, 300, 400, 1000], 0.95) == pytest.approx(880)


def test_the_model_page_has_the_ab_section_and_the_period_select(models, client_as):
    model_routes_set(
        models.acme,
        routes={"gpt-4o-mini": {"split": {"model": "smart-v2", "percent": 10}}},
        actor=Actor.cli(),
    )
    _log(models.acme, "smart-v2", 200, 50, 20, 3_000_000_000)
    client = client_as(models.charlie)
    page = client.get(reverse("model-detail", kwargs={"slug": "acme", "name": "gpt-4o-mini"})).content.decode()
    assert "A/B comparison" in page and "/t/acme/routing/ab/?model=gpt-4o-mini" in page
    fragment = client.get(reverse("routing-ab", kwargs={"slug": "acme"}), {"model": "gpt-4o-mini", "days": "1"}, **HTMX)
    html = fragment.content.decode()
    assert "variant (smart-v2)" in html and 'value="1" selected' in html
    assert client_as(models.bob).get(reverse("routing-ab", kwargs={"slug": "acme"})).status_code == 404
    bob_own = client_as(models.bob).get(reverse("routing-ab", kwargs={"slug": "globex"}), {"model": "gpt-4o-mini"})
    assert "smart-v2" not in bob_own.content.decode()


def test_a_member_sees_only_her_own_keys_calls_on_the_ab_and_health_panels(models, client_as, world):
    model_routes_set(
        models.acme, routes={"gpt-4o-mini": {"split": {"model": "smart-v2", "percent": 10}}}, actor=Actor.cli()
    )
    erin_key = world.objects["erin_key"]
    _log(models.acme, "smart-v2", 200, 50, 20, 3_000_000_000, virtual_key_id=erin_key.id)
    for _ in range(3):
        _log(models.acme, "smart-v2", 200, 50, 20, 3_000_000_000, virtual_key_id=world.objects["key"].id)
    since = timezone.now() - timedelta(days=7)
    _control, everyone = split_comparison(models.acme, "gpt-4o-mini", "smart-v2", since=since)
    _control, hers = split_comparison(models.acme, "gpt-4o-mini", "smart-v2", since=since, key_ids=[erin_key.id])
    assert (everyone.requests, hers.requests) == (4, 1)
    api = client_as(world.erin).get(reverse("routing-ab", kwargs={"slug": "acme"}), {"model": "gpt-4o-mini"}, **HTMX)
    assert api.status_code == 200
    # A model name with a NUL is no model's: a 404, not a database error.
    assert (
        client_as(world.erin).get(reverse("routing-ab", kwargs={"slug": "acme"}), {"model": "gpt\x00"}).status_code
        == 404
    )
