"""The key page's usage panel: calls, spend and last use of one key, and a link to its calls.

Alice owns acme and its key acme-service; Erin, a member of acme, has her own key erin-notebook; Bob owns
globex. The panel is observability's (the rollups are below tenants' reach), loaded into the key page
with htmx. Bob never sees acme's figures, and Erin sees only her own key's, as on the key page itself.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import transaction
from django.urls import reverse

from observability.logbuffer import DatabaseSink
from observability.selectors import key_activity
from tenants.models import VirtualKey
from tests.helpers.billing import record
from tests.helpers.people import World, build_world

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}
PICO = 10**12


@pytest.fixture(scope="module")
def _world_once(django_db_setup, django_db_blocker):
    """The two tenants, built once for the module; each test runs in a savepoint of this transaction."""
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield build_world()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture
def world(_world_once: World, db) -> World:
    return _world_once


def calls(key, *ago_and_cost: tuple[timedelta, int | None], now: datetime) -> list[dict]:
    """Calls made with `key` that long ago at that cost (picodollars; None: unpriced), written as the log
    writer does: the row, its ledger entry and the rollups the panel reads."""
    records = []
    for i, (ago, cost) in enumerate(ago_and_cost):
        r = record(key.tenant, key, cost=cost)
        at = now - ago
        r.update(created_at=at, day=at.date(), request_id=f"req-{key.name}-{i}")
        records.append(r)
    DatabaseSink().write(records)
    return records


def usage_url(key, slug: str = "acme") -> str:
    return reverse("key-usage", kwargs={"slug": slug, "key_id": key.id})


def text(response) -> str:
    """The words a reader sees: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def panel(client, key) -> str:
    response = client.get(usage_url(key), **HTMX)
    assert response.status_code == 200
    return response.content.decode()


# --- The figures -----------------------------------------------------------------------------------


