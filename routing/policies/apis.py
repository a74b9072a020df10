"""The management API of data policies: the tenant's `pii:` and `cache:` sections as JSON."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from routing.policies.services import tenant_cache_policy_set, tenant_pii_policy_set, virtual_key_pii_policy_set
from routing.policies.spec import pii_policy_clean
from tenants.apis import KEY_PII, TokenApi
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


def register() -> None:
    """The key API's `pii` field (tenants.apis) is checked and stored here."""
    KEY_PII.clean = pii_policy_clean
    KEY_PII.store = virtual_key_pii_policy_set
