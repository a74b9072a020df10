"""Routing objects looked up for a tenant's request: 404 unless they belong to the tenant
(the rest of the access rules are tenants.permissions)."""

from __future__ import annotations

from django.http import Http404

from routing.models import ModelDeployment, ProviderCredential
from tenants.permissions import TenantAccess


def access_provider(access: TenantAccess, provider_id: int) -> ProviderCredential:
    provider = ProviderCredential.objects.filter(tenant=access.tenant, id=provider_id).first()
    if provider is None:
        raise Http404("No such provider in this tenant.")
    return provider


def access_model(access: TenantAccess, model_name: str) -> list[ModelDeployment]:
    """The deployments serving `model_name` in this tenant, in priority order; 404 if there are none."""
    deployments = list(
        ModelDeployment.objects.filter(tenant=access.tenant, model_name=model_name).select_related("provider")
    )
    if not deployments:
        raise Http404("No such model in this tenant.")
    return deployments
