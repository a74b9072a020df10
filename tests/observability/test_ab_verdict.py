"""The A/B verdict (observability.ab) through the management API and the console: per metric the
variant's difference from control, its interval, the test's p-value and verdict, checked against the
statistics computed directly from the same synthetic calls and scores."""

from __future__ import annotations

import random
import statistics
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from observability.ab import decide, split_verdict
from observability.abstats import Summary, two_proportions, welch
from observability.models import CallLog, CallScore
from routing.services import model_deployments_set, model_routes_set
from tenants.audit import Actor
from tenants.models import Role

pytestmark = pytest.mark.usefixtures("console_defaults")


@pytest.fixture
def split(world):
    """Alice's acme splits 50 % of `smart` to `smart-v2`; 120 calls per group, the variant answers a
    little slower and far better (thumbs), with helpfulness scores 1-5."""
    actor = Actor(user=world.alice)
    mock = world.objects["provider"]
    for name in ("smart", "smart-v2"):
        model_deployments_set(world.acme, model_name=name, deployments=[(mock, f"{name}-up")], actor=actor)
    model_routes_set(world.acme, routes={"smart": {"split": {"model": "smart-v2", "percent": 50}}}, actor=actor)
    from observability.scores import score_definitions_set

    definition = {"name": "helpfulness", "kind": "numeric", "min": 1, "max": 5, "values": [], "description": ""}
    score_definitions_set(world.acme, [definition], actor=actor)
    rnd = random.Random(23)
    now = timezone.now()
    data = {"latency": {"": [], "smart-v2": []}, "thumbs": {"": [], "smart-v2": []}, "help": {"": [], "smart-v2": []}}
    logs, scores = [], []
    key = world.objects["key"]
    for variant, up, slow in (("", 0.45, 0.0), ("smart-v2", 0.75, 20.0)):
        for i in range(120):
            latency = rnd.gauss(200 + slow, 30)
            call_id = f"call_{uuid.uuid4().hex}"
            status = 500 if i % 20 == 0 else 200
            logs.append(
                CallLog(
                    tenant=world.acme,
                    virtual_key=key,
                    request_id=f"r-{variant}-{i}",
                    call_id=call_id,
                    endpoint="chat/completions",
                    requested_model="smart",
                    variant=variant,
                    status_code=status,
                    latency_ms=latency,
                    total_tokens=10,
                    cost_picodollars=1_000_000 + i,
                    created_at=now,
                )
            )
            data["latency"][variant].append(latency)
            thumbs = 1.0 if rnd.random() < up else 0.0
            helpful = float(rnd.randint(2, 5) if variant else rnd.randint(1, 4))
            data["thumbs"][variant].append(thumbs)
            data["help"][variant].append(helpful)
            for name, value in (("thumbs", thumbs), ("helpfulness", helpful)):
                scores.append(
                    CallScore(
                        tenant_id=world.acme.id,
                        call_id=call_id,
                        request_id=f"r-{variant}-{i}",
                        call_created_at=now,
                        name=name,
                        source="feedback",
                        value=value,
                        requested_model="smart",
                        variant=variant,
                        virtual_key_id=key.id,
                    )
                )
    CallLog.objects.bulk_create(logs)
    CallScore.objects.bulk_create(scores)
    return world, data


def summary(values):
    return Summary(len(values), statistics.fmean(values), statistics.variance(values))


