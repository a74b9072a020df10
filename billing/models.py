from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from tenants.models import Tenant

# Money sums are stored as integer picodollars (USD x 10**12): exact on PostgreSQL and SQLite alike
# (SQLite turns decimals into floats), and exact for every price with up to six decimals per million
# tokens. Python code turns them into Decimal with gateway_project.common.money.from_pico.
PRICE = {"max_digits": 18, "decimal_places": 6, "validators": [MinValueValidator(Decimal(0))]}


class BillingSettings(models.Model):
    """Per-tenant money settings: the time zone budget periods and ledger days are counted in."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing")
    timezone = models.CharField(max_length=64, default="UTC")
    alert_emails = models.JSONField(default=list, blank=True)
    # While the shared counters (Redis) are unreachable, hard budgets cannot be guaranteed: "closed"
    # refuses the calls they cover (503 budget_unavailable), "open" lets them through unchecked.
    hard_budgets_on_redis_outage = models.CharField(
        max_length=8, choices=[("closed", "refuse calls"), ("open", "let calls through")], default="closed"
    )

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


# The `threshold` of the alert sent when a hard budget starts refusing calls (whatever share is spent:
# a call is refused as soon as its worst case does not fit), once per budget and period.
ALERT_REFUSED = 999


class BudgetAlert(models.Model):
    """One row per threshold crossed per budget period: the unique constraint makes alerts exactly-once.
    ALERT_REFUSED is the "calls refused" alert's row."""

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
        indexes = [
            models.Index(fields=["tenant", "day"]),
            # The periodic draft refresh reads the last two months of every tenant
            # (billing.invoicing.services.refresh_drafts).
            models.Index(fields=["day"], name="ledger_day_idx"),
        ]

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


# --- Plans and invoices --------------------------------------------------------------------------
# Invoice amounts are Decimal columns with 16 decimal places: a ledger cost is exact to the
# picodollar (12 places) and a markup percent has at most 2 places, so cost * percent / 100 is exact
# too. Amounts are rounded to cents once, at the invoice total (see billing.invoicing.services).
MONEY = {"max_digits": 34, "decimal_places": 16}


class LineGrouping(models.TextChoices):
    MODEL = "model", "One line per model"
    KEY = "key", "One line per model and virtual key"


