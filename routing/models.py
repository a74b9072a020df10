from __future__ import annotations

import json

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from gateway_project.common import crypto
from tenants.models import Tenant


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    OPENAI_COMPATIBLE = "openai-compatible", "OpenAI-compatible"
    ANTHROPIC = "anthropic", "Anthropic"
    AZURE = "azure", "Azure OpenAI"
    GEMINI = "gemini", "Google Gemini"
    BEDROCK = "bedrock", "AWS Bedrock"
    MOCK = "mock", "Built-in mock"


# Used when a provider gives no base_url. Azure has none (each resource has its own host) and
# Bedrock's depends on the region (bedrock_base_url); a kind missing here must be given a base_url.
DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com",
    ProviderKind.MOCK: "",
}


def bedrock_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


# Secrets a provider may hold besides api_key, by kind; all of them live in `secrets_encrypted`.
AWS_SECRET_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class ProviderCredential(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="providers")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=30, choices=ProviderKind.choices)
    base_url = models.URLField(max_length=500, blank=True)
    # Fernet token of the provider API key (see gateway_project.common.crypto); never returned or logged in clear.
    api_key_encrypted = models.TextField(blank=True)
    # How the key was given in YAML ("env:NAME"), so `gateway export` can write it back without the secret.
    api_key_source = models.CharField(max_length=200, blank=True)
    api_key_last4 = models.CharField(max_length=4, blank=True)
    api_version = models.CharField(max_length=40, blank=True)  # azure: the api-version query parameter
    region = models.CharField(max_length=30, blank=True)  # bedrock: signing region and default host
    # Fernet token of a JSON object with the other secrets: aws_access_key_id, aws_secret_access_key,
    # aws_session_token and "headers" ({name: value}, sent on every call; values may be tokens).
    secrets_encrypted = models.TextField(blank=True)
    # Where each of those came from, like api_key_source: {"aws_secret_access_key": "env:NAME",
    # "headers": {"X-Name": "env:NAME"}}; "literal" or absent when typed in.
    secret_sources = models.JSONField(default=dict, blank=True)
    # Header names only (not secret), so pages and the API can list them without decrypting.
    header_names = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_provider_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def masked_key(self) -> str:
        return f"…{self.api_key_last4}" if self.api_key_last4 else ""

    @property
    def endpoint_url(self) -> str:
        """The base URL calls go to: the stored one, or Bedrock's regional host when none was given."""
        if not self.base_url and self.kind == ProviderKind.BEDROCK and self.region:
            return bedrock_base_url(self.region)
        return self.base_url

    def secrets(self) -> dict:
        """The decrypted extra secrets ({} when none). Raises gateway_project.common.crypto.DecryptionError."""
        return json.loads(crypto.decrypt(self.secrets_encrypted)) if self.secrets_encrypted else {}


# Bounds shared by the columns, the services and the YAML parser, so each refuses the same values.
MAX_WEIGHT = 1000
MAX_RETRIES = 10
MAX_TIMEOUT_S = 3600.0
MAX_COOLDOWN_FAILURES = 1000
MAX_WINDOW_S = 86400.0
MAX_PROMPT_BYTES = 2**31 - 1


