"""The live page starts with the latest stored calls (not empty): the 50 newest, oldest first, as the
socket would send them; Erin (member) gets only her own key's calls; Bob's globex none of acme's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from observability.logbuffer import DatabaseSink
from tests.helpers.billing import record

pytestmark = pytest.mark.usefixtures("console_defaults")


def _initial(client, slug: str) -> list[dict]:
    page = client.get(reverse("logs-live", kwargs={"slug": slug})).content.decode()
    start = page.index('<script id="live-initial" type="application/json">') + len(
        '<script id="live-initial" type="application/json">'
    )
    return json.loads(page[start : page.index("</script>", start)])


@pytest.mark.django_db
def test_the_live_page_starts_with_the_latest_calls(world, client_as):
    start = datetime(2026, 12, 7, 9, tzinfo=UTC)
    rows = []
    for n in range(60):
        key = world.objects["erin_key"] if n % 4 == 0 else world.objects["key"]
        row = record(world.acme, key, cost=1_000 * n)
        row.update(created_at=start + timedelta(seconds=n), request_id=f"req-{n}")
        rows.append(row)
    rows.append({**record(world.globex, world.objects["g_key"], cost=1), "request_id": "globex-call"})
    DatabaseSink().write(rows)

    calls = _initial(client_as(world.alice), "acme")
    assert [c["request_id"] for c in calls] == [f"req-{n}" for n in range(10, 60)]  # the 50 newest, oldest first
    assert calls[-1]["key"] == "acme-service" and calls[-1]["cost_usd"] == "0.000000059"
    erin = _initial(client_as(world.erin), "acme")
    assert {c["key"] for c in erin} == {"erin-notebook"} and len(erin) == 15
    assert [c["request_id"] for c in _initial(client_as(world.bob), "globex")] == ["globex-call"]