class Plan(models.Model):
    """What the operator charges one tenant each calendar month (tenant time zone), in USD."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="plan")
    base_fee_usd = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal(0), validators=[MinValueValidator(Decimal(0))]
    )
    markup_percent = models.DecimalField(
        max_digits=7, decimal_places=2, default=Decimal(0), validators=[MinValueValidator(Decimal(0))]
    )
    included_usd = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal(0), validators=[MinValueValidator(Decimal(0))]
    )
    currency = models.CharField(max_length=3, default="usd", editable=False)
    line_grouping = models.CharField(max_length=8, choices=LineGrouping.choices, default=LineGrouping.MODEL)
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.tenant}: {self.base_fee_usd} USD + {self.markup_percent}%"


class InvoiceCounter(models.Model):
    """One row per operator: the last invoice number handed out. Finalization locks it with
    SELECT ... FOR UPDATE and takes the next number in the same transaction, so numbers are
    sequential and gap-free (a rolled-back finalization gives its number back)."""

    name = models.CharField(max_length=32, unique=True, default="operator")
    last_number = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: {self.last_number}"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINALIZED = "finalized", "Finalized"
    PAID = "paid", "Paid"
    VOID = "void", "Void"


class Invoice(models.Model):
    """One tenant's bill for (part of) one calendar month in the tenant's time zone.

    `month` is the first day of the calendar month billed; `period_start`/`period_end` are inclusive
    local dates (an early close ends the period on the closing day; the rest of the month goes to a
    second invoice for the same month). `number` is null while the invoice is a draft.
    """

    # Issued invoices outlive their tenant (deleting them would leave gaps in the numbering, and the
    # operator must keep what it billed): the FK goes NULL and the snapshot below still says who was billed.
    tenant = models.ForeignKey(Tenant, on_delete=models.SET_NULL, null=True, related_name="invoices")
    tenant_slug = models.CharField(max_length=64, blank=True)
    tenant_name = models.CharField(max_length=200, blank=True)
    number = models.PositiveBigIntegerField(null=True, blank=True, unique=True)
    status = models.CharField(max_length=10, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT)
    month = models.DateField()
    period_start = models.DateField()
    period_end = models.DateField()
    currency = models.CharField(max_length=3, default="usd")
    # Unrounded parts (see billing.invoicing.services for the rule) and the total rounded to cents.
    subtotal_usd = models.DecimalField(default=Decimal(0), **MONEY)
    markup_usd = models.DecimalField(default=Decimal(0), **MONEY)
    fee_usd = models.DecimalField(default=Decimal(0), **MONEY)
    total_usd = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal(0))
    # Plan terms the invoice was built with, kept so a finalized invoice explains itself.
    markup_percent = models.DecimalField(max_digits=7, decimal_places=2, default=Decimal(0))
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    # Stripe push state (billing.stripe.sync): retried with backoff until stripe_pushed_at is set.
    stripe_invoice_id = models.CharField(max_length=100, blank=True)
    stripe_pushed_at = models.DateTimeField(null=True, blank=True)
    stripe_attempts = models.PositiveIntegerField(default=0)
    stripe_next_attempt_at = models.DateTimeField(null=True, blank=True)
    stripe_error = models.TextField(blank=True)
    # Set once a voided invoice that Stripe had is voided (or deleted, if still a draft) there too.
    stripe_voided_at = models.DateTimeField(null=True, blank=True)
    # The running month's ledger as of the last refresh (requests and exact cost): the periodic refresh
    # (billing.invoicing.services.refresh_drafts) rebuilds only invoices whose ledger moved since.
    ledger_requests = models.PositiveBigIntegerField(default=0)
    ledger_cost_usd = models.DecimalField(default=Decimal(0), **MONEY)

    class Meta:
        constraints = [
            # At most one open draft per tenant and month: concurrent refreshes cannot fork it.
            models.UniqueConstraint(
                fields=["tenant", "month"], condition=models.Q(status="draft"), name="uniq_invoice_draft"
            )
        ]
        indexes = [models.Index(fields=["tenant", "month"])]
        ordering = ["-month", "-period_start", "-id"]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.label} {self.month:%Y-%m} ({self.status})"

    @property
    def label(self) -> str:
        """The invoice number as printed: INV-000042, or DRAFT until finalization assigns one."""
        return f"INV-{self.number:06d}" if self.number is not None else "DRAFT"

    @property
    def billed_slug(self) -> str:
        """Who the invoice bills: the snapshot taken when it was built (kept after the tenant is deleted)."""
        return self.tenant_slug or (self.tenant.slug if self.tenant_id else "")

    @property
    def billed_name(self) -> str:
        return self.tenant_name or (self.tenant.name if self.tenant_id else "")


class LineKind(models.TextChoices):
    USAGE = "usage", "Usage"
    FEE = "fee", "Base fee"
    MARKUP = "markup", "Markup"
    CREDIT = "credit", "Correction"
    INCLUDED = "included", "Included amount"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=10, choices=LineKind.choices)
    # Model name for usage/credit lines; a description for the others.
    label = models.CharField(max_length=300, blank=True)
    model = models.CharField(max_length=200, blank=True)
    virtual_key_id = models.BigIntegerField(null=True, blank=True)
    key_name = models.CharField(max_length=200, blank=True)
    # The calendar month the usage belongs to (differs from invoice.month for late corrections).
    usage_month = models.DateField(null=True, blank=True)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(default=Decimal(0), **MONEY)
    amount_usd = models.DecimalField(default=Decimal(0), **MONEY)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.invoice_id} #{self.position} {self.kind} {self.label} {self.amount_usd}"


class StripeEvent(models.Model):
    """Every Stripe webhook event id seen: the unique id makes processing exactly-once."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"