class ModelDeployment(models.Model):
    """One way of serving a public model name: a provider credential plus the upstream model id."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="deployments")
    model_name = models.CharField(max_length=200)  # the name clients send
    provider = models.ForeignKey(ProviderCredential, on_delete=models.CASCADE, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    # The known model whose price and context window apply when upstream_model is a custom name
    # (an Azure deployment name, a fine-tune); empty: upstream_model itself.
    base_model = models.CharField(max_length=200, blank=True)
    # Lower comes first; routing strategies (later) read this per request from the cached config.
    priority = models.PositiveIntegerField(default=0)
    # Share of traffic under the `weighted` strategy; other strategies ignore it.
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_WEIGHT)])
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


class Strategy(models.TextChoices):
    PRIORITY = "priority", "Priority (in the listed order)"
    WEIGHTED = "weighted", "Weighted random"
    LEAST_LATENCY = "least-latency", "Least latency"
    LOWEST_COST = "lowest-cost", "Lowest cost"
    LEAST_BUSY = "least-busy", "Least busy"


class Sticky(models.TextChoices):
    USER = "user", "Per end user"
    KEY = "key", "Per key"


# What a model does when it has no ModelRoute row; export omits a value equal to these.
ROUTE_DEFAULTS = {
    "strategy": Strategy.PRIORITY.value,
    "retries": 1,
    "timeout_s": 600.0,
    "fallbacks": [],
    "context_window_fallbacks": [],
    "split": None,
    "cooldown": {"failures": 3, "window_s": 60.0, "cooldown_s": 30.0},
}


class ModelRoute(models.Model):
    """How one public model is routed: strategy, retries, deadline, fallbacks, A/B split and breaker.

    A model without a row uses ROUTE_DEFAULTS; routing.services keeps a row only while something differs.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="model_routes")
    model_name = models.CharField(max_length=200)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.PRIORITY)
    retries = models.PositiveSmallIntegerField(default=1, validators=[MaxValueValidator(MAX_RETRIES)])
    timeout_s = models.FloatField(
        default=600.0, validators=[MinValueValidator(0.001), MaxValueValidator(MAX_TIMEOUT_S)]
    )
    # Other public model names of the same tenant, in the order they are tried.
    fallbacks = models.JSONField(default=list, blank=True)
    context_window_fallbacks = models.JSONField(default=list, blank=True)
    split_model = models.CharField(max_length=200, blank=True)  # empty: no split
    split_percent = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(100.0)])
    split_sticky = models.CharField(max_length=10, choices=Sticky.choices, default=Sticky.USER)
    # When the split ends itself: {"score", "min_calls", "significant"} (observability.splits); null: never.
    split_stop_when = models.JSONField(null=True, blank=True)
    cooldown_failures = models.PositiveIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(MAX_COOLDOWN_FAILURES)]
    )
    cooldown_window_s = models.FloatField(
        default=60.0, validators=[MinValueValidator(0.001), MaxValueValidator(MAX_WINDOW_S)]
    )
    cooldown_s = models.FloatField(default=30.0, validators=[MinValueValidator(0.001), MaxValueValidator(MAX_WINDOW_S)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "model_name"], name="uniq_model_route")]

    def __str__(self) -> str:
        return f"route {self.model_name}"

    def _split(self) -> dict | None:
        if not self.split_model:
            return None
        split = {"model": self.split_model, "percent": float(self.split_percent), "sticky": self.split_sticky}
        if self.split_stop_when:
            split["stop_when"] = dict(self.split_stop_when)
        return split

    def settings(self) -> dict:
        """The row as the plain dict routing.services and the YAML speak (same shape as ROUTE_DEFAULTS)."""
        return {
            "strategy": self.strategy,
            "retries": self.retries,
            "timeout_s": float(self.timeout_s),
            "fallbacks": list(self.fallbacks or []),
            "context_window_fallbacks": list(self.context_window_fallbacks or []),
            "split": self._split(),
            "cooldown": {
                "failures": self.cooldown_failures,
                "window_s": float(self.cooldown_window_s),
                "cooldown_s": float(self.cooldown_s),
            },
        }


class RouteRule(models.Model):
    """A tenant-level rule, evaluated in `position` order before a model's strategy: if `match`, use `route`.

    `match` holds the normalized conditions, all of which must hold: {"key": [names], "metadata": {k: v},
    "tags": [tags], "user": [names], "prompt_bytes_over": N}; absent keys are not checked.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="route_rules")
    position = models.PositiveIntegerField()
    match = models.JSONField(default=dict)
    route = models.CharField(max_length=200)  # the public model to use instead
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "position"], name="uniq_route_rule_position")]

    def __str__(self) -> str:
        return f"rule {self.position} -> {self.route}"


class McpTransport(models.TextChoices):
    STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
    SSE = "sse", "HTTP+SSE (2024-11-05)"


# Bounds shared by the services, the YAML parser and the console.
MAX_MCP_TIMEOUT_S = 600.0
MAX_MCP_SERVERS = 100
MCP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class McpServer(models.Model):
    """An upstream MCP server of the tenant, served behind its virtual keys at /mcp (proxy.mcp)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="mcp_servers")
    # Lower-case, no "__": tools are listed as `<name>__<tool>` on /mcp, so the name must split back.
    name = models.CharField(max_length=63)
    url = models.URLField(max_length=500)
    transport = models.CharField(max_length=20, choices=McpTransport.choices, default=McpTransport.STREAMABLE_HTTP)
    # Fernet token of {"bearer": "...", "headers": {name: value}} (gateway_project.common.crypto).
    secrets_encrypted = models.TextField(blank=True)
    # Where each secret came from ({"bearer": "env:NAME", "headers": {"X-Name": "env:NAME"}}), for export.
    secret_sources = models.JSONField(default=dict, blank=True)
    header_names = models.JSONField(default=list, blank=True)
    timeout_s = models.FloatField(
        default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(MAX_MCP_TIMEOUT_S)]
    )
    rpm = models.PositiveIntegerField(null=True, blank=True)  # tool calls per minute to this server, all keys
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_mcp_server_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def secrets(self) -> dict:
        """{"bearer": str, "headers": {..}} decrypted ({} when none). Raises crypto.DecryptionError."""
        return json.loads(crypto.decrypt(self.secrets_encrypted)) if self.secrets_encrypted else {}
