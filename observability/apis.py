"""The call log in the management API: `GET /api/v1/calls/` (the explorer's filters, keyset pages),
`GET /api/v1/calls/<id>/` (one call with its attempts, route, policy actions, cost and stored bodies),
the quality scores summed up (`GET /api/v1/scores/`) and the guardrail verdicts counted
(`GET /api/v1/guardrails/stats/`, the dashboard's Guardrails panel).

Members see only their own keys' calls, as in the console (observability.views.scope_key_ids).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Avg, Count, QuerySet
from django.http import Http404
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from gateway_project.common.money import from_pico
from observability.bodies import cap
from observability.forms import MAX_RANGE
from observability.guardrail_stats import TOP, guardrail_stats
from observability.models import CallLog, CallScore
from observability.scores import POSITIVE, scores_of
from observability.selectors import LogFilters, access_log, body_of, log_page
from observability.views import scope_key_ids
from tenants.apis import TokenApi
from tenants.strict import StrictSerializer

STATUS_HELP = "2xx, 4xx, 5xx, error (any failure), or an exact status code."


def _usd(pico: int | None) -> str | None:
    """Exact USD as a decimal string (never a float): null when the call had no price."""
    return None if pico is None else format(from_pico(pico).normalize(), "f")


class CallSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    request_id = serializers.CharField()
    endpoint = serializers.CharField()
    model = serializers.CharField(source="requested_model")
    route = serializers.CharField()
    variant = serializers.CharField()
    provider = serializers.CharField()
    upstream_model = serializers.CharField()
    key_id = serializers.IntegerField(source="virtual_key_id", allow_null=True)
    stream = serializers.BooleanField()
    status_code = serializers.IntegerField()
    latency_ms = serializers.FloatField()
    ttfb_ms = serializers.FloatField(allow_null=True)
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    cached_tokens = serializers.IntegerField(allow_null=True)
    cost_usd = serializers.SerializerMethodField(help_text="Exact, as a decimal string; null when unpriced.")
    cost_estimated = serializers.BooleanField()
    cache_status = serializers.CharField()
    end_user = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    error_type = serializers.CharField()
    fallback_reason = serializers.CharField()
    client_disconnected = serializers.BooleanField()

    def get_cost_usd(self, row: CallLog) -> str | None:
        return _usd(row.cost_picodollars)


class CallDetailSerializer(CallSerializer):
    error_message = serializers.CharField()
    attempts = serializers.ListField(child=serializers.DictField())
    pii_actions = serializers.DictField(help_text="Data-policy actions by detector: counts, never values.")
    cost_saved_usd = serializers.SerializerMethodField()
    key_metadata = serializers.DictField()
    bodies = serializers.SerializerMethodField(
        help_text="When the tenant logs bodies: as stored, after the data policy."
    )

    def get_cost_saved_usd(self, row: CallLog) -> str | None:
        return _usd(row.cost_saved_picodollars)

    scores = serializers.SerializerMethodField(help_text="Its quality scores (feedback and evaluators).")

    def get_scores(self, row: CallLog) -> list[dict[str, Any]]:
        return scores_of(row.tenant_id, [row.call_id]).get(row.call_id, []) if row.call_id else []

    def get_bodies(self, row: CallLog) -> dict[str, Any] | None:
        body = body_of(row)
        if body is None:
            return None
        return {
            "request": cap(body.request_body)[0],
            "response": cap(body.response_body)[0],
            "truncated": body.truncated,
        }


class CallPageSerializer(serializers.Serializer):
    results = CallSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next (older) page; null on the last.")


class CallFilters(StrictSerializer):
    # "from" is a Python keyword: declared below, under the name clients send.
    to = serializers.DateTimeField(required=False, help_text="Calls started before this time.")
    key = serializers.IntegerField(required=False, min_value=1, help_text="A key id.")
    model = serializers.CharField(required=False, max_length=200, help_text="The model the client asked for.")
    status = serializers.CharField(required=False, max_length=5, help_text=STATUS_HELP)
    user = serializers.CharField(required=False, max_length=200, help_text="The end user (`user`) as logged.")
    tag = serializers.CharField(required=False, max_length=100)
    request_id = serializers.CharField(required=False, max_length=100)
    cursor = serializers.CharField(required=False, max_length=64, help_text="The `next` link's cursor.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)

    def validate_status(self, value: str) -> str:
        if value not in ("2xx", "3xx", "4xx", "5xx", "error") and not (value.isdigit() and len(value) == 3):
            raise serializers.ValidationError(STATUS_HELP)
        return value


CallFilters._declared_fields["from"] = serializers.DateTimeField(
    required=False, help_text="Calls started at or after this time."
)


class CallListApi(TokenApi):
    @extend_schema(
        parameters=[CallFilters],
        responses=CallPageSerializer,
        summary="Call logs, newest first, with the explorer's filters and a `next` link",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params.copy()
        # score.<name>=<value>: calls with that score (any source). Read apart from the fixed filters.
        wanted_scores = {k[6:]: params.pop(k)[-1] for k in list(params) if k.startswith("score.")}
        query = CallFilters(data=params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        filters = LogFilters(
            since=q.get("from"),
            until=q.get("to"),
            key_id=q.get("key"),
            model=q.get("model", ""),
            status=q.get("status", ""),
            end_user=q.get("user", ""),
            tag=q.get("tag", ""),
            request_id=q.get("request_id", ""),
        )
        call_ids = None
        for name, value in wanted_scores.items():
            try:
                number = float(value)
            except ValueError:
                raise ValidationError({f"score.{name}": ["A score filter is a number."]}) from None
            matching = set(
                CallScore.objects.filter(tenant_id=self.access.tenant.id, name=name, value=number).values_list(
                    "call_id", flat=True
                )
            )
            call_ids = matching if call_ids is None else call_ids & matching
        rows, cursor = log_page(
            self.access.tenant,
            filters,
            key_ids=scope_key_ids(self.access),
            cursor=q.get("cursor", ""),
            size=q["limit"],
            call_ids=sorted(call_ids) if call_ids is not None else None,
        )
        following = None
        if cursor:
            params = request.query_params.copy()
            params["cursor"] = cursor
            following = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": CallSerializer(rows, many=True).data, "next": following})


class CallDetailApi(TokenApi):
    @extend_schema(responses=CallDetailSerializer, summary="One call log")
    def get(self, request: Request, call_id: int) -> Response:
        try:
            row = access_log(self.access.tenant, call_id, key_ids=scope_key_ids(self.access))
        except Http404:
            raise NotFound("No such call in this tenant.") from None
        return Response(CallDetailSerializer(row).data)


def tag_rollup(rows: QuerySet[CallScore]) -> list[dict[str, Any]]:
    """Scores by each tag of their call, in the database: one row per (score, tag) pair, through the
    JSON array function of the database in use (PostgreSQL's jsonb_array_elements_text, SQLite's json_each)."""
    sql, params = rows.values("id").query.sql_with_params()
    if connection.vendor == "postgresql":
        each = "jsonb_array_elements_text(s.tags) AS t(tag)"
    else:
        each = "json_each(s.tags) AS t"
    tag = "t.tag" if connection.vendor == "postgresql" else "t.value"
    table = CallScore._meta.db_table
    query = (
        f"SELECT {tag}, s.name, COUNT(*), AVG(s.value), SUM(CASE WHEN s.value >= 0.5 THEN 1 ELSE 0 END) "
        f"FROM {table} s, {each} WHERE s.id IN ({sql}) GROUP BY {tag}, s.name ORDER BY {tag}, s.name"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        found = cursor.fetchall()
    return [
        {"group": str(group), "name": name, "count": count, "mean": float(mean), "positive_share": positives / count}
        for group, name, count, mean, positives in found
    ]


# Mounted under /api/v1/ by gateway_project.urls.
class ScoreRollupFilters(StrictSerializer):
    by = serializers.ChoiceField(
        choices=["model", "variant", "key", "user", "tag"],
        default="model",
        help_text="What to group the scores by (a call with several tags counts under each).",
    )
    name = serializers.CharField(required=False, max_length=64, help_text="One score only (default: every score).")
    days = serializers.IntegerField(required=False, min_value=1, max_value=400, default=7, help_text="1 to 400.")


class ScoreRollupApi(TokenApi):
    BY = {"model": "requested_model", "variant": "variant", "key": "virtual_key_id", "user": "end_user"}

    class RowSerializer(serializers.Serializer):
        group = serializers.CharField(
            allow_blank=True, help_text='The model, variant ("" = control), key id, user or tag.'
        )
        name = serializers.CharField()
        count = serializers.IntegerField()
        mean = serializers.FloatField()
        positive_share = serializers.FloatField(help_text="Share of values >= 0.5 (thumbs up, for `thumbs`).")

    @extend_schema(
        parameters=[ScoreRollupFilters],
        responses=RowSerializer(many=True),
        summary="Quality scores summed up by model, variant, key, end user or tag: count, mean, share positive",
    )
    def get(self, request: Request) -> Response:
        query = ScoreRollupFilters(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        since = timezone.now() - timedelta(days=q["days"])
        rows = CallScore.objects.filter(tenant_id=self.access.tenant.id, call_created_at__gte=since)
        key_ids = scope_key_ids(self.access)
        if key_ids is not None:
            rows = rows.filter(virtual_key_id__in=key_ids)  # a member's own keys, as in the console
        if q.get("name"):
            rows = rows.filter(name=q["name"])
        if q["by"] == "tag":
            return Response(self.RowSerializer(tag_rollup(rows), many=True).data)
        column = self.BY[q["by"]]
        grouped = (
            rows.values(column, "name")
            .annotate(count=Count("id"), mean=Avg("value"), positives=Count("id", filter=POSITIVE))
            .order_by(column, "name")
        )
        out = [
            {
                "group": "" if r[column] is None else str(r[column]),
                "name": r["name"],
                "count": r["count"],
                "mean": float(r["mean"]),
                "positive_share": r["positives"] / r["count"],
            }
            for r in grouped
        ]
        return Response(self.RowSerializer(out, many=True).data)


class GuardrailStatsFilters(StrictSerializer):
    since = serializers.DateTimeField(
        required=False, help_text="Calls started at or after this time (default: a day before `until`)."
    )
    until = serializers.DateTimeField(required=False, help_text="Calls started before this time (default: now).")


class GuardrailCountsSerializer(serializers.Serializer):
    block = serializers.IntegerField()
    flag = serializers.IntegerField()
    log = serializers.IntegerField(help_text="A log-only check that matched.")
    error = serializers.IntegerField(help_text="A check that could not run.")
    total = serializers.IntegerField()


class GuardrailCheckRowSerializer(GuardrailCountsSerializer):
    check = serializers.CharField(source="value", help_text="The check's name.")
    kind = serializers.CharField(help_text="prompt_injection, denied_topics, keywords, ...")


class GuardrailModelRowSerializer(GuardrailCountsSerializer):
    model = serializers.CharField(source="value", allow_blank=True, help_text="The model the client asked for.")


class GuardrailKeyRowSerializer(GuardrailCountsSerializer):
    key_id = serializers.IntegerField(source="value", allow_null=True, help_text="Null: calls without a key.")
    key = serializers.CharField(source="label", help_text="The key's name.")


class GuardrailStatsSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    by_check = GuardrailCheckRowSerializer(many=True)
    by_model = GuardrailModelRowSerializer(many=True)
    by_key = GuardrailKeyRowSerializer(many=True)


class GuardrailStatsApi(TokenApi):
    @extend_schema(
        parameters=[GuardrailStatsFilters],
        responses=GuardrailStatsSerializer,
        summary=f"Guardrail verdicts other than pass (block, flag, log, error), top {TOP} by check, model and key",
        description="One verdict per check and call: a call that two checks flagged counts under each. Members "
        "count only their own keys' calls.",
    )
    def get(self, request: Request) -> Response:
        query = GuardrailStatsFilters(data=request.query_params)
        query.is_valid(raise_exception=True)
        until = query.validated_data.get("until") or timezone.now()
        since = query.validated_data.get("since") or until - timedelta(days=1)
        if since >= until:
            raise ValidationError({"until": ["Must be after `since`."]})
        if until - since > MAX_RANGE:
            raise ValidationError({"since": [f"Ranges are limited to {MAX_RANGE.days} days."]})
        stats = guardrail_stats(self.access.tenant, start=since, end=until, key_ids=scope_key_ids(self.access))
        out: dict[str, Any] = {"since": since, "until": until}
        out.update(by_check=stats.by_check, by_model=stats.by_model, by_key=stats.by_key)
        return Response(GuardrailStatsSerializer(out).data)


api_urlpatterns = [
    path("scores/", ScoreRollupApi.as_view(), name="api-scores"),
    path("calls/", CallListApi.as_view(), name="api-calls"),
    path("calls/<int:call_id>/", CallDetailApi.as_view(), name="api-call-detail"),
    path("guardrails/stats/", GuardrailStatsApi.as_view(), name="api-guardrail-stats"),
]