def test_the_api_gives_each_metric_its_test_interval_and_verdict(split, api_as):
    world, data = split
    body = api_as(Role.VIEWER).get("/api/v1/routing/ab/?model=smart&days=1").json()
    metrics = {m["metric"]: m for m in body["metrics"]}
    assert set(metrics) == {"error_rate", "latency_ms", "cost_usd", "score.thumbs", "score.helpfulness"}
    assert body["tests"] == {"welch": "Welch's t-test (means)", "two-proportion": "two-proportion z-test (rates)"}

    errors = two_proportions(6, 120, 6, 120)
    assert metrics["error_rate"]["test"] == "two-proportion"
    assert metrics["error_rate"]["p_value"] == pytest.approx(errors.p_value)
    assert metrics["error_rate"]["significant"] is False and metrics["error_rate"]["better_group"] is None

    latency = welch(summary(data["latency"][""]), summary(data["latency"]["smart-v2"]))
    got = metrics["latency_ms"]
    assert got["test"] == "welch" and got["p_value"] == pytest.approx(latency.p_value, rel=1e-6)
    assert (got["ci_low"], got["ci_high"]) == (
        pytest.approx(latency.low, rel=1e-6),
        pytest.approx(latency.high, rel=1e-6),
    )
    assert got["significant"] and got["better_group"] == "control"  # the variant is slower

    up = [sum(data["thumbs"][g]) for g in ("", "smart-v2")]
    thumbs = two_proportions(int(up[0]), 120, int(up[1]), 120)
    got = metrics["score.thumbs"]
    assert got["test"] == "two-proportion" and got["p_value"] == pytest.approx(thumbs.p_value)
    assert got["control"] == pytest.approx(up[0] / 120) and got["variant"] == pytest.approx(up[1] / 120)
    assert got["significant"] and got["better_group"] == "variant"
    assert got["calls_still_needed"] == 0

    helpful = welch(summary(data["help"][""]), summary(data["help"]["smart-v2"]))
    assert metrics["score.helpfulness"]["test"] == "welch"
    assert metrics["score.helpfulness"]["p_value"] == pytest.approx(helpful.p_value, rel=1e-6)
    control = body["groups"][0]
    assert control["group"] == "control" and control["scores"]["thumbs"]["n"] == 120

    # Bob's globex has no model of that name: nothing of acme's is shown to him.
    assert api_as(Role.OWNER, world.globex).get("/api/v1/routing/ab/?model=smart").status_code == 404


def test_the_console_says_which_test_and_which_group_is_better(split, client_as):
    world, _data = split
    page = client_as(world.alice).get("/t/acme/routing/ab/?model=smart&days=1").content.decode()
    assert "Is the difference real?" in page and "Welch" in page and "two-proportion z-test" in page
    assert "variant better" in page and "control better" in page and "no significant difference" in page


def test_stop_when_concludes_only_with_enough_scored_calls(split):
    world, _data = split
    since = timezone.now() - timezone.timedelta(days=1)
    verdict = split_verdict(world.acme, "smart", "smart-v2", since=since)
    assert decide(verdict, "thumbs", min_calls=500, significant=True) == ""  # 120 per group so far
    assert decide(verdict, "thumbs", min_calls=100, significant=True) == "variant"
    # The error rates are the same: required to be significant, the control group stays.
    assert decide(verdict, "nothing-scored", min_calls=100, significant=True) == ""


