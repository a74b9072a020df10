"""The log explorer sorted by a score (`sort=score.<name>`, `order=desc|asc`): the calls having it by its
value (the mean of its sources), ties newest first, then the calls without it, newest first; keyset pages
that neither skip nor repeat a call across that seam.

Alice owns acme, Erin is a member there (she sees her own key's calls only), Bob owns globex.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from observability.models import CallLog, CallScore
from observability.selectors import LogFilters, score_sorted_page

pytestmark = pytest.mark.usefixtures("console_defaults")

NOW = datetime.now(UTC).replace(microsecond=0)
# call index -> helpfulness scores by source; calls 5 and 6 have none. Call 1's two sources mean 3.
SCORES = {
    0: {"feedback": 4.0},
    1: {"feedback": 5.0, "judge": 1.0},
    2: {"judge": 5.0},
    3: {"judge": 2.0},
    4: {"judge": 3.0},
}


def _calls(tenant, key, n: int = 7, *, prefix: str = "") -> list[CallLog]:
    """Call i is i minutes old; its helpfulness scores are SCORES[i]; each call also has a thumbs up."""
    logs = CallLog.objects.bulk_create(
        CallLog(
            tenant=tenant,
            virtual_key_id=key.id,
            created_at=NOW - timedelta(minutes=i),
            request_id=f"{prefix}req-{i}",
            call_id=f"{prefix}call_{i}",
            endpoint="chat/completions",
            requested_model="gpt-4o-mini",
            status_code=200,
            latency_ms=10.0,
        )
        for i in range(n)
    )
    CallScore.objects.bulk_create(
        [
            CallScore(
                tenant_id=tenant.id,
                call_id=log.call_id,
                request_id=log.request_id,
                call_created_at=log.created_at,
                name=name,
                source=source,
                value=value,
                virtual_key_id=key.id,
            )
            for i, log in enumerate(logs)
            for name, source, value in [
                *(("helpfulness", source, value) for source, value in SCORES.get(i, {}).items()),
                ("thumbs", "feedback", 1.0),
            ]
        ]
    )
    return logs


def _ids(rows) -> list[str]:
    return [row.request_id.removeprefix("req-") for row in rows]


def test_calls_sort_by_their_score_and_those_without_it_come_last(world, client_as):
    _calls(world.acme, world.objects["key"])
    alice = client_as(world.alice)
    url = reverse("log-explorer", args=["acme"])
    response = alice.get(url, {"sort": "score.helpfulness"})
    assert response.status_code == 200
    rows = [row for row, _key in response.context["rows"]]
    # 5, 4, 3 (call 1: the mean of 5 and 1), 3 (call 4: older), 2; then 5 and 6, newest first.
    assert _ids(rows) == ["2", "0", "1", "4", "3", "5", "6"]
    assert [row.score_value for row in rows] == [5.0, 4.0, 3.0, 3.0, 2.0, None, None]
    assert b"helpfulness</th>" in response.content
    rows = [row for row, _key in alice.get(url, {"sort": "score.helpfulness", "order": "asc"}).context["rows"]]
    assert _ids(rows) == ["3", "1", "4", "0", "2", "5", "6"]
    # Sorted by a score no call has: every call, newest first. Other filters still apply.
    rows = [row for row, _key in alice.get(url, {"sort": "score.nobody"}).context["rows"]]
    assert _ids(rows) == ["0", "1", "2", "3", "4", "5", "6"]
    rows = [row for row, _ in alice.get(url, {"sort": "score.helpfulness", "score": "helpfulness>=3"}).context["rows"]]
    assert _ids(rows) == ["2", "0", "1", "4"]
    bad = alice.get(url, {"sort": "helpfulness; drop table"})
    assert bad.status_code == 400 and "sort" in bad.context["form"].errors


def test_pages_cross_from_scored_to_unscored_calls_without_a_gap(world):
    _calls(world.acme, world.objects["key"])
    filters = LogFilters(since=NOW - timedelta(days=1))
    for ascending in (False, True):
        for size in (1, 2, 3, 5, 7):
            seen, cursor = [], ""
            while True:
                page, cursor = score_sorted_page(
                    world.acme, filters, name="helpfulness", ascending=ascending, cursor=cursor, size=size
                )
                assert len(page) <= size
                seen += _ids(page)
                if not cursor:
                    break
            expected = ["3", "1", "4", "0", "2"] if ascending else ["2", "0", "1", "4", "3"]
            assert seen == [*expected, "5", "6"], (ascending, size)


def test_a_member_sorts_her_own_calls_and_bob_never_sees_acmes(world, client_as):
    _calls(world.acme, world.objects["key"])
    _calls(world.acme, world.objects["erin_key"], 2, prefix="erin-")
    _calls(world.globex, world.objects["g_key"], 3, prefix="globex-")
    url = reverse("log-explorer", args=["acme"])
    rows = [row for row, _ in client_as(world.erin).get(url, {"sort": "score.helpfulness"}).context["rows"]]
    assert [row.request_id for row in rows] == ["erin-req-0", "erin-req-1"]
    bob = client_as(world.bob)
    assert bob.get(url, {"sort": "score.helpfulness"}).status_code == 404
    rows = [
        row
        for row, _ in bob.get(reverse("log-explorer", args=["globex"]), {"sort": "score.helpfulness"}).context["rows"]
    ]
    assert {row.tenant_id for row in rows} == {world.globex.id} and len(rows) == 3


def test_the_load_more_link_keeps_the_sort(world, client_as, monkeypatch):
    from observability import selectors

    _calls(world.acme, world.objects["key"])
    monkeypatch.setattr(selectors, "PAGE_SIZE", 3)
    alice = client_as(world.alice)
    url = reverse("log-explorer", args=["acme"])
    first = alice.get(url, {"sort": "score.helpfulness"})
    cursor = first.context["next_cursor"]
    assert cursor.startswith("s") and "sort=score.helpfulness" in first.context["query"]
    second = alice.get(url, {"sort": "score.helpfulness", "cursor": cursor}, headers={"HX-Request": "true"})
    assert _ids(row for row, _ in second.context["rows"]) == ["4", "3", "5"]
    third = alice.get(url, {"sort": "score.helpfulness", "cursor": second.context["next_cursor"]})
    assert _ids(row for row, _ in third.context["rows"]) == ["6"] and third.context["next_cursor"] == ""
