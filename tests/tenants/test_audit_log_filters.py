"""The console's audit page: filters, sign-ins kept out by default, targets by their current names."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.services import rate_limit_set
from tenants.audit import Actor
from tenants.models import AuditLog
from tenants.services import virtual_key_create

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(slug: str = "acme") -> str:
    return reverse("audit", kwargs={"slug": slug})


def entry(tenant, action: str, *, when: str = "2025-03-10 12:00", **fields) -> AuditLog:
    created_at = datetime.fromisoformat(when).replace(tzinfo=UTC)
    return AuditLog.objects.create(tenant=tenant, action=action, created_at=created_at, **fields)


def actions_on_page(response) -> set[str]:
    return {e.action for e, _target in response.context["rows"]}


def test_the_actor_filter_keeps_only_that_persons_entries(world, client_as):
    entry(world.acme, "test.by-dave", actor_label="dave@acme.example")
    entry(world.acme, "test.by-erin", actor_label="erin@acme.example")
    actions = actions_on_page(client_as(world.alice).get(url(), {"actor": "dave@"}))
    assert actions == {"test.by-dave"}


def test_the_action_filter_takes_an_action_or_a_family(world, client_as):
    alice = client_as(world.alice)
    assert actions_on_page(alice.get(url(), {"action": "key.create"})) == {"key.create"}
    family = actions_on_page(alice.get(url(), {"action": "key"}))
    assert "key.create" in family and all(a.startswith("key.") for a in family)
    assert actions_on_page(alice.get(url(), {"action": "ke"})) == set()


def test_the_target_filter_matches_labels_and_current_names(world, client_as):
    key = world.objects["key"]
    rate_limit_set(world.acme, scope="key", ref=str(key.id), rpm=60, tpm=None, actor=Actor(user=world.alice))
    entry(world.acme, "test.other", target_type="Prices", target_label="acme")
    response = client_as(world.alice).get(url(), {"target": "acme-service"})
    actions = actions_on_page(response)
    # key.create stored the name in its label; the rate limit stored "key:<id>" and is found by the key's name.
    assert {"key.create", "limits.update"} <= actions and "test.other" not in actions


def test_the_date_filter_takes_whole_utc_days(world, client_as):
    entry(world.acme, "test.before", when="2025-03-09 23:59")
    entry(world.acme, "test.first", when="2025-03-10 00:00")
    entry(world.acme, "test.last", when="2025-03-11 23:59:59")
    entry(world.acme, "test.after", when="2025-03-12 00:00")
    alice = client_as(world.alice)
    actions = actions_on_page(alice.get(url(), {"since": "2025-03-10", "until": "2025-03-11"}))
    assert actions == {"test.first", "test.last"}
    assert actions_on_page(alice.get(url(), {"until": "2025-03-09"})) == {"test.before"}


def test_filters_combine_and_older_pages_keep_them(world, client_as):
    AuditLog.objects.bulk_create(
        [AuditLog(tenant=world.acme, actor_label="cli", action="test.bulk") for _ in range(60)]
    )
    entry(world.acme, "test.bulk", actor_label="dave@acme.example")
    alice = client_as(world.alice)
    response = alice.get(url(), {"actor": "cli", "action": "test.bulk"})
    assert len(response.context["rows"]) == 50
    assert "actor=cli&amp;action=test.bulk&amp;page=2" in response.content.decode()
    more = alice.get(url(), {"actor": "cli", "action": "test.bulk", "page": "2"}, **HTMX)
    assert [e.actor_label for e, _ in more.context["rows"]] == ["cli"] * 10
    assert "<html" not in more.content.decode()


def test_sign_ins_are_hidden_by_default_and_shown_on_request(world, client_as):
    entry(world.acme, "user.login", actor=world.dave, actor_label="dave@acme.example", target_label="dave@acme.example")
    alice = client_as(world.alice)
    default = alice.get(url())
    assert "user.login" not in actions_on_page(default)
    assert "Show sign-ins" in default.content.decode()
    shown = alice.get(url(), {"sign_ins": "on"})
    assert "user.login" in actions_on_page(shown) and "key.create" in actions_on_page(shown)
    assert "Hide sign-ins" in shown.content.decode()
    # Asking for the sign-in action itself shows them too.
    assert actions_on_page(alice.get(url(), {"action": "user.login"})) == {"user.login"}


def test_sign_ins_toggle_keeps_the_other_filters(world, client_as):
    body = client_as(world.alice).get(url(), {"actor": "dave"}).content.decode()
    assert 'href="?actor=dave&amp;sign_ins=on"' in body


def test_a_keys_row_shows_the_keys_name_not_its_id(world, client_as):
    key = world.objects["key"]
    rate_limit_set(world.acme, scope="key", ref=str(key.id), rpm=60, tpm=None, actor=Actor(user=world.alice))
    entry(world.acme, "test.bare-key", target_type="VirtualKey", target_id=str(key.id), target_label="")
    response = client_as(world.alice).get(url())
    targets = {e.action: target for e, target in response.context["rows"]}
    assert targets["limits.update"] == "key acme-service"
    assert targets["test.bare-key"] == "acme-service"
    assert f"key:{key.id}<" not in response.content.decode()


def test_a_renamed_key_is_shown_by_its_current_name(world, client_as):
    key = world.objects["key"]
    entry(world.acme, "test.bare-key", target_type="VirtualKey", target_id=str(key.id), target_label=str(key.id))
    key.name = "renamed-service"
    key.save(update_fields=["name"])
    targets = {e.action: t for e, t in client_as(world.alice).get(url()).context["rows"]}
    assert targets["test.bare-key"] == "renamed-service"


def test_a_deleted_target_falls_back_to_the_stored_label(world, client_as):
    entry(world.acme, "limits.update", target_type="RateLimit", target_label="key:999999")
    targets = {e.action: t for e, t in client_as(world.alice).get(url()).context["rows"]}
    assert targets["limits.update"] == "key:999999"


def test_target_names_cost_one_query_per_type_not_per_row(world, client_as):
    alice = client_as(world.alice)
    actor = Actor(user=world.alice)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            alice.get(url(), {"action": "limits.update"})
        return len(captured)

    key = world.objects["key"]
    rate_limit_set(world.acme, scope="key", ref=str(key.id), rpm=60, tpm=None, actor=actor)
    few = queries()
    for i in range(5):
        extra, _secret = virtual_key_create(world.acme, name=f"extra-{i}", actor=actor)
        rate_limit_set(world.acme, scope="key", ref=str(extra.id), rpm=60, tpm=None, actor=actor)
    assert queries() == few


def test_bob_never_sees_acmes_entries(world, client_as):
    g_key = world.objects["g_key"]
    entry(world.acme, "test.acme-only", actor_label="alice@acme.example", target_label="acme-secret")
    # An acme row naming globex's key by id must not reveal that key's name.
    entry(world.acme, "test.forged", target_type="VirtualKey", target_id=str(g_key.id), target_label="")
    # Sign-ins have no tenant: each tenant sees only its own members'.
    AuditLog.objects.create(tenant=None, action="user.login", actor=world.dave, actor_label="dave@acme.example")
    bob = client_as(world.bob)
    assert bob.get(url("acme")).status_code == 404
    assert bob.get(url("acme"), {"actor": "alice"}).status_code == 404
    response = bob.get(url("globex"), {"target": "acme", "sign_ins": "on"})
    assert response.status_code == 200 and response.context["rows"] == []
    assert "dave@acme.example" not in bob.get(url("globex"), {"sign_ins": "on"}).content.decode()
    body = bob.get(url("globex")).content.decode()
    assert "acme" not in body and "globex-service" in body
    targets = {e.action: t for e, t in client_as(world.alice).get(url()).context["rows"]}
    assert targets["test.forged"] == ""  # globex's key name stays unknown to acme


def test_a_bad_date_is_a_form_error_not_a_500(world, client_as):
    alice = client_as(world.alice)
    response = alice.get(url(), {"since": "2025-13-45"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Enter a valid date." in body and "Check the filters" in body
    assert response.context["rows"] == []
    backwards = alice.get(url(), {"since": "2025-03-10", "until": "2025-03-01"}, **HTMX)
    assert backwards.status_code == 200  # htmx swaps the form with its error in place
    assert "The end date must be on or after the start date." in backwards.content.decode()
    assert alice.get(url(), {"until": "9999-12-31"}).status_code == 200


def test_the_filter_form_answers_htmx_with_the_form_and_table(world, client_as):
    body = client_as(world.alice).get(url(), {"action": "key"}, **HTMX).content.decode()
    assert "<html" not in body and 'id="audit-rows"' in body and "<form" in body
