"""Reads of a tenant's providers and models."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from django.db.models import QuerySet

from routing.models import ROUTE_DEFAULTS, ModelDeployment, ModelRoute, ProviderCredential, RouteRule
from tenants.models import Tenant
from tenants.selectors import MODEL_NAMES, OVERVIEW_COUNTS


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


def route_settings_of(tenant: Tenant, model_name: str) -> dict | None:
    """A model's route settings in the services' shape (defaults when it has no row); None if no such model."""
    if not ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).exists():
        return None
    row = ModelRoute.objects.filter(tenant=tenant, model_name=model_name).first()
    return row.settings() if row is not None else copy.deepcopy(ROUTE_DEFAULTS)


def route_rules_for(tenant: Tenant) -> list[RouteRule]:
    """The tenant's rules in evaluation order."""
    return list(RouteRule.objects.filter(tenant=tenant).order_by("position", "id"))


def split_models_for(tenant: Tenant) -> dict[str, str]:
    """Model name -> the model its A/B split sends a share to, for models that have a split."""
    return dict(
        ModelRoute.objects.filter(tenant=tenant).exclude(split_model="").values_list("model_name", "split_model")
    )


def tenant_counts(tenant: Tenant) -> dict[str, int]:
    """The tenant overview's provider and model counts (tenants.selectors.OVERVIEW_COUNTS)."""
    return {
        "providers": ProviderCredential.objects.filter(tenant=tenant).count(),
        "models": ModelDeployment.objects.filter(tenant=tenant).values("model_name").distinct().count(),
    }


def register() -> None:
    OVERVIEW_COUNTS["routing"] = tenant_counts
    MODEL_NAMES["routing"] = model_names_for
