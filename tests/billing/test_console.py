"""Console pages for budgets, rate limits and spend.

The people of the `world` fixture (tests.helpers.people): in acme Alice (owner), Dave (admin), Erin (member, owns the
key "erin-notebook"), Charlie (viewer); Bob owns globex. Alice created the key "acme-service".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import BillingSettings, Budget, LimitScope, RateLimit
from billing.periods import period_start
from tenants.models import AuditLog, Role
from tests.helpers.billing import spend

pytestmark = pytest.mark.usefixtures("console_defaults")


HTMX = {"HX-Request": "true"}


def budget(tenant, scope: str = "tenant", limit: str = "10", **kwargs) -> Budget:
    fields = {"period": "month", "mode": "hard", "alert_at": [50, 80, 100], **kwargs}
    return Budget.objects.create(tenant=tenant, scope=scope, limit_usd=Decimal(limit), **fields)


# --- Budgets ---------------------------------------------------------------------------------------


def test_it_shows_spend_against_the_tenant_budget_as_an_accessible_bar(world, client_as):
    budget(world.acme, limit="10")
    spend(world.acme, "8.5", key=world.objects["key"])
    html = client_as(world.alice).get(reverse("budgets", args=["acme"])).content.decode()
    assert 'role="progressbar"' in html
    assert 'aria-valuenow="85"' in html
    assert "$8.50 of $10.00 (85%)" in html
    assert "usage-warn" in html  # 80 % and up
    assert "$1.50" in html  # remaining


def test_the_bar_turns_red_and_stops_at_full_when_a_soft_budget_is_overspent(world, client_as):
    budget(world.acme, limit="1", mode="soft")
    spend(world.acme, "1.25")
    html = client_as(world.charlie).get(reverse("budgets", args=["acme"])).content.decode()
    assert "usage-over" in html
    assert 'aria-valuenow="100"' in html
    assert "125%" in html
    assert "over budget" in html


def test_spend_before_this_period_does_not_count(world, client_as):
    budget(world.acme, limit="10")
    month_start = period_start("month", datetime.now(UTC), UTC)
    spend(world.acme, "7", day=month_start - timedelta(days=1))
    spend(world.acme, "1")
    html = client_as(world.alice).get(reverse("budgets", args=["acme"])).content.decode()
    assert "$1.00 of $10.00 (10%)" in html


def test_erin_sees_the_tenant_budget_and_her_own_keys_budgets_only(world, client_as):
    budget(world.acme, "tenant", "100")
    budget(world.acme, "key:erin-notebook", "5")
    budget(world.acme, "key:acme-service", "50")
    budget(world.acme, "tag:search", "20")
    html = client_as(world.erin).get(reverse("budgets", args=["acme"])).content.decode()
    assert "<code>tenant</code>" in html
    assert "key:erin-notebook" in html
    assert "key:acme-service" not in html
    assert "tag:search" not in html
    # Read-only for a member.
    assert "Add a budget" not in html
    assert "Delete" not in html


def test_erin_sees_her_keys_spend_this_month_and_the_budget_left(world, client_as):
    budget(world.acme, "tenant", "100")
    budget(world.acme, "key:erin-notebook", "5")
    spend(world.acme, "2", key=world.objects["erin_key"])
    spend(world.acme, "40", key=world.objects["key"])  # Alice's: counts for the tenant budget only
    html = client_as(world.erin).get(reverse("budgets", args=["acme"])).content.decode()
    assert "Your keys this month" in html
    own = html.split("Your keys this month")[1].split("</section>")[0]
    assert "erin-notebook" in own
    assert "$2.00" in own
    # The key budget (5 - 2 = 3 left) is tighter than the tenant one (100 - 42 = 58 left).
    assert "key:erin-notebook" in own
    assert "$3.00" in own
    assert "acme-service" not in own


def test_an_admin_adds_a_budget_in_place_with_htmx(world, client_as):
    response = client_as(world.dave).post(
        reverse("budgets", args=["acme"]),
        {"scope": "key:erin-notebook", "limit_usd": "25", "period": "week", "mode": "soft", "alert_at": "50, 90"},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "budgets-changed" in response["HX-Trigger"]
    b = Budget.objects.get(tenant=world.acme, scope="key:erin-notebook", period="week")
    assert (b.limit_usd, b.mode, b.alert_at) == (Decimal(25), "soft", [50, 90])
    assert AuditLog.objects.filter(tenant=world.acme, action="budget.create", actor=world.dave).exists()


def test_adding_a_budget_works_without_javascript(world, client_as):
    response = client_as(world.alice).post(
        reverse("budgets", args=["acme"]), {"scope": "tenant", "limit_usd": "100", "period": "month", "mode": "hard"}
    )
    assert response.status_code == 302
    assert Budget.objects.filter(tenant=world.acme, scope="tenant", limit_usd=100).exists()


def test_an_unknown_scope_is_explained_on_the_field(world, client_as):
    response = client_as(world.dave).post(
        reverse("budgets", args=["acme"]),
        {"scope": "team:search", "limit_usd": "1", "period": "month", "mode": "hard"},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "Unknown budget scope" in response.content.decode()
    assert not Budget.objects.filter(tenant=world.acme).exists()


def test_an_admin_edits_a_budget_inline(world, client_as):
    b = budget(world.acme, limit="10")
    client = client_as(world.dave)
    url = reverse("budget-detail", args=["acme", b.id])
    form = client.get(url, headers=HTMX).content.decode()
    assert 'class="editing"' in form and 'name="limit_usd"' in form
    # Scope and period identify the budget: a posted scope is ignored.
    response = client.post(
        url, {"scope": "tag:x", "limit_usd": "20", "mode": "soft", "alert_at": "80", "period": "day"}, headers=HTMX
    )
    assert response.status_code == 200
    assert "$20.00" in response.content.decode()
    b.refresh_from_db()
    assert (b.scope, b.period, b.limit_usd, b.mode, b.alert_at) == ("tenant", "month", Decimal(20), "soft", [80])


def test_an_admin_deletes_a_budget(world, client_as):
    b = budget(world.acme)
    response = client_as(world.dave).post(reverse("budget-delete", args=["acme", b.id]), headers=HTMX)
    assert response.status_code == 200 and "budgets-changed" in response["HX-Trigger"]
    assert not Budget.objects.filter(id=b.id).exists()


def test_charlie_the_viewer_reads_every_budget_but_changes_none(world, client_as):
    b = budget(world.acme, "key:acme-service")
    client = client_as(world.charlie)
    html = client.get(reverse("budgets", args=["acme"])).content.decode()
    assert "key:acme-service" in html
    assert "Add a budget" not in html
    response = client.post(reverse("budget-detail", args=["acme", b.id]), {"limit_usd": "1", "mode": "soft"})
    assert response.status_code == 403
    b.refresh_from_db()
    assert b.limit_usd == Decimal(10)


def test_bob_cannot_reach_acmes_budget_through_globex(world, client_as):
    b = budget(world.acme)
    client = client_as(world.bob)
    assert client.get(reverse("budget-detail", args=["globex", b.id])).status_code == 404
    assert client.post(reverse("budget-delete", args=["globex", b.id])).status_code == 404
    assert Budget.objects.filter(id=b.id).exists()
    # And Acme's spend is nowhere on Globex's pages.
    budget(world.globex, limit="3")
    spend(world.acme, "2.75")
    html = client.get(reverse("budgets", args=["globex"])).content.decode()
    assert "$0.00 of $3.00" in html


# --- Rate limits -----------------------------------------------------------------------------------


def test_an_admin_sets_the_tenant_limits(world, client_as):
    response = client_as(world.dave).post(reverse("limits", args=["acme"]), {"rpm": "600", "tpm": "100000"})
    assert response.status_code == 302
    limit = RateLimit.objects.get(tenant=world.acme, scope=LimitScope.TENANT)
    assert (limit.rpm, limit.tpm) == (600, 100000)


def test_an_admin_sets_a_keys_limits_inline(world, client_as):
    key = world.objects["erin_key"]
    response = client_as(world.dave).post(
        reverse("key-limits", args=["acme", key.id]), {"rpm": "60", "tpm": "", "max_parallel": "2"}, headers=HTMX
    )
    assert response.status_code == 200
    assert "Saved" in response.content.decode()
    limit = RateLimit.objects.get(tenant=world.acme, scope=LimitScope.KEY, ref=str(key.id))
    assert (limit.rpm, limit.tpm, limit.max_parallel) == (60, None, 2)


def test_a_zero_limit_is_refused_with_a_reason(world, client_as):
    key = world.objects["key"]
    response = client_as(world.alice).post(reverse("key-limits", args=["acme", key.id]), {"rpm": "0"}, headers=HTMX)
    assert 'role="alert"' in response.content.decode()
    assert not RateLimit.objects.filter(tenant=world.acme).exists()


def test_erin_reads_her_own_keys_limits_only(world, client_as):
    RateLimit.objects.create(tenant=world.acme, scope=LimitScope.KEY, ref=str(world.objects["erin_key"].id), rpm=77)
    html = client_as(world.erin).get(reverse("limits", args=["acme"])).content.decode()
    assert "erin-notebook" in html and ">77<" in html
    assert "acme-service" not in html
    assert 'name="max_parallel"' not in html  # read-only


# --- Spend -----------------------------------------------------------------------------------------


def test_alice_sees_this_months_spend_by_key_and_by_model(world, client_as):
    spend(world.acme, "1.5", key=world.objects["key"], model="gpt-4o-mini")
    spend(world.acme, "0.25", key=world.objects["erin_key"], model="claude-sonnet-4")
    spend(world.globex, "99", key=world.objects["g_key"])
    html = client_as(world.alice).get(reverse("spend", args=["acme"])).content.decode()
    assert "$1.75" in html  # total
    assert "acme-service" in html and "erin-notebook" in html
    assert "claude-sonnet-4" in html and ">$0.25<" in html
    assert "$99" not in html


def test_erin_sees_only_what_her_keys_spent(world, client_as):
    spend(world.acme, "1.5", key=world.objects["key"], model="gpt-4o-mini")
    spend(world.acme, "0.25", key=world.objects["erin_key"], model="claude-sonnet-4")
    html = client_as(world.erin).get(reverse("spend", args=["acme"])).content.decode()
    assert "What your keys spent" in html
    assert "erin-notebook" in html and ">$0.25<" in html
    assert "acme-service" not in html and "$1.50" not in html and "gpt-4o-mini" not in html


def test_an_admin_sets_the_billing_time_zone(world, client_as):
    response = client_as(world.dave).post(reverse("spend", args=["acme"]), {"timezone": "Europe/Berlin"}, headers=HTMX)
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("spend", args=["acme"])
    assert BillingSettings.objects.get(tenant=world.acme).timezone == "Europe/Berlin"


def test_an_unknown_time_zone_is_explained(world, client_as):
    response = client_as(world.dave).post(reverse("spend", args=["acme"]), {"timezone": "Mars/Olympus"}, headers=HTMX)
    assert "Unknown time zone" in response.content.decode()
    assert not BillingSettings.objects.filter(tenant=world.acme).exists()


def test_the_navigation_links_the_money_pages(world, client_as):
    html = client_as(world.charlie).get(reverse("tenant-overview", args=["acme"])).content.decode()
    for name in ("budgets", "limits", "spend"):
        assert f'href="{reverse(name, args=["acme"])}"' in html


# --- Management API --------------------------------------------------------------------------------


def test_an_admin_token_creates_and_lists_budgets_with_their_spend(world, api_as):
    api = api_as(Role.ADMIN)
    spend(world.acme, "2.5")
    response = api.post(
        reverse("api-budgets"),
        {"scope": "tenant", "limit_usd": "10", "period": "month"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    listed = api.get(reverse("api-budgets")).json()
    assert listed == [
        {
            "id": response.json()["id"],
            "scope": "tenant",
            "period": "month",
            "mode": "hard",
            "limit_usd": "10.000000",
            "alert_at": [50, 80, 100],
            "spent_usd": "2.5",
            "remaining_usd": "7.5",
            "percent": 25,
        }
    ]


def test_a_globex_token_cannot_delete_acmes_budget(world, api_as):
    b = budget(world.acme)
    response = api_as(Role.OWNER, world.globex).delete(reverse("api-budget-detail", args=[b.id]))
    assert response.status_code == 404
    assert Budget.objects.filter(id=b.id).exists()


def test_spend_over_the_api_is_the_cli_contract_and_a_members_token_sees_own_keys(world, api_as):
    spend(world.acme, "1.5", key=world.objects["key"])
    spend(world.acme, "0.25", key=world.objects["erin_key"], model="claude-sonnet-4")
    assert api_as(Role.VIEWER).get(reverse("api-spend")).json() == {
        "total_usd": "1.75",
        "by_key": {"acme-service": "1.5", "erin-notebook": "0.25"},
        "by_model": {"claude-sonnet-4": "0.25", "gpt-4o-mini": "1.5"},
    }
    # api_as mints tokens as Alice: a member token sees Alice's keys only.
    assert api_as(Role.MEMBER).get(reverse("api-spend")).json() == {
        "total_usd": "1.5",
        "by_key": {"acme-service": "1.5"},
        "by_model": {"gpt-4o-mini": "1.5"},
    }
