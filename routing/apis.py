"""Management REST API for provider credentials and models (conventions in tenants.apis)."""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from routing.declarative import route_settings_by_model
from routing.models import (
    AWS_SECRET_FIELDS,
    MAX_RETRIES,
    MAX_TIMEOUT_S,
    MAX_WEIGHT,
    ROUTE_DEFAULTS,
    ProviderCredential,
    ProviderKind,
    Sticky,
    Strategy,
)
from routing.permissions import access_model, access_provider
from routing.probe import provider_test_connection
from routing.selectors import ModelEntry, models_for, providers_for, route_settings_of
from routing.services import (
    KEEP,
    KIND_FIELDS,
    DeploymentSpec,
    model_delete,
    model_deployments_set,
    model_routes_set,
    provider_delete,
    provider_upsert,
)
from tenants.apis import TokenApi
from tenants.bounds import MAX_SECRET_CHARS
from tenants.permissions import CONFIG_WRITE, TenantAccess
from tenants.strict import StrictSerializer

# --- Providers -------------------------------------------------------------------------------------


class ProviderOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=ProviderKind.choices)
    base_url = serializers.CharField()
    api_key_set = serializers.SerializerMethodField(help_text="Whether a key is stored. The key is never returned.")
    api_key_last4 = serializers.CharField()
    api_key_source = serializers.CharField(help_text='"env:NAME" when the key came from an environment variable.')
    api_version = serializers.CharField(help_text="Azure's api-version.")
    region = serializers.CharField(help_text="Bedrock's region.")
    aws_credentials_set = serializers.SerializerMethodField(
        help_text="Whether AWS credentials are stored (Bedrock). They are never returned."
    )
    headers = serializers.ListField(
        source="header_names",
        child=serializers.CharField(),
        help_text="Names of the extra headers sent on every call. Their values are never returned.",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_api_key_set(self, provider: ProviderCredential) -> bool:
        return bool(provider.api_key_encrypted)

    def get_aws_credentials_set(self, provider: ProviderCredential) -> bool:
        return "aws_access_key_id" in (provider.secret_sources or {})


class ProviderSettingsInput(StrictSerializer):
    """The kind-specific settings, shared by create and update. Secrets are write-only."""

    api_version = serializers.CharField(max_length=40, required=False, allow_blank=True)
    region = serializers.CharField(max_length=30, required=False, allow_blank=True)
    aws_access_key_id = serializers.CharField(
        max_length=MAX_SECRET_CHARS, required=False, allow_blank=True, write_only=True
    )
    aws_secret_access_key = serializers.CharField(
        max_length=MAX_SECRET_CHARS, required=False, allow_blank=True, write_only=True
    )
    aws_session_token = serializers.CharField(
        max_length=MAX_SECRET_CHARS, required=False, allow_blank=True, write_only=True
    )
    headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        write_only=True,
        help_text="Extra headers sent on every call ({name: value}); replaces the stored ones.",
    )


class ProviderListApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(ProviderOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List provider credentials")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(providers_for(self.access.tenant), many=True).data)


class ProviderCreateApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(ProviderSettingsInput):
        name = serializers.SlugField(max_length=100)
        kind = serializers.ChoiceField(choices=ProviderKind.choices)
        base_url = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)
        api_key = serializers.CharField(
            max_length=MAX_SECRET_CHARS, required=False, default="", allow_blank=True, write_only=True
        )

    class OutputSerializer(ProviderOutputSerializer):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, summary="Add a provider credential")
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if providers_for(self.access.tenant).filter(name=data["name"]).exists():
            raise serializers.ValidationError({"name": [f"A provider named {data['name']} already exists."]})
        provider, _changed = provider_upsert(self.access.tenant, actor=self.access.actor, **data)
        return Response(self.OutputSerializer(provider).data, status=status.HTTP_201_CREATED)


class ProviderDetailApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(ProviderOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer, summary="Get a provider credential")
    def get(self, request: Request, provider_id: int) -> Response:
        return Response(self.OutputSerializer(access_provider(self.access, provider_id)).data)


class ProviderUpdateApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(ProviderSettingsInput):
        kind = serializers.ChoiceField(choices=ProviderKind.choices, required=False)
        base_url = serializers.CharField(max_length=500, required=False, allow_blank=True)
        api_key = serializers.CharField(max_length=MAX_SECRET_CHARS, required=False, allow_blank=True, write_only=True)

    class OutputSerializer(ProviderOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Change a provider's kind, base URL, settings or secrets (omitted fields stay as they are)",
    )
    def patch(self, request: Request, provider_id: int) -> Response:
        provider = access_provider(self.access, provider_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        kind = data.get("kind", provider.kind)
        # A stored api_version or region carries over only to a kind that takes it.
        takes = KIND_FIELDS.get(kind, frozenset())
        kept = {f: getattr(provider, f) if f in takes else "" for f in ("api_version", "region")}
        provider, _changed = provider_upsert(
            self.access.tenant,
            name=provider.name,
            kind=kind,
            base_url=data.get("base_url", provider.base_url),
            api_key=data.get("api_key", KEEP),
            api_version=data.get("api_version", kept["api_version"]),
            region=data.get("region", kept["region"]),
            **{f: data[f] for f in (*AWS_SECRET_FIELDS, "headers") if f in data},
            actor=self.access.actor,
        )
        return Response(self.OutputSerializer(provider).data)


class ProviderDeleteApi(TokenApi):
    required_perm = CONFIG_WRITE
    takes_no_input = True

    @extend_schema(request=None, responses={204: None}, summary="Delete a provider and its deployments")
    def delete(self, request: Request, provider_id: int) -> Response:
        provider = access_provider(self.access, provider_id)
        provider_delete(self.access.tenant, provider=provider, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProviderTestApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        message = serializers.CharField()
        models = serializers.ListField(child=serializers.CharField())

    @extend_schema(request=None, responses=OutputSerializer, summary="Check the provider's URL and key")
    def post(self, request: Request, provider_id: int) -> Response:
        provider = access_provider(self.access, provider_id)
        return Response(self.OutputSerializer(provider_test_connection(provider)).data)


# --- Models ----------------------------------------------------------------------------------------
#
# A model is its deployments (in priority order) and its route settings, the same fields as a `models:`
# item of the tenant YAML and the console's model page, written through the same services. On a PUT, a
# routing field left out keeps its stored value and null sets its default; cooldown and split are
# replaced whole (a sub-field left out takes its default, as in the YAML).


class DeploymentSerializer(StrictSerializer):
    provider = serializers.CharField(help_text="The provider's name.")
    model = serializers.CharField(max_length=200, help_text="The model name the provider knows.")
    weight = serializers.IntegerField(
        min_value=1,
        max_value=MAX_WEIGHT,
        required=False,
        help_text="Share of traffic under the `weighted` strategy. Left out: 1 for a new deployment, else kept.",
    )
    base_model = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="The known model whose price and context window apply (an Azure deployment name, a "
        'fine-tune); "" for the upstream model itself. Left out: kept.',
    )


class StopWhenSerializer(StrictSerializer):
    score = serializers.CharField(max_length=64, help_text="The score that decides (e.g. thumbs).")
    min_calls = serializers.IntegerField(required=False, help_text="Scored calls each group needs; default 500.")
    significant = serializers.BooleanField(
        required=False, help_text="The variant wins only if its score is significantly higher (default true)."
    )


class SplitSerializer(StrictSerializer):
    model = serializers.CharField(max_length=200, help_text="The model that takes the share (the variant).")
    percent = serializers.FloatField(help_text="0 to 100.")
    sticky = serializers.ChoiceField(choices=Sticky.choices, required=False, help_text="Default: user.")
    stop_when = StopWhenSerializer(
        required=False,
        allow_null=True,
        help_text="The split ends itself once each group has min_calls scored calls: every call goes to the "
        "winner (or stays with control), the verdict is audited and the owners are e-mailed.",
    )


class CooldownSerializer(StrictSerializer):
    failures = serializers.IntegerField(required=False, help_text="Failures that open a deployment's breaker.")
    window_s = serializers.FloatField(required=False, help_text="...counted within this many seconds.")
    cooldown_s = serializers.FloatField(required=False, help_text="How long the breaker stays open.")


class RouteSettingsInput(StrictSerializer):
    """A model's routing fields; null sets a field's default. Ranges are checked by routing.services."""

    strategy = serializers.ChoiceField(choices=Strategy.choices, required=False, allow_null=True)
    retries = serializers.IntegerField(required=False, allow_null=True, help_text=f"0 to {MAX_RETRIES}.")
    timeout_s = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text=f"The deadline of one call, more than 0 and at most {MAX_TIMEOUT_S:g}.",
    )
    fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        allow_null=True,
        help_text="Other models of the tenant, tried in this order when this one fails.",
    )
    context_window_fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        allow_null=True,
        help_text="Models with a larger context window, tried when the prompt does not fit.",
    )
    split = SplitSerializer(required=False, allow_null=True, help_text="An A/B split; null: none.")
    cooldown = CooldownSerializer(required=False, allow_null=True, help_text="The deployments' circuit breaker.")


class DeploymentOutputSerializer(serializers.Serializer):
    provider = serializers.CharField(source="provider.name")
    model = serializers.CharField(source="upstream_model")
    weight = serializers.IntegerField()
    base_model = serializers.CharField()


class SplitOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    percent = serializers.FloatField()
    sticky = serializers.ChoiceField(choices=Sticky.choices)
    stop_when = serializers.DictField(required=False, allow_null=True, default=None)


class CooldownOutputSerializer(serializers.Serializer):
    failures = serializers.IntegerField()
    window_s = serializers.FloatField()
    cooldown_s = serializers.FloatField()


class ModelOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    deployments = DeploymentOutputSerializer(many=True, help_text="In priority order.")
    strategy = serializers.ChoiceField(choices=Strategy.choices)
    retries = serializers.IntegerField()
    timeout_s = serializers.FloatField()
    fallbacks = serializers.ListField(child=serializers.CharField())
    context_window_fallbacks = serializers.ListField(child=serializers.CharField())
    split = SplitOutputSerializer(allow_null=True)
    cooldown = CooldownOutputSerializer()


def _model(entry: ModelEntry, settings: dict | None) -> dict[str, Any]:
    """What ModelOutputSerializer reads: the deployments and the route settings (defaults when none)."""
    return {"name": entry.name, "deployments": entry.deployments, **(settings or copy.deepcopy(ROUTE_DEFAULTS))}


def _model_of(access: TenantAccess, name: str) -> dict[str, Any]:
    return _model(ModelEntry(name, access_model(access, name)), route_settings_of(access.tenant, name))


def _resolve_deployments(access: TenantAccess, items: list[dict]) -> list[DeploymentSpec]:
    by_name = {p.name: p for p in providers_for(access.tenant)}
    specs: list[DeploymentSpec] = []
    for i, item in enumerate(items):
        provider = by_name.get(item["provider"])
        if provider is None:
            raise serializers.ValidationError(
                {"deployments": [f"[{i}].provider: no provider named {item['provider']!r} in this tenant."]}
            )
        specs.append((provider, item["model"], item.get("weight"), item.get("base_model")))
    return specs


def _model_save(access: TenantAccess, name: str, data: dict) -> None:
    """Deployments, then the routing fields given, through the console's services, in one transaction."""
    deployments = _resolve_deployments(access, data["deployments"])
    routing = {field: data[field] for field in ROUTE_DEFAULTS if field in data}
    with transaction.atomic():
        model_deployments_set(access.tenant, model_name=name, deployments=deployments, actor=access.actor)
        if not routing:
            return
        settings = {**(route_settings_of(access.tenant, name) or {}), **routing}
        try:
            model_routes_set(access.tenant, routes={name: settings}, actor=access.actor)
        except DjangoValidationError as exc:
            # The services name fields "<model>.<field>" (a YAML file sets many models); here the URL or
            # the body names the model.
            prefix = f"{name}."
            raise DjangoValidationError({k.removeprefix(prefix): v for k, v in exc.message_dict.items()}) from None


class ModelListApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List models with their deployments and routing")
    def get(self, request: Request) -> Response:
        routes = route_settings_by_model(self.access.tenant)
        models = [_model(entry, routes.get(entry.name)) for entry in models_for(self.access.tenant)]
        return Response(self.OutputSerializer(models, many=True).data)


class ModelCreateApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(RouteSettingsInput):
        name = serializers.CharField(max_length=200)
        deployments = DeploymentSerializer(many=True, allow_empty=False, help_text="First = highest priority.")

    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, summary="Add a model")
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        name = serializer.validated_data["name"].strip()
        if any(m.name == name for m in models_for(self.access.tenant)):
            raise serializers.ValidationError(
                {"name": [f"{name} already exists; PUT /api/v1/models/{name}/ to change it."]}
            )
        _model_save(self.access, name, serializer.validated_data)
        return Response(self.OutputSerializer(_model_of(self.access, name)).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer, summary="Get a model with its deployments and routing")
    def get(self, request: Request, name: str) -> Response:
        return Response(self.OutputSerializer(_model_of(self.access, name)).data)


class ModelReplaceApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(RouteSettingsInput):
        deployments = DeploymentSerializer(many=True, allow_empty=False, help_text="First = highest priority.")

    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Replace a model's deployments (first = highest priority) and set the routing fields given",
        description="Routing fields left out keep their values; null sets a field's default.",
    )
    def put(self, request: Request, name: str) -> Response:
        access_model(self.access, name)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        _model_save(self.access, name, serializer.validated_data)
        return Response(self.OutputSerializer(_model_of(self.access, name)).data)


class ModelDeleteApi(TokenApi):
    required_perm = CONFIG_WRITE
    takes_no_input = True

    @extend_schema(request=None, responses={204: None}, summary="Delete a model")
    def delete(self, request: Request, name: str) -> Response:
        access_model(self.access, name)
        model_delete(self.access.tenant, model_name=name, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
