from __future__ import annotations

from django.db import models
from django.utils import timezone


class CallLog(models.Model):
    """One row per proxied request, written in bulk off the hot path (observability.logbuffer).

    Foreign keys are plain ids without database constraints: rows are bulk-inserted from a buffer and
    must never be lost because a key or deployment was deleted in between.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.DO_NOTHING, db_constraint=False)
    virtual_key = models.ForeignKey(
        "tenants.VirtualKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    request_id = models.CharField(max_length=100, db_index=True)
    endpoint = models.CharField(max_length=40)
    requested_model = models.CharField(max_length=200, blank=True)
    # The other public model of an A/B split when this call was sent there ("" for the control group).
    variant = models.CharField(max_length=200, blank=True, default="")
    deployment = models.ForeignKey(
        "routing.ModelDeployment",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    provider = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField()
    ttfb_ms = models.FloatField(null=True)
    prompt_tokens = models.PositiveIntegerField(null=True)
    completion_tokens = models.PositiveIntegerField(null=True)
    total_tokens = models.PositiveIntegerField(null=True)
    error_type = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    end_user = models.CharField(max_length=200, blank=True)
    client_disconnected = models.BooleanField(default=False)
    # Exact cost in USD x 10**12 from the provider's usage and the tenant's prices; null when the model
    # has no price. See billing.prices.
    cost_picodollars = models.BigIntegerField(null=True)
    # True when tokens were estimated (no usage reported, or the client left mid-stream).
    cost_estimated = models.BooleanField(default=False)
    # The day in the tenant's time zone this call counts for in the spend ledger and budgets.
    day = models.DateField(null=True)
    tags = models.JSONField(default=list)
    # One entry per upstream attempt: {"deployment", "provider", "model", "status", "latency_ms", "error"}.
    attempts = models.JSONField(default=list)
    # The public model the call was routed to after rules and the A/B split ("" when it is the one asked for).
    route = models.CharField(max_length=200, blank=True, default="")
    # Why the call left its model for a fallback (the last failure's error kind), "" without a fallback.
    fallback_reason = models.CharField(max_length=100, blank=True, default="")
    # The key's metadata at the time of the call (the key form promises it on every log row).
    key_metadata = models.JSONField(default=dict)
    # Prompt tokens the provider served from its own prompt cache.
    cached_tokens = models.PositiveIntegerField(null=True)
    # The gateway's exact cache: "hit", "miss", or "" when the cache was not consulted.
    cache_status = models.CharField(max_length=8, blank=True, default="")
    # What a cache hit would have cost upstream (USD x 10**12); null otherwise.
    cost_saved_picodollars = models.BigIntegerField(null=True)
    # Data-policy actions taken: {"email": {"pseudonymize": 2}, "card": {"block": 1}}. Counts only, never values.
    pii_actions = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} {self.requested_model} {self.status_code}"

    @property
    def cost_usd(self):
        from billing.prices import from_pico

        return None if self.cost_picodollars is None else from_pico(self.cost_picodollars)
