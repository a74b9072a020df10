"""The console's model editor keeps deployments in their order on screen unless someone types another.

Alice (owner of acme) adds and edits models; Bob (globex) gets 404 for acme's. The form posts are what
the browser sends: "Add a deployment" used to fill in Order=2 on the new row and leave the first row
empty, which saved the first row as the backup (tests/e2e/test_routing_model_editor_browser.py drives
the page itself).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from routing.models import ModelDeployment, RouteRule
from routing.services import model_deployments_set
from tenants.audit import Actor

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(view: str, slug: str = "acme", **kwargs) -> str:
    return reverse(view, kwargs={"slug": slug, **kwargs})


def rows(prefix: str, *rows: dict, initial: int = 0) -> dict:
    """A formset post: the management form and each row's fields as `{prefix}-{index}-{field}`."""
    data = {f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": str(initial)}
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{field}": value for field, value in row.items()})
    return data


def deployment(provider, model: str, order: str = "") -> dict:
    return {"provider": str(provider.id), "model": model, "weight": "", "ORDER": order}


def saved_order(tenant, name: str) -> list[str]:
    found = ModelDeployment.objects.filter(tenant=tenant, model_name=name).order_by("priority")
    return [d.upstream_model for d in found]


def add_model(client, name: str, *deployments: dict):
    return client.post(url("models"), {"name": name, **rows("dep", *deployments)}, **HTMX)


# --- Adding a model --------------------------------------------------------------------------------


def test_alice_adds_two_deployments_without_an_order_and_the_first_is_the_primary(world, client_as):
    mock = world.objects["provider"]
    response = add_model(client_as(world.alice), "team-chat", deployment(mock, "primary"), deployment(mock, "backup"))
    assert "Added team-chat." in response.content.decode()
    assert saved_order(world.acme, "team-chat") == ["primary", "backup"]


def test_the_order_the_old_script_filled_in_on_the_added_row_keeps_the_first_row_first(world, client_as):
    # What the browser sent before the fix: nothing on the first row, Order=2 on the added one.
    mock = world.objects["provider"]
    add_model(client_as(world.alice), "team-chat", deployment(mock, "primary"), deployment(mock, "backup", "2"))
    assert saved_order(world.acme, "team-chat") == ["primary", "backup"]


def test_an_order_alice_types_moves_the_row(world, client_as):
    mock = world.objects["provider"]
    add_model(
        client_as(world.alice),
        "team-chat",
        deployment(mock, "was-first"),
        deployment(mock, "was-second"),
        deployment(mock, "typed-first", "1"),
    )
    assert saved_order(world.acme, "team-chat") == ["typed-first", "was-first", "was-second"]


def test_removed_and_blank_rows_do_not_shift_the_others(world, client_as):
    mock = world.objects["provider"]
    removed = {**deployment(mock, "removed"), "DELETE": "on"}
    blank = {"provider": "", "model": "", "weight": "", "ORDER": ""}
    add_model(client_as(world.alice), "team-chat", removed, deployment(mock, "a"), blank, deployment(mock, "b"))
    assert saved_order(world.acme, "team-chat") == ["a", "b"]


def test_each_row_shows_its_place_as_the_order_placeholder(world, client_as):
    body = client_as(world.alice).get(url("models")).content.decode()
    assert 'name="dep-0-ORDER" value="1"' not in body  # nothing typed on a blank row
    assert 'name="dep-0-ORDER" min="0" class="order-input" placeholder="1"' in body
    detail = client_as(world.alice).get(url("model-detail", name="gpt-4o-mini")).content.decode()
    # The saved deployment shows its order as a value; the blank row after it shows its place.
    assert 'name="dep-0-ORDER" value="1"' in detail
    assert 'name="dep-1-ORDER" min="0" class="order-input" placeholder="2"' in detail


# --- Editing a model -------------------------------------------------------------------------------


@pytest.fixture
def two_deployments(world):
    mock = world.objects["provider"]
    deployments = [(mock, "primary"), (mock, "backup")]
    model_deployments_set(world.acme, model_name="team-chat", deployments=deployments, actor=Actor(user=world.alice))
    return world


def test_alice_moves_the_backup_first_by_typing_1(two_deployments, client_as):
    world = two_deployments
    mock = world.objects["provider"]
    data = rows("dep", deployment(mock, "primary", "1"), deployment(mock, "backup", "1"), initial=2)
    response = client_as(world.alice).post(url("model-detail", name="team-chat"), data, **HTMX)
    assert "Saved ✓" in response.content.decode()
    assert saved_order(world.acme, "team-chat") == ["backup", "primary"]


def test_a_row_added_on_the_model_page_without_an_order_goes_last(two_deployments, client_as):
    world = two_deployments
    mock = world.objects["provider"]
    data = rows(
        "dep",
        deployment(mock, "primary", "1"),
        deployment(mock, "backup", "2"),
        deployment(mock, "third"),
        initial=2,
    )
    client_as(world.alice).post(url("model-detail", name="team-chat"), data, **HTMX)
    assert saved_order(world.acme, "team-chat") == ["primary", "backup", "third"]


def test_bob_cannot_add_or_reorder_acme_models(two_deployments, client_as):
    world = two_deployments
    bob = client_as(world.bob)
    mock = world.objects["provider"]
    data = rows("dep", deployment(mock, "primary", "2"), deployment(mock, "backup", "1"), initial=2)
    assert bob.post(url("model-detail", name="team-chat"), data).status_code == 404
    assert bob.post(url("models"), {"name": "sneaky", **rows("dep", deployment(mock, "x"))}).status_code == 404
    assert saved_order(world.acme, "team-chat") == ["primary", "backup"]
    assert not ModelDeployment.objects.filter(model_name="sneaky").exists()


# --- Routing rules use the same rows ---------------------------------------------------------------


def rule(route: str, tags: str, order: str = "") -> dict:
    empty = {"key": "", "metadata": "", "user": "", "prompt_bytes_over": ""}
    return {**empty, "tags": tags, "route": route, "ORDER": order}


def test_rules_keep_their_order_on_screen_unless_one_is_typed(world, client_as):
    client = client_as(world.alice)
    client.post(url("route-rules"), rows("rule", rule("gpt-4o-mini", "first"), rule("gpt-4o-mini", "second", "2")))
    assert [r.match["tags"] for r in RouteRule.objects.filter(tenant=world.acme)] == [["first"], ["second"]]

    client.post(
        url("route-rules"),
        rows("rule", rule("gpt-4o-mini", "first", "1"), rule("gpt-4o-mini", "second", "1"), initial=2),
    )
    assert [r.match["tags"] for r in RouteRule.objects.filter(tenant=world.acme)] == [["second"], ["first"]]