def test_a_split_with_a_stop_rule_ends_itself_and_says_so(
    split, api_as, mailoutbox, django_capture_on_commit_callbacks
):
    """Alice's rule: stop after 100 scored calls per group, the variant winning only if significantly
    better on thumbs. It is: every call now goes to smart-v2, the audit log has the verdict by the rule,
    and Alice gets the e-mail. A rule asking for 500 calls waits."""
    from observability.splits import ACTOR_LABEL, check_split_stops
    from routing.selectors import route_settings_of
    from tenants.models import AuditLog

    world, _data = split
    actor = Actor(user=world.alice)
    rule = {"score": "thumbs", "min_calls": 500}
    model_routes_set(
        world.acme, routes={"smart": {"split": {"model": "smart-v2", "percent": 50, "stop_when": rule}}}, actor=actor
    )
    assert route_settings_of(world.acme, "smart")["split"]["stop_when"] == {
        "score": "thumbs",
        "min_calls": 500,
        "significant": True,
    }
    # Counting starts when the split was last changed: the fixture's calls are older now.
    CallLog.objects.filter(tenant=world.acme).update(created_at=timezone.now())
    CallScore.objects.filter(tenant_id=world.acme.id).update(call_created_at=timezone.now())
    assert check_split_stops(world.acme.id) == []
    assert route_settings_of(world.acme, "smart")["split"]["percent"] == 50

    # The models API takes the rule and refuses what it does not know, naming the field.
    api = api_as(Role.ADMIN)
    deployments = [{"provider": "mock", "model": "smart-up"}]
    bad = api.put(
        "/api/v1/models/smart/",
        {
            "deployments": deployments,
            "split": {"model": "smart-v2", "percent": 50, "stop_when": {"score": "thumbs", "bogus": 1}},
        },
        content_type="application/json",
    )
    assert bad.status_code == 400 and "bogus" in bad.content.decode()
    ok = api.put(
        "/api/v1/models/smart/",
        {
            "deployments": deployments,
            "split": {"model": "smart-v2", "percent": 50, "stop_when": {"score": "thumbs", "min_calls": 100}},
        },
        content_type="application/json",
    )
    assert ok.status_code == 200, ok.content
    assert ok.json()["split"]["stop_when"] == {"score": "thumbs", "min_calls": 100, "significant": True}
    CallLog.objects.filter(tenant=world.acme).update(created_at=timezone.now())
    CallScore.objects.filter(tenant_id=world.acme.id).update(call_created_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        [decision] = check_split_stops(world.acme.id)
    assert (decision.model, decision.winner, decision.score) == ("smart", "variant", "thumbs")
    assert route_settings_of(world.acme, "smart")["split"] == {"model": "smart-v2", "percent": 100.0, "sticky": "user"}
    entry = AuditLog.objects.get(tenant=world.acme, action="routing.split.decided")
    assert entry.changes["winner"] == "variant" and entry.changes["scored_calls"] == {"control": 120, "smart-v2": 120}
    # The split's change itself is audited as made by the rule, like any other change of a model's routing.
    assert AuditLog.objects.filter(tenant=world.acme, actor_label=ACTOR_LABEL, action="model.routing").exists()
    assert [m.to for m in mailoutbox] == [["alice@acme.example"]] and "smart-v2 won" in mailoutbox[0].body
    assert check_split_stops(world.acme.id) == []  # decided once
    # Bob's globex has no such rule and nothing of acme's changed for it.
    assert route_settings_of(world.globex, "smart") is None


def test_the_console_form_keeps_a_stop_rule_while_the_variant_stays(split):
    from routing.forms import RouteSettingsForm

    current = {"split": {"model": "smart-v2", "percent": 50.0, "sticky": "user", "stop_when": {"score": "thumbs"}}}
    form = RouteSettingsForm.__new__(RouteSettingsForm)
    base = {"strategy": "priority", "retries": 1, "timeout_s": 600.0, "fallbacks": "", "context_window_fallbacks": ""}
    cooldown = {"cooldown_failures": 3, "cooldown_window_s": 60.0, "cooldown_s": 30.0}
    form.cleaned_data = {**base, **cooldown, "split_model": "smart-v2", "split_percent": 60.0, "split_sticky": "user"}
    assert form.settings(current)["split"]["stop_when"] == {"score": "thumbs"}
    form.cleaned_data["split_model"] = "other"
    assert "stop_when" not in form.settings(current)["split"]


def test_scores_sum_up_by_variant_and_model_and_stay_in_their_tenant(split, api_as):
    world, data = split
    rows = api_as(Role.VIEWER).get("/api/v1/scores/?by=variant&name=thumbs&days=1").json()
    up = {g: sum(data["thumbs"][g]) for g in ("", "smart-v2")}
    assert rows == [
        {
            "group": "",
            "name": "thumbs",
            "count": 120,
            "mean": pytest.approx(up[""] / 120),
            "positive_share": pytest.approx(up[""] / 120),
        },
        {
            "group": "smart-v2",
            "name": "thumbs",
            "count": 120,
            "mean": pytest.approx(up["smart-v2"] / 120),
            "positive_share": pytest.approx(up["smart-v2"] / 120),
        },
    ]
    by_model = api_as(Role.VIEWER).get("/api/v1/scores/?by=model&days=1").json()
    assert [(r["group"], r["name"], r["count"]) for r in by_model] == [
        ("smart", "helpfulness", 240),
        ("smart", "thumbs", 240),
    ]
    assert api_as(Role.VIEWER).get("/api/v1/scores/?by=colour").status_code == 400
    assert api_as(Role.OWNER, world.globex).get("/api/v1/scores/?by=model").json() == []


def test_scores_sum_up_by_tag_each_tag_of_a_call_counting_it(world, api_as):
    """Acme's calls tagged "search" and "beta" count under both; globex's tagged scores stay globex's."""
    now = timezone.now()

    def score(tenant, i: int, value: float, tags: list[str]) -> CallScore:
        return CallScore(
            tenant_id=tenant.id,
            call_id=f"call-{tenant.slug}-{i}",
            request_id=f"r-{tenant.slug}-{i}",
            call_created_at=now,
            name="thumbs",
            source="feedback",
            value=value,
            tags=tags,
        )

    CallScore.objects.bulk_create(
        [
            score(world.acme, 1, 1.0, ["search", "beta"]),
            score(world.acme, 2, 0.0, ["search"]),
            score(world.acme, 3, 1.0, []),
            score(world.globex, 1, 0.0, ["search"]),
        ]
    )
    rows = api_as(Role.VIEWER).get("/api/v1/scores/?by=tag&days=1").json()
    assert rows == [
        {"group": "beta", "name": "thumbs", "count": 1, "mean": 1.0, "positive_share": 1.0},
        {"group": "search", "name": "thumbs", "count": 2, "mean": 0.5, "positive_share": 0.5},
    ]
    globex = api_as(Role.OWNER, world.globex).get("/api/v1/scores/?by=tag&days=1").json()
    assert [(r["group"], r["count"]) for r in globex] == [("search", 1)]


def test_a_large_split_reads_the_rollups_and_finds_the_same_verdict(split, settings):
    """Above GATEWAY_AB_ROLLUP_MIN_CALLS (set to 1 here) the verdict comes from the hourly rollups and the
    score rollups kept by the database: the same counts, the same tests, within the histogram's error for
    the percentiles. A member's own view and SQLite still read the calls."""
    from django.db import connection

    from observability.rollups import write_rollups

    if connection.vendor != "postgresql":
        pytest.skip("the score rollups are kept by PostgreSQL triggers")
    world, _data = split
    since = timezone.now() - timedelta(days=1)
    exact = split_verdict(world.acme, "smart", "smart-v2", since=since)
    write_rollups(list(CallLog.objects.filter(tenant=world.acme).values()))
    settings.GATEWAY_AB_ROLLUP_MIN_CALLS = 1
    rolled = split_verdict(world.acme, "smart", "smart-v2", since=since)
    for a, b in zip(exact.groups, rolled.groups, strict=True):
        assert (a.requests, a.errors, a.tokens, a.cost_usd) == (b.requests, b.errors, b.tokens, b.cost_usd)
        assert b.latency_mean == pytest.approx(a.latency_mean, rel=1e-9)
        assert b.latency_variance == pytest.approx(a.latency_variance, rel=1e-6)
        assert b.cost_variance == pytest.approx(a.cost_variance, rel=1e-6)
        assert b.p50_ms == pytest.approx(a.p50_ms, rel=0.1) and b.p95_ms == pytest.approx(a.p95_ms, rel=0.1)
    exact_metrics = {m.key: m for m in exact.metrics}
    rolled_metrics = {m.key: m for m in rolled.metrics}
    assert (
        set(exact_metrics)
        == set(rolled_metrics)
        == {
            "error_rate",
            "latency_ms",
            "cost_usd",
            "score.thumbs",
            "score.helpfulness",
        }
    )
    for key, metric in exact_metrics.items():
        other = rolled_metrics[key]
        assert other.comparison.p_value == pytest.approx(metric.comparison.p_value, rel=1e-6, abs=1e-12), key
        assert other.verdict == metric.verdict, key
    # A score replaced later (the same name and source) moves the rollup with it: no double count.
    score = CallScore.objects.filter(tenant_id=world.acme.id, name="thumbs", variant="").first()
    score.value = 1.0 - score.value
    score.save()
    again = split_verdict(world.acme, "smart", "smart-v2", since=since)
    assert again.scores["control"]["thumbs"].n == 120
    settings.GATEWAY_AB_ROLLUP_MIN_CALLS = 10**9
    assert split_verdict(world.acme, "smart", "smart-v2", since=since).scores["control"]["thumbs"].n == 120
