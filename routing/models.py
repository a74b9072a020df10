from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenants.models import Tenant


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    OPENAI_COMPATIBLE = "openai-compatible", "OpenAI-compatible"
    MOCK = "mock", "Built-in mock"


DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.MOCK: "",
}


class ProviderCredential(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="providers")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=30, choices=ProviderKind.choices)
    base_url = models.URLField(max_length=500, blank=True)
    # Fernet token of the provider API key (see routing.crypto); never returned or logged in clear.
    api_key_encrypted = models.TextField(blank=True)
    # How the key was given in YAML ("env:NAME"), so `gateway export` can write it back without the secret.
    api_key_source = models.CharField(max_length=200, blank=True)
    api_key_last4 = models.CharField(max_length=4, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_provider_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def masked_key(self) -> str:
        return f"…{self.api_key_last4}" if self.api_key_last4 else ""


class ModelDeployment(models.Model):
    """One way of serving a public model name: a provider credential plus the upstream model id."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="deployments")
    model_name = models.CharField(max_length=200)  # the name clients send
    provider = models.ForeignKey(ProviderCredential, on_delete=models.CASCADE, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    # Lower comes first; routing strategies (later) read this per request from the cached config.
    priority = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model_name", "priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "model_name", "provider", "upstream_model"], name="uniq_deployment"
            )
        ]
        indexes = [models.Index(fields=["tenant", "model_name"])]

    def __str__(self) -> str:
        return f"{self.model_name} -> {self.provider.name}/{self.upstream_model}"