def test_alices_key_shows_its_calls_spend_and_last_use(world, client_as):
    key, now = world.objects["key"], datetime.now(UTC)
    newest = calls(
        key,
        (timedelta(minutes=2), 3 * PICO // 2),  # $1.50
        (timedelta(hours=3), 4_250_000_000),  # $0.00425
        (timedelta(hours=5), None),  # unpriced: a call, no spend
        (timedelta(days=3), 20 * PICO + 1),  # $20 and a picodollar, outside the last 24 hours
        now=now,
    )[0]
    # Calls of other keys, in acme and in globex, count for nobody's panel but their own.
    calls(world.objects["erin_key"], (timedelta(minutes=1), 7 * PICO), now=now)
    calls(world.objects["g_key"], (timedelta(minutes=1), 9 * PICO), now=now)

    response = client_as(world.alice).get(usage_url(key), **HTMX)

    page = text(response)
    assert "Last 24 hours 3 $1.50" in page
    assert "Last 30 days 4 $21.50" in page
    html = response.content.decode()
    assert 'title="$1.50425 exactly"' in html
    assert 'title="$21.504250000001 exactly"' in html
    assert f"Last used {newest['created_at']:%Y-%m-%d %H:%M} UTC" in page
    assert "Never used" not in page


def test_a_key_without_calls_says_never_used(world, client_as):
    page = text(client_as(world.erin).get(usage_url(world.objects["erin_key"]), **HTMX))
    assert "Never used." in page
    assert "Last 24 hours 0 $0.00" in page and "Last 30 days 0 $0.00" in page


def test_a_key_idle_for_a_month_still_shows_when_it_was_last_used(world, client_as):
    key = world.objects["key"]
    (old,) = calls(key, (timedelta(days=40), PICO), now=datetime.now(UTC))
    page = text(client_as(world.alice).get(usage_url(key), **HTMX))
    assert "Last 30 days 0 $0.00" in page
    assert f"Last used {old['created_at']:%Y-%m-%d %H:%M} UTC" in page


def test_a_key_older_than_the_kept_logs_does_not_claim_it_was_never_used(world, client_as):
    key = world.objects["key"]
    VirtualKey.objects.filter(id=key.id).update(created_at=datetime.now(UTC) - timedelta(days=60))
    page = text(client_as(world.alice).get(usage_url(key), **HTMX))
    assert "Not used in the last 30 days (older calls are not kept)." in page
    assert "Never used" not in page


def test_the_figures_cost_one_query_and_a_second_for_a_key_idle_for_a_month(world, django_assert_num_queries):
    key, now = world.objects["key"], datetime.now(UTC)
    calls(key, (timedelta(days=40), PICO), now=now)
    with django_assert_num_queries(2):
        idle = key_activity(world.acme, key, now=now)
    calls(key, (timedelta(hours=1), PICO), now=now)
    with django_assert_num_queries(1):
        used = key_activity(world.acme, key, now=now)
    assert idle.last_at == now - timedelta(days=40)
    assert used.last_at == now - timedelta(hours=1)
    assert (used.last_24_hours.calls, used.last_24_hours.cost_picodollars) == (1, PICO)


# --- The page and the link -------------------------------------------------------------------------


def test_the_key_page_loads_the_usage_panel(world, client_as):
    key = world.objects["key"]
    response = client_as(world.alice).get(reverse("key-detail", kwargs={"slug": "acme", "key_id": key.id}))
    html = response.content.decode()
    assert f'hx-get="{usage_url(key)}" hx-trigger="load"' in html
    # Without JavaScript, a plain link to the same figures.
    assert f'<a href="{usage_url(key)}">Calls, spend and last use of this key</a>' in html


def test_without_htmx_the_usage_is_a_page_of_its_own(world, client_as):
    response = client_as(world.alice).get(usage_url(world.objects["key"]))
    html = response.content.decode()
    assert "<title>Usage · acme-service · Virtual keys · Acme Corp · LLM Gateway</title>" in html
    assert "View this key's calls" in html


def test_the_link_opens_the_explorer_on_this_keys_calls_only(world, client_as):
    key, erin_key, now = world.objects["key"], world.objects["erin_key"], datetime.now(UTC)
    calls(key, (timedelta(minutes=5), PICO), (timedelta(days=10), PICO), now=now)
    calls(erin_key, (timedelta(minutes=4), PICO), now=now)
    client = client_as(world.alice)

    html = panel(client, key)
    href = unescape(re.search(r'id="key-calls-link" href="([^"]+)">View this key\'s calls</a>', html).group(1))
    url = urlsplit(href)
    query = parse_qs(url.query)
    assert url.path == reverse("log-explorer", kwargs={"slug": "acme"})
    assert query["key"] == [str(key.id)]
    # The explorer opens on the panel's 30 days (its own default is 7), so it lists the calls counted.
    since = datetime.strptime(query["since"][0], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    assert since == (now - timedelta(days=30)).replace(minute=0, second=0, microsecond=0)

    explorer = client.get(href).content.decode()
    listed = set(re.findall(r">(req-[\w-]+)</a>", explorer))
    assert listed == {"req-acme-service-0", "req-acme-service-1"}


# --- Who sees what ---------------------------------------------------------------------------------


def test_bob_from_globex_gets_404_for_acmes_key_usage(world, client_as):
    key = world.objects["key"]
    calls(key, (timedelta(minutes=2), PICO), now=datetime.now(UTC))
    bob = client_as(world.bob)
    assert bob.get(usage_url(key), **HTMX).status_code == 404
    # Acme's key under Bob's own tenant is no more his.
    assert bob.get(usage_url(key, slug="globex"), **HTMX).status_code == 404
    assert bob.get(reverse("key-detail", kwargs={"slug": "acme", "key_id": key.id})).status_code == 404


def test_erin_sees_her_own_keys_usage_but_not_alices(world, client_as):
    now = datetime.now(UTC)
    calls(world.objects["key"], (timedelta(minutes=2), PICO), now=now)
    calls(world.objects["erin_key"], (timedelta(minutes=3), 2 * PICO), now=now)
    erin = client_as(world.erin)
    assert "Last 24 hours 1 $2.00" in text(erin.get(usage_url(world.objects["erin_key"]), **HTMX))
    # A member does not see other people's keys at all (the key page's own rule): 404, not 403.
    assert erin.get(usage_url(world.objects["key"]), **HTMX).status_code == 404


def test_charlie_the_viewer_reads_any_keys_usage(world, client_as):
    calls(world.objects["erin_key"], (timedelta(minutes=3), 2 * PICO), now=datetime.now(UTC))
    page = text(client_as(world.charlie).get(usage_url(world.objects["erin_key"]), **HTMX))
    assert "Last 24 hours 1 $2.00" in page
