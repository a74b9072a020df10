"""Management API endpoints that need the proxy's router or runtime state (conventions in tenants.apis).

They live in the proxy app because domain apps never import `proxy`; gateway_project.urls mounts
`api_urlpatterns` under /api/v1/ with the others.
"""

from __future__ import annotations

from datetime import timedelta

from django.http import Http404
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from observability.ab import TESTS, split_verdict
from observability.views import scope_key_ids
from proxy.console.simulate import SimulateRequest, simulate
from routing.selectors import route_settings_of
from tenants.apis import TokenApi
from tenants.permissions import visible_keys

AB_PERIODS = (1, 7, 30)


class RoutingSimulateApi(TokenApi):
    class InputSerializer(serializers.Serializer):
        model = serializers.CharField(max_length=200, help_text="The public model name a client would send.")
        key = serializers.CharField(
            max_length=200, required=False, default="", allow_blank=True, help_text="A virtual key's name."
        )
        tags = serializers.ListField(
            child=serializers.CharField(max_length=100), required=False, default=list, max_length=50
        )
        user = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
        prompt_bytes = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, default=0)

    class DeploymentSerializer(serializers.Serializer):
        provider = serializers.CharField()
        model = serializers.CharField()
        breaker = serializers.ChoiceField(choices=["closed", "open", "half_open"])

    class OutputSerializer(serializers.Serializer):
        model = serializers.CharField(help_text="The public model after rules and the A/B split.")
        rule = serializers.IntegerField(allow_null=True, help_text="Index of the rule that matched, if any.")
        variant = serializers.CharField(allow_null=True, help_text="The split's model when the call goes there.")
        deployments = serializers.ListField(child=serializers.DictField(), help_text="In the order they'd be tried.")
        fallbacks = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Show where a request would be routed, without calling a provider",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # The same keys the caller may list: a member's token simulates with its own keys only.
        if data["key"].strip() and not visible_keys(self.access).filter(name=data["key"].strip()).exists():
            raise Http404(f"No key named {data['key'].strip()!r} in this tenant.")
        result = simulate(
            self.access.tenant.id,
            SimulateRequest(
                model=data["model"].strip(),
                key=data["key"].strip(),
                tags=tuple(t.strip() for t in data["tags"]),
                user=data["user"],
                prompt_bytes=data["prompt_bytes"],
            ),
        )
        return Response(self.OutputSerializer(result).data)


class RoutingAbApi(TokenApi):
    class VariantSerializer(serializers.Serializer):
        group = serializers.CharField(help_text='"control" or the variant model.')
        requests = serializers.IntegerField()
        # DRF's metaclass moves declared fields out of the class: this does not shadow Serializer.errors.
        errors = serializers.IntegerField()  # type: ignore[assignment]
        error_rate = serializers.FloatField(allow_null=True)
        p50_ms = serializers.FloatField(allow_null=True)
        p95_ms = serializers.FloatField(allow_null=True)
        tokens = serializers.IntegerField()
        cost_usd = serializers.DecimalField(max_digits=30, decimal_places=12)

    class OutputSerializer(serializers.Serializer):
        model = serializers.CharField()
        variant = serializers.CharField(allow_blank=True)
        days = serializers.IntegerField()
        groups = serializers.ListField(
            child=serializers.DictField(),
            help_text="Per group: the VariantSerializer fields and `scores` (name -> n, mean, its 95 % interval "
            "ci_low/ci_high, positives).",
        )
        metrics = serializers.ListField(
            child=serializers.DictField(),
            help_text="Per metric (error_rate, latency_ms, cost_usd, score.<name>): control and variant values, "
            "test, difference (variant - control) with its 95 % interval ci_low/ci_high, p_value, significant, "
            "better_group and calls_still_needed per group for the observed difference (5 % level, 80 % power).",
        )
        tests = serializers.DictField(help_text="The statistical test behind each `test` value.")

    @extend_schema(
        parameters=[
            OpenApiParameter("model", str, required=True, description="A model with an A/B split."),
            OpenApiParameter("days", int, description="1, 7 or 30 (default 7)."),
        ],
        responses=OutputSerializer,
        summary="Compare the control group and the variant of a model's A/B split",
    )
    def get(self, request: Request) -> Response:
        model = request.query_params.get("model", "").strip()
        if not model:
            raise serializers.ValidationError({"model": ["Name the model: ?model=NAME."]})
        if not model.isprintable():
            raise serializers.ValidationError({"model": ["A model name has no control characters."]})
        days = request.query_params.get("days", "7")
        if days not in {str(d) for d in AB_PERIODS}:
            raise serializers.ValidationError({"days": ["Use 1, 7 or 30."]})
        settings = route_settings_of(self.access.tenant, model)
        if settings is None:
            raise Http404(f"No model named {model!r} in this tenant.")
        variant = settings["split"]["model"] if settings["split"] else ""
        since = timezone.now() - timedelta(days=int(days))
        verdict = split_verdict(self.access.tenant, model, variant, since=since, key_ids=scope_key_ids(self.access))
        groups = []
        for g in verdict.groups:
            data = dict(self.VariantSerializer(g).data)
            data["scores"] = {
                name: {"n": s.n, "mean": s.mean, "ci_low": s.low, "ci_high": s.high, "positives": s.positives}
                for name, s in verdict.scores.get(g.group, {}).items()
            }
            groups.append(data)
        payload = {
            "model": model,
            "variant": variant,
            "days": int(days),
            "groups": groups,
            "metrics": [m.as_dict() for m in verdict.metrics],
            "tests": TESTS,
        }
        return Response(self.OutputSerializer(payload).data)


# Mounted under /api/v1/ by gateway_project.urls.
api_urlpatterns = [
    path("routing/simulate/", RoutingSimulateApi.as_view(), name="api-routing-simulate"),
    path("routing/ab/", RoutingAbApi.as_view(), name="api-routing-ab"),
]
