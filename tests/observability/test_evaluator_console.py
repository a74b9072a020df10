"""The evaluators page (observability.evaluator_views): the editor writes through the YAML grammar and
service, the preview scores a stored call without keeping the score, and a back-fill reports its progress.

Alice owns acme, Dave is an admin there, Erin a member; Bob owns globex and must never reach acme's page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.urls import reverse

from observability.models import CallBody, CallLog, CallScore, Evaluator
from tenants.config import export_config
from tenants.models import AuditLog

pytestmark = pytest.mark.usefixtures("console_defaults")

NOW = datetime.now(UTC).replace(microsecond=0)
JSON_OK = {"name": "valid-json", "kind": "json_valid", "score": "json_ok", "tags": "extract", "sample": "0.5"}


@pytest.fixture
def eager_celery():
    from gateway_project.celery import app

    before, app.conf.task_always_eager = app.conf.task_always_eager, True
    yield
    app.conf.task_always_eager = before


def _call(tenant, i: int, answer: str, *, bodies: bool = True) -> CallLog:
    """A logged call of `i` minutes ago, with its stored bodies (as the log writer stores them)."""
    at = NOW - timedelta(minutes=i)
    log = CallLog.objects.create(
        tenant=tenant,
        created_at=at,
        request_id=f"req-{i}",
        call_id=f"call_{i}",
        endpoint="chat/completions",
        requested_model="gpt-4o-mini",
        status_code=200,
        latency_ms=10.0,
    )
    if bodies:
        completion = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
        CallBody.objects.create(
            tenant_id=tenant.id,
            created_at=at,
            request_id=log.request_id,
            request_body='{"messages": [{"role": "user", "content": "hi"}]}',
            response_body=orjson.dumps(completion).decode(),
        )
    return log


def test_alice_adds_an_evaluator_and_it_is_in_the_export(world, client_as):
    alice = client_as(world.alice)
    url = reverse("evaluators", args=["acme"])
    assert alice.get(url).status_code == 200
    response = alice.post(url, JSON_OK, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == url
    e = Evaluator.objects.get(tenant=world.acme)
    assert (e.name, e.kind, e.score, e.tags_filter, e.sample) == (
        "valid-json",
        "json_valid",
        "json_ok",
        ["extract"],
        0.5,
    )
    exported = export_config(world.acme)
    assert "- name: valid-json\n  kind: json_valid\n  score: json_ok" in exported and "sample: 0.5" in exported
    assert AuditLog.objects.filter(tenant=world.acme, action="evaluators.set", actor=world.alice).exists()
    page = alice.get(url)
    assert b"valid-json" in page.content and b"json_ok" in page.content

    # Edited in place: the new values replace the old ones, the list keeps one evaluator.
    edit = reverse("evaluator-edit", args=["acme", "valid-json"])
    assert alice.get(edit).context["form"].initial["tags"] == "extract"
    editor = alice.get(edit, headers={"HX-Request": "true"}).content.decode()
    assert editor.lstrip().startswith('<form id="evaluator-form"') and 'value="valid-json"' in editor
    changed = {**JSON_OK, "original": "valid-json", "kind": "max_length", "max": "40", "sample": ""}
    assert alice.post(edit, changed).status_code == 302
    e = Evaluator.objects.get(tenant=world.acme)
    assert (e.kind, e.params, e.sample) == ("max_length", {"max": 40}, 1.0)
    # Deleted: gone from the export too.
    assert alice.post(reverse("evaluator-delete", args=["acme", "valid-json"])).status_code == 302
    assert not Evaluator.objects.filter(tenant=world.acme).exists()
    assert "evaluators:" not in export_config(world.acme)


def test_what_yaml_refuses_is_refused_next_to_its_field_and_nothing_is_written(world, client_as):
    alice = client_as(world.alice)
    url = reverse("evaluators", args=["acme"])
    alice.post(url, JSON_OK)
    bad = {
        "pattern": (
            {"name": "polite", "kind": "regex", "score": "polite", "pattern": "("},
            "not a valid regular expression",
        ),
        "score": (
            {"name": "judge", "kind": "llm", "score": "undefined", "model": "gpt-4o-mini", "prompt": "{answer}"},
            "define the score &#x27;undefined&#x27; under scores:",
        ),
        "model": (
            {"name": "judge", "kind": "llm", "score": "thumbs", "model": "nobody", "prompt": "{answer}"},
            "&#x27;nobody&#x27; is not a model of this tenant",
        ),
        "name": ({**JSON_OK, "score": "other"}, "the evaluator &#x27;valid-json&#x27; is defined twice"),
        "sample": ({**JSON_OK, "name": "again", "sample": "2"}, "sample is a share of the calls"),
        "value": ({**JSON_OK, "name": "again", "value": "x"}, "&#x27;value&#x27; is not a field of a json_valid"),
    }
    before = list(Evaluator.objects.filter(tenant=world.acme).values())
    for field, (data, message) in bad.items():
        response = alice.post(url, data, headers={"HX-Request": "true"})
        assert response.status_code == 200, field
        assert "HX-Redirect" not in response
        errors = response.context["form"].errors
        assert field in errors, (field, errors)
        html = response.content.decode()
        assert message in html and f'id="id_{field}_error"' in html, (field, html)
    assert list(Evaluator.objects.filter(tenant=world.acme).values()) == before
    assert AuditLog.objects.filter(tenant=world.acme, action="evaluators.set").count() == 1


def test_erin_reads_but_cannot_write_and_bob_gets_404(world, client_as):
    alice, erin, bob = client_as(world.alice), client_as(world.erin), client_as(world.bob)
    url = reverse("evaluators", args=["acme"])
    alice.post(url, JSON_OK)
    page = erin.get(url)
    assert page.status_code == 200 and b"valid-json" in page.content and b'id="evaluator-form"' not in page.content
    assert erin.post(url, {**JSON_OK, "name": "erins"}).status_code == 403
    assert erin.post(reverse("evaluator-delete", args=["acme", "valid-json"])).status_code == 403
    assert erin.post(reverse("evaluator-edit", args=["acme", "valid-json"]), JSON_OK).status_code == 403
    assert erin.post(reverse("evaluator-preview", args=["acme"]), JSON_OK).status_code == 403
    assert erin.post(reverse("evaluator-backfill", args=["acme"]), {}).status_code == 403
    assert list(Evaluator.objects.filter(tenant=world.acme).values_list("name", flat=True)) == ["valid-json"]
    for path in (
        url,
        reverse("evaluator-edit", args=["acme", "valid-json"]),
        reverse("evaluator-backfill-progress", args=["acme", "valid-json", "abc123"]),
    ):
        assert bob.get(path).status_code == 404, path
    for path in (
        url,
        reverse("evaluator-delete", args=["acme", "valid-json"]),
        reverse("evaluator-preview", args=["acme"]),
        reverse("evaluator-backfill", args=["acme"]),
    ):
        assert bob.post(path, JSON_OK).status_code == 404, path
    assert Evaluator.objects.filter(tenant=world.acme).count() == 1
    # Nor through his own tenant: acme's evaluator is no evaluator of globex.
    assert bob.get(reverse("evaluator-edit", args=["globex", "valid-json"])).status_code == 404


def test_the_preview_scores_a_recent_call_without_storing_a_score(world, client_as):
    alice = client_as(world.alice)
    url = reverse("evaluators", args=["acme"])
    page = alice.get(url)
    assert b"Body logging is off" in page.content
    world.acme.log_bodies = True
    world.acme.save(update_fields=["log_bodies"])
    assert b"No call has a stored body yet" in alice.get(url).content

    _call(world.acme, 1, '{"id": 7}')
    _call(world.acme, 2, "Sorry, no JSON today.")
    _call(world.acme, 3, "no bodies", bodies=False)
    calls = alice.get(url).context["calls"]
    assert [c.request_id for c in calls] == ["req-1", "req-2"]
    assert calls[0].model == "gpt-4o-mini"
    preview = reverse("evaluator-preview", args=["acme"])
    hx = {"HX-Request": "true"}
    # Unsaved: the editor's values are tried as they are.
    response = alice.post(preview, {**JSON_OK, "call": calls[0].body_id}, headers=hx)
    assert response.status_code == 200 and response.context["value"] == 1.0
    assert b"data-score>1<" in response.content
    response = alice.post(preview, {**JSON_OK, "call": calls[1].body_id}, headers=hx)
    assert response.context["value"] == 0.0
    response = alice.post(
        preview,
        {"name": "polite", "kind": "regex", "score": "p", "pattern": "(?i)sorry", "call": calls[1].body_id},
        headers=hx,
    )
    assert response.context["value"] == 1.0
    # A broken evaluator is refused as the editor would refuse it; nothing is run.
    response = alice.post(preview, {**JSON_OK, "kind": "regex", "pattern": "(", "call": calls[0].body_id}, headers=hx)
    assert "value" not in response.context and "not a valid regular expression" in response.context["preview_error"]
    # Bob's globex call is no call of acme's.
    globex_call = CallBody.objects.create(
        tenant_id=world.globex.id, created_at=NOW, request_id="g", request_body="{}", response_body="{}"
    )
    response = alice.post(preview, {**JSON_OK, "call": globex_call.id}, headers=hx)
    assert "value" not in response.context and response.context["preview_form"].errors
    assert not CallScore.objects.exists()


def test_a_backfill_scores_the_range_and_its_progress_reaches_the_total(world, client_as, eager_celery):
    alice = client_as(world.alice)
    alice.post(reverse("evaluators", args=["acme"]), {**JSON_OK, "tags": "", "sample": ""})
    for i, answer in enumerate(['{"a": 1}', "prose", "[1, 2]"], start=1):
        _call(world.acme, i, answer)
    _call(world.acme, 4, "{}", bodies=False)  # counted, not scored
    _call(world.acme, 90, "{}")  # before the range
    since = (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    response = alice.post(
        reverse("evaluator-backfill", args=["acme"]),
        {"evaluator": "valid-json", "since": since},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    run = response.context["run"]
    scores = dict(CallScore.objects.filter(tenant_id=world.acme.id, name="json_ok").values_list("call_id", "value"))
    assert scores == {"call_1": 1.0, "call_2": 0.0, "call_3": 1.0}
    assert AuditLog.objects.filter(tenant=world.acme, action="evaluators.backfill", target_label="valid-json").exists()

    # Eager here (as on the embedded default): the run is over when the form's answer comes back.
    assert response.context["progress"].finished
    progress_url = reverse("evaluator-backfill-progress", args=["acme", "valid-json", run])
    response = alice.get(progress_url, headers={"HX-Request": "true"})
    progress = response.context["progress"]
    assert (progress.state, progress.done, progress.total, progress.scored) == ("done", 4, 4, 3)
    assert b'hx-trigger="every 1s"' not in response.content  # finished: no more polling
    assert b"data-done>4<" in response.content and b"data-total>4<" in response.content
    # Without JavaScript the form lands on the page, which shows the same run.
    response = alice.post(reverse("evaluator-backfill", args=["acme"]), {"evaluator": "valid-json", "since": since})
    assert response.status_code == 302 and "run=" in response["Location"]
    assert alice.get(response["Location"]).context["progress"].state == "done"
    # Another tenant's person cannot read it, and an unknown run stops the polling.
    assert client_as(world.bob).get(progress_url).status_code == 404
    unknown = alice.get(
        reverse("evaluator-backfill-progress", args=["acme", "valid-json", "nope"]), headers={"HX-Request": "true"}
    )
    assert unknown.status_code == 200 and b"no longer known" in unknown.content
    assert b"every 1s" not in unknown.content


def test_a_running_backfill_asks_again_each_second(world, client_as):
    """What the page shows while a worker runs it: the poller stays until the run is finished."""
    from observability.backfills import BackfillProgress, _save

    alice = client_as(world.alice)
    _save(world.acme.id, "run1", BackfillProgress("valid-json", NOW.isoformat(), NOW.isoformat(), "running", 2, 5, 1))
    url = reverse("evaluator-backfill-progress", args=["acme", "valid-json", "run1"])
    response = alice.get(url, headers={"HX-Request": "true"})
    assert b'hx-trigger="every 1s"' in response.content and url.encode() in response.content
    assert b"data-done>2<" in response.content and b"data-total>5<" in response.content
    # Its tenant is in the key: globex's id finds nothing under the same run id.
    bob = client_as(world.bob)
    assert bob.get(reverse("evaluator-backfill-progress", args=["globex", "valid-json", "run1"])).status_code == 404
