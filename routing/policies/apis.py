"""The management API of data policies: the tenant's `pii:`, `cache:` and `guardrails:` sections as JSON."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from routing.policies.guardrails import CHECKS, export_guardrails
from routing.policies.services import (
    guardrails_clean,
    tenant_cache_policy_set,
    tenant_guardrails_set,
    tenant_pii_policy_set,
    virtual_key_guardrails_set,
    virtual_key_pii_policy_set,
)
from routing.policies.spec import pii_policy_clean
from tenants.apis import KEY_GUARDRAILS, KEY_PII, TokenApi
from tenants.permissions import CONFIG_WRITE
from tenants.strict import StrictSerializer

PII_HELP = (
    "The `pii:` section of the tenant YAML as JSON: {mode: enforce|log-only, detectors: {email|phone|card|iban|"
    "us_ssn|ip|secret: redact|mask|pseudonymize|block|log-only}, custom: [{name, pattern, action}], "
    "terms: {words: [...], action}, scan_responses: bool}. null: no policy."
)
CACHE_HELP = (
    "The `cache:` section of the tenant YAML as JSON: {enabled: bool, ttl_s: 1..2592000, models: [...] "
    "(optional; default every model)}. null: the cache is off."
)
GUARDRAILS_HELP = (
    f"The `guardrails:` section of the tenant YAML as JSON, checks run in order: [{{name, check: {'|'.join(CHECKS)}, "
    "on: input|output|both, action: block|flag|log-only, fail: closed|open, timeout_s, threshold, words, topics, "
    "max, model, api: chat|moderations, categories, embedding_model, applies_to: {models, keys, tags}}]. Answered "
    "as YAML writes it (defaults left out). null or []: no checks (answered as null)."
)


class PiiPolicyGetApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(serializers.Serializer):
        pii = serializers.JSONField(allow_null=True, source="pii_policy", help_text=PII_HELP)

    @extend_schema(responses=OutputSerializer, summary="Get the tenant's PII policy")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(self.access.tenant).data)


class PiiPolicyPutApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(StrictSerializer):
        pii = serializers.JSONField(allow_null=True, help_text=PII_HELP)

    class OutputSerializer(serializers.Serializer):
        pii = serializers.JSONField(allow_null=True, source="pii_policy", help_text=PII_HELP)

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Replace the tenant's PII policy (proxies use it within a second); returns it normalized",
    )
    def put(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = self.access.tenant
        tenant_pii_policy_set(tenant, policy=serializer.validated_data["pii"], actor=self.access.actor)
        return Response(self.OutputSerializer(tenant).data)


class CachePolicyGetApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(serializers.Serializer):
        cache = serializers.JSONField(allow_null=True, source="cache_policy", help_text=CACHE_HELP)

    @extend_schema(responses=OutputSerializer, summary="Get the tenant's prompt-cache settings")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(self.access.tenant).data)


class CachePolicyPutApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(StrictSerializer):
        cache = serializers.JSONField(allow_null=True, help_text=CACHE_HELP)

    class OutputSerializer(serializers.Serializer):
        cache = serializers.JSONField(allow_null=True, source="cache_policy", help_text=CACHE_HELP)

    @extend_schema(
        request=InputSerializer, responses=OutputSerializer, summary="Replace the tenant's prompt-cache settings"
    )
    def put(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = self.access.tenant
        tenant_cache_policy_set(tenant, policy=serializer.validated_data["cache"], actor=self.access.actor)
        return Response(self.OutputSerializer(tenant).data)


class GuardrailsOutputSerializer(serializers.Serializer):
    guardrails = serializers.SerializerMethodField(help_text=GUARDRAILS_HELP)

    @extend_schema_field({"type": "array", "items": {"type": "object"}, "nullable": True})
    def get_guardrails(self, tenant: Any) -> list[dict[str, Any]] | None:
        # As YAML writes them, so a GET's answer can be PUT back (a stored denied_topics row keeps `words`).
        return export_guardrails(tenant.guardrails)


class GuardrailsGetApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(GuardrailsOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer, summary="Get the tenant's guardrails")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(self.access.tenant).data)


class GuardrailsPutApi(TokenApi):
    required_perm = CONFIG_WRITE

    class InputSerializer(StrictSerializer):
        guardrails = serializers.JSONField(allow_null=True, help_text=GUARDRAILS_HELP)

    class OutputSerializer(GuardrailsOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Replace the tenant's guardrails (proxies use them within a second); a refusal names the field",
    )
    def put(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = self.access.tenant
        tenant_guardrails_set(tenant, guardrails=serializer.validated_data["guardrails"], actor=self.access.actor)
        return Response(self.OutputSerializer(tenant).data)


def register() -> None:
    """The key API's `pii` and `guardrails` fields (tenants.apis) are checked and stored here."""
    KEY_PII.clean = pii_policy_clean
    KEY_PII.store = virtual_key_pii_policy_set
    KEY_GUARDRAILS.clean = guardrails_clean
    KEY_GUARDRAILS.store = virtual_key_guardrails_set
    KEY_GUARDRAILS.export = export_guardrails
