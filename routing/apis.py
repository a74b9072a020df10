"""Management REST API for provider credentials and models (conventions in tenants.apis)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from routing.models import AWS_SECRET_FIELDS, ProviderCredential, ProviderKind
from routing.permissions import access_model, access_provider
from routing.probe import provider_test_connection
from routing.selectors import ModelEntry, models_for, providers_for
from routing.services import (
    KEEP,
    KIND_FIELDS,
    model_delete,
    model_deployments_set,
    provider_delete,
    provider_upsert,
)
from tenants.apis import TokenApi
from tenants.bounds import MAX_SECRET_CHARS
from tenants.permissions import CONFIG_WRITE, TenantAccess

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


class ProviderSettingsInput(serializers.Serializer):
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

    @extend_schema(request=None, responses={204: None}, summary="Delete a provider and its deployments")
    def delete(self, request: Request, provider_id: int) -> Response:
        provider = access_provider(self.access, provider_id)
        provider_delete(self.access.tenant, provider=provider, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProviderTestApi(TokenApi):
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        message = serializers.CharField()
        models = serializers.ListField(child=serializers.CharField())

    @extend_schema(request=None, responses=OutputSerializer, summary="Check the provider's URL and key")
    def post(self, request: Request, provider_id: int) -> Response:
        provider = access_provider(self.access, provider_id)
        return Response(self.OutputSerializer(provider_test_connection(provider)).data)


# --- Models ----------------------------------------------------------------------------------------


class DeploymentSerializer(serializers.Serializer):
    provider = serializers.CharField(help_text="The provider's name.")
    model = serializers.CharField(max_length=200, help_text="The model name the provider knows.")


class ModelOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    deployments = serializers.SerializerMethodField()

    def get_deployments(self, entry: ModelEntry) -> list[dict[str, Any]]:
        return [{"provider": d.provider.name, "model": d.upstream_model} for d in entry.deployments]


def _resolve_deployments(access: TenantAccess, items: list[dict]) -> list[tuple[ProviderCredential, str]]:
    by_name = {p.name: p for p in providers_for(access.tenant)}
    pairs = []
    for i, item in enumerate(items):
        provider = by_name.get(item["provider"])
        if provider is None:
            raise serializers.ValidationError(
                {"deployments": [f"[{i}].provider: no provider named {item['provider']!r} in this tenant."]}
            )
        pairs.append((provider, item["model"]))
    return pairs


class ModelListApi(TokenApi):
    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List models and their deployments")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(models_for(self.access.tenant), many=True).data)


class ModelCreateApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        deployments = DeploymentSerializer(many=True, allow_empty=False)

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
        pairs = _resolve_deployments(self.access, serializer.validated_data["deployments"])
        model_deployments_set(self.access.tenant, model_name=name, deployments=pairs, actor=self.access.actor)
        entry = ModelEntry(name, access_model(self.access, name))
        return Response(self.OutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(TokenApi):
    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer, summary="Get a model")
    def get(self, request: Request, name: str) -> Response:
        return Response(self.OutputSerializer(ModelEntry(name, access_model(self.access, name))).data)


class ModelReplaceApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(serializers.Serializer):
        deployments = DeploymentSerializer(many=True, allow_empty=False)

    class OutputSerializer(ModelOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Replace a model's deployments (first = highest priority)",
    )
    def put(self, request: Request, name: str) -> Response:
        access_model(self.access, name)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pairs = _resolve_deployments(self.access, serializer.validated_data["deployments"])
        model_deployments_set(self.access.tenant, model_name=name, deployments=pairs, actor=self.access.actor)
        return Response(self.OutputSerializer(ModelEntry(name, access_model(self.access, name))).data)


class ModelDeleteApi(TokenApi):
    required_perm = CONFIG_WRITE

    @extend_schema(request=None, responses={204: None}, summary="Delete a model")
    def delete(self, request: Request, name: str) -> Response:
        access_model(self.access, name)
        model_delete(self.access.tenant, model_name=name, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
