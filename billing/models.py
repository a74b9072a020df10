from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from tenants.models import Tenant

# Money sums are stored as integer picodollars (USD x 10**12): exact on PostgreSQL and SQLite alike
# (SQLite turns decimals into floats), and exact for every price with up to six decimals per million
# tokens. Python code turns them into Decimal with billing.prices.from_pico.
PRICE = {"max_digits": 18, "decimal_places": 6, "validators": [MinValueValidator(Decimal(0))]}


class BillingSettings(models.Model):
    """Per-tenant money settings: the time zone budget periods and ledger days are counted in."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing")
    timezone = models.CharField(max_length=64, default="UTC")
    alert_emails = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"{self.tenant} ({self.timezone})"


class PriceOverride(models.Model):
    """A negotiated price for one upstream model id, USD per million tokens."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="price_overrides")
    model = models.CharField(max_length=200)
    input = models.DecimalField(**PRICE)
    output = models.DecimalField(**PRICE)
    cached_input = models.DecimalField(null=True, blank=True, **PRICE)
    cache_write = models.DecimalField(null=True, blank=True, **PRICE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "model"], name="uniq_price_override")]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.model}"


class LimitScope(models.TextChoices):
    TENANT = "tenant", "Tenant"
    KEY = "key", "Virtual key"
    DEPLOYMENT = "deployment", "Deployment"


class RateLimit(models.Model):
    """RPM/TPM (and parallel requests for keys) for the tenant, one key or one deployment."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rate_limits")
    scope = models.CharField(max_length=12, choices=LimitScope.choices)
    # Key or deployment id; empty for the tenant scope.
    ref = models.CharField(max_length=64, blank=True)
    rpm = models.PositiveIntegerField(null=True, blank=True)
    tpm = models.PositiveIntegerField(null=True, blank=True)
    max_parallel = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "scope", "ref"], name="uniq_rate_limit")]

    def __str__(self) -> str:
        return f"{self.tenant} {self.scope}:{self.ref} rpm={self.rpm} tpm={self.tpm}"


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Day"
    WEEK = "week", "Week"
    MONTH = "month", "Month"
    TOTAL = "total", "Total"


class BudgetMode(models.TextChoices):
    HARD = "hard", "Hard (refuse)"
    SOFT = "soft", "Soft (alert only)"


class Budget(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budgets")
    # "tenant", "key:NAME", "user:ID" or "tag:TAG"
    scope = models.CharField(max_length=220)
    limit_usd = models.DecimalField(max_digits=18, decimal_places=6, validators=[MinValueValidator(Decimal(0))])
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    mode = models.CharField(max_length=8, choices=BudgetMode.choices, default=BudgetMode.HARD)
    alert_at = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "scope", "period"], name="uniq_budget")]

    def __str__(self) -> str:
        return f"{self.tenant} {self.scope} {self.limit_usd} USD/{self.period} ({self.mode})"


class BudgetAlert(models.Model):
    """One row per threshold crossed per budget period: the unique constraint makes alerts exactly-once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_key = models.CharField(max_length=20)
    threshold = models.PositiveSmallIntegerField()
    spent_picodollars = models.BigIntegerField()
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["budget", "period_key", "threshold"], name="uniq_budget_alert")]

    def __str__(self) -> str:
        return f"{self.budget} {self.period_key} {self.threshold}%"


class SpendLedger(models.Model):
    """Spend by tenant, day (tenant time zone), key, end user and model.

    Written in the same transaction as the call logs it sums, so `gateway reconcile` can prove that
    ledger totals equal the call log costs.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    virtual_key_id = models.BigIntegerField(null=True)
    end_user = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    cost_picodollars = models.BigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "virtual_key_id", "end_user", "model"],
                name="uniq_ledger_row",
            )
        ]
        indexes = [models.Index(fields=["tenant", "day"])]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.model} {self.cost_picodollars}"


class TagSpend(models.Model):
    """Spend by tenant, day and tag. A call with two tags counts in both tag rows."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    tag = models.CharField(max_length=100)
    cost_picodollars = models.BigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day", "tag"], name="uniq_tag_spend")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.tag} {self.cost_picodollars}"
