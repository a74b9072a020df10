"""Reads of a tenant's providers and models."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from routing.models import ModelDeployment, ProviderCredential
from tenants.models import Tenant


@dataclass
class ModelEntry:
    name: str
    deployments: list[ModelDeployment]


def providers_for(tenant: Tenant) -> QuerySet[ProviderCredential]:
    return ProviderCredential.objects.filter(tenant=tenant).order_by("name")


def models_for(tenant: Tenant) -> list[ModelEntry]:
    """Public model names with the deployments that serve each, in priority order."""
    entries: dict[str, ModelEntry] = {}
    for d in ModelDeployment.objects.filter(tenant=tenant).select_related("provider"):
        entries.setdefault(d.model_name, ModelEntry(d.model_name, [])).deployments.append(d)
    return list(entries.values())


def model_names_for(tenant: Tenant) -> list[str]:
    return list(
        ModelDeployment.objects.filter(tenant=tenant)
        .order_by("model_name")
        .values_list("model_name", flat=True)
        .distinct()
    )
