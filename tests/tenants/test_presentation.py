"""What the console shows: the model editor, forms that keep input, readable audit entries, error pages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.template import Context, engines
from django.template.loader import get_template
from django.urls import reverse

from billing.services import budget_upsert
from routing.models import ModelDeployment, ProviderKind
from routing.services import provider_upsert
from tenants.audit import Actor
from tenants.models import AuditLog
from tenants.services import membership_set_role

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(view: str, slug: str = "acme", **kwargs) -> str:
    return reverse(view, kwargs={"slug": slug, **kwargs})


def _rows(rows: list[dict], initial: int = 0) -> dict:
    data = {"dep-TOTAL_FORMS": str(len(rows)), "dep-INITIAL_FORMS": str(initial)}
    for i, row in enumerate(rows):
        data.update({f"dep-{i}-{k}": str(v) for k, v in row.items()})
    return data


def _deployments(tenant, name: str) -> list[tuple[str, str]]:
    return [
        (d.provider.name, d.upstream_model)
        for d in ModelDeployment.objects.filter(tenant=tenant, model_name=name).select_related("provider")
    ]


# --- The model editor ------------------------------------------------------------------------------


def test_dave_adds_two_deployments_and_reorders_them_in_one_save(world, client_as):
    pid = world.objects["provider"].id
    data = _rows(
        [
            {"provider": pid, "model": "mock-chat", "ORDER": 3},
            {"provider": pid, "model": "fast", "ORDER": 1},
            {"provider": pid, "model": "cheap", "ORDER": 2},
        ],
        initial=1,
    )
    response = client_as(world.dave).post(url("model-detail", name="acme-secret-model"), data, **HTMX)
    assert "Saved ✓" in response.content.decode()
    assert _deployments(world.acme, "acme-secret-model") == [("mock", "fast"), ("mock", "cheap"), ("mock", "mock-chat")]
    entry = AuditLog.objects.filter(tenant=world.acme, action="model.update").latest("id")
    assert entry.changes == {"before": ["mock/mock-chat"], "after": ["mock/fast", "mock/cheap", "mock/mock-chat"]}


def test_the_editor_shows_every_row_with_its_order_and_a_blank_one_to_add(world, client_as):
    html = client_as(world.dave).get(url("model-detail", name="acme-secret-model")).content.decode()
    assert 'name="dep-0-ORDER"' in html and 'value="1"' in html
    assert 'name="dep-0-DELETE"' in html
    assert 'name="dep-1-provider"' in html  # the blank row
    assert "dep-__prefix__-provider" in html  # the template "Add a deployment" copies


def test_a_row_listed_twice_is_an_error_and_nothing_changes(world, client_as):
    pid = world.objects["provider"].id
    data = _rows([{"provider": pid, "model": "x"}, {"provider": pid, "model": "x"}], initial=1)
    response = client_as(world.dave).post(url("model-detail", name="acme-secret-model"), data, **HTMX)
    assert "listed twice" in response.content.decode()
    assert _deployments(world.acme, "acme-secret-model") == [("mock", "mock-chat")]


def test_bob_cannot_post_alices_model(world, client_as):
    data = _rows([{"provider": world.objects["g_provider"].id, "model": "stolen"}], initial=1)
    response = client_as(world.bob).post(url("model-detail", name="acme-secret-model"), data)
    assert response.status_code == 404
    assert _deployments(world.acme, "acme-secret-model") == [("mock", "mock-chat")]


def test_bob_cannot_route_his_model_through_alices_provider(world, client_as):
    data = _rows([{"provider": world.objects["provider"].id, "model": "stolen"}], initial=1)
    response = client_as(world.bob).post(url("model-detail", slug="globex", name="gpt-4o-mini"), data)
    assert "Select a valid choice" in response.content.decode()
    assert _deployments(world.globex, "gpt-4o-mini") == [("mock", "mock-chat")]


# --- The provider form -----------------------------------------------------------------------------


def test_the_provider_form_keeps_the_typed_key_when_it_shows_an_error(world, client_as):
    data = {"name": "mock", "kind": ProviderKind.OPENAI, "base_url": "", "api_key": "sk-typed-by-dave-0042"}
    html = client_as(world.dave).post(url("providers"), data, **HTMX).content.decode()
    assert "There is already a provider named mock" in html
    assert 'value="sk-typed-by-dave-0042"' in html


def test_the_edit_form_never_renders_the_stored_key(world, client_as):
    provider, _ = provider_upsert(
        world.acme,
        name="local",
        kind=ProviderKind.OPENAI_COMPATIBLE,
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-stored-secret-7777",
        actor=Actor(user=world.alice),
    )
    client = client_as(world.dave)
    assert "sk-stored-secret" not in client.get(url("provider-detail", provider_id=provider.id)).content.decode()
    saved = client.post(
        url("provider-detail", provider_id=provider.id),
        {"kind": ProviderKind.OPENAI_COMPATIBLE, "base_url": "http://127.0.0.1:9/v2", "api_key": ""},
        **HTMX,
    ).content.decode()
    assert "Saved ✓" in saved and "sk-stored-secret" not in saved


# --- Audit, spend, money ---------------------------------------------------------------------------


def test_audit_details_read_as_old_to_new(world, client_as):
    membership_set_role(world.acme, membership=world.objects["memberships"]["erin"], role="admin", actor=Actor.cli())
    html = client_as(world.alice).get(url("audit")).content.decode()
    assert "role:</span> member → admin" in html
    assert "[&#x27;" not in html and "['" not in html  # no raw Python lists
    assert "deployments:</span> mock/mock-chat" in html or "models:</span>" in html


def test_the_spend_page_names_the_model_column_for_what_it_holds(world, client_as):
    from tests.helpers.billing import spend

    spend(world.acme, "0.5", key=world.objects["key"], model="gpt-4o-mini")
    html = client_as(world.alice).get(url("spend")).content.decode()
    assert "Model (as requested)" in html and "Upstream model" not in html


def test_a_tiny_budget_is_not_shown_as_zero(world, client_as):
    budget_upsert(world.acme, scope="tenant", limit_usd=Decimal("0.0002"), period="day", mode="hard", actor=Actor.cli())
    html = client_as(world.alice).get(url("budgets")).content.decode()
    assert "of $0.0002" in html and "of $0.00 " not in html


# --- Error pages and assets ------------------------------------------------------------------------


def test_the_404_page_is_styled(world, client_as):
    response = client_as(world.alice).get("/t/acme/no-such-page/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "Page not found" in html and "css/console.css" in html and 'rel="icon"' in html


def test_the_500_page_renders_without_a_request():
    html = get_template("500.html").render({})
    assert "Something went wrong" in html and "css/console.css" in html
    # Django's server_error view renders it through the engine with an empty context.
    engine = engines["django"].engine
    assert "css/console.css" in engine.get_template("500.html").render(Context({}))


def test_every_console_page_links_the_favicon(world, client_as):
    html = client_as(world.alice).get(url("tenant-overview")).content.decode()
    assert 'rel="icon"' in html and "favicon.svg" in html


def test_favicon_ico_leads_to_the_icon_every_page_links(client, db):
    from django.contrib.staticfiles import finders

    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("img/favicon.svg")
    assert finders.find("img/favicon.svg")
