from __future__ import annotations

import math

from django.conf import settings
from django.db import models
from django.utils import timezone

from gateway_project.common.money import from_pico


class CallLog(models.Model):
    """One row per proxied request, written in bulk off the hot path (observability.logbuffer).

    Foreign keys are plain ids without database constraints: rows are bulk-inserted from a buffer and
    must never be lost because a key or deployment was deleted in between.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Every read is per tenant (the composite indexes below lead with it): no index of their own on the
    # foreign keys, since each index is paid for on every one of the many inserts.
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    virtual_key = models.ForeignKey(
        "tenants.VirtualKey",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    request_id = models.CharField(max_length=100, db_index=True)
    # The gateway's own id of the call (x-gateway-call-id), for scores; "" on rows from before it existed.
    # A database default too: a gateway process of the previous release (a rolling deploy) inserts rows
    # without this column.
    call_id = models.CharField(max_length=40, blank=True, default="", db_default="")
    endpoint = models.CharField(max_length=40)
    requested_model = models.CharField(max_length=200, blank=True)
    # The other public model of an A/B split when this call was sent there ("" for the control group).
    variant = models.CharField(max_length=200, blank=True, default="")
    deployment = models.ForeignKey(
        "routing.ModelDeployment",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
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
    # has no price. See gateway_project.common.money.
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
    # Guardrail verdicts: {check name: {"check", "side", "outcome", "score", "ms"}}; never the text.
    guardrails = models.JSONField(default=dict, null=True, blank=True)

    class Meta:
        indexes = [
            # The log explorer's keyset pagination orders by (created_at, id) within a tenant, and a
            # member's view (and the key filter) reads one key's calls.
            models.Index(fields=["tenant", "-created_at", "-id"], name="calllog_tenant_created_id"),
            models.Index(fields=["tenant", "virtual_key", "-created_at"], name="calllog_tenant_key_created"),
            # The explorer's other filters, so that one matching few rows (?user=rare) reads those rows
            # instead of walking the range: partial where most rows would not match.
            models.Index(
                fields=["tenant", "end_user", "-created_at"],
                name="calllog_tenant_user_created",
                condition=~models.Q(end_user=""),
            ),
            models.Index(fields=["tenant", "requested_model", "-created_at"], name="calllog_tenant_model_created"),
            models.Index(fields=["tenant", "call_id"], name="calllog_tenant_call_id", condition=~models.Q(call_id="")),
            models.Index(
                fields=["tenant", "-created_at"],
                name="calllog_tenant_errors_created",
                condition=models.Q(status_code__gte=400) | ~models.Q(error_type=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.requested_model} {self.status_code}"

    @property
    def cost_usd(self):
        return None if self.cost_picodollars is None else from_pico(self.cost_picodollars)


# --- Rollups: what the dashboard and the spend page read, never the raw logs ------------------------

# Latency and TTFB histograms, log-scale: bucket 0 holds [0, 0.05 ms], bucket i the values up to
# LATENCY_BOUNDS_MS[i], each bound 25 % above the one before, up to 10 minutes; the last bucket is open.
# A percentile read from them is within 25 % of the exact one (0.05 ms below 0.05 ms): it is interpolated
# from order statistics that each lie in their bucket (observability.rollups.percentile_from_histogram).
# 25 % rather than 10 %: every flushed batch upserts these columns, three histograms of 76 buckets
# instead of 174, and that write is most of the log writer's cost (the test suite ran 2x slower at 10 %).
HISTOGRAM_FLOOR_MS = 0.05
HISTOGRAM_RATIO = 1.25
HISTOGRAM_RELATIVE_ERROR = HISTOGRAM_RATIO - 1
_TOP_MS = 600_000
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    HISTOGRAM_FLOOR_MS * HISTOGRAM_RATIO**i
    for i in range(math.ceil(math.log(_TOP_MS / HISTOGRAM_FLOOR_MS, HISTOGRAM_RATIO)) + 1)
)
HISTOGRAM_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
# Latency of every call; time to first byte of the calls that got one; latency of those same calls, so
# that their TTFT percentiles are compared with (and clamped to) the latency of the same population.
LATENCY_COLUMNS = tuple(f"lat_b{i}" for i in range(HISTOGRAM_BUCKETS))
TTFB_COLUMNS = tuple(f"ttfb_b{i}" for i in range(HISTOGRAM_BUCKETS))
TTFB_LATENCY_COLUMNS = tuple(f"ttfb_lat_b{i}" for i in range(HISTOGRAM_BUCKETS))


class CallRollup(models.Model):
    """Calls summed per bucket and per (model, key, variant): the series, percentiles and those breakdowns.

    End users and tags have rollups of their own (UserRollupHour, TagRollupHour): thousands of end users
    would multiply these rows, and every dashboard query reads these.

    Written per flushed batch of the call-log buffer as additive upserts (observability.rollups), so
    concurrent writers in many processes never lose an increment. `virtual_key_id` is 0 for calls
    without a key: a NULL would never conflict in the unique constraint and duplicate rows.
    """

    tenant_id = models.BigIntegerField()
    bucket = models.DateTimeField()
    model = models.CharField(max_length=200)
    virtual_key_id = models.BigIntegerField(default=0)
    variant = models.CharField(max_length=200, default="")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_picodollars = models.BigIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    # Sums of squares, for variances (the A/B comparison's Welch tests read them: observability.ab). Rows
    # written before these columns existed hold 0 there; readers fall back to the call log for those.
    latency_sumsq = models.FloatField(default=0)
    cost_sumsq = models.FloatField(default=0)
    ttfb_count = models.BigIntegerField(default=0)
    last_at = models.DateTimeField(null=True)
    # NULL for an empty bucket: most of the 522 buckets of a row are empty, and a NULL costs one bit.
    for _name in LATENCY_COLUMNS + TTFB_COLUMNS + TTFB_LATENCY_COLUMNS:
        locals()[_name] = models.BigIntegerField(null=True)
    del _name

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.bucket:%Y-%m-%d %H:%M} {self.model} {self.requests}"


class ScoreRollupHour(models.Model):
    """Scores summed per hour of their call, model, variant and name: the A/B comparison's score statistics
    without reading every score. Kept by PostgreSQL triggers on CallScore (migration 0019), so every way a
    score is written, replaced or deleted (feedback, evaluators, retention) keeps it exact; not kept on
    SQLite, whose readers use the scores themselves."""

    tenant_id = models.BigIntegerField()
    bucket = models.DateTimeField()
    requested_model = models.CharField(max_length=200)
    variant = models.CharField(max_length=200)
    name = models.CharField(max_length=64)
    n = models.BigIntegerField(default=0)
    total = models.FloatField(default=0)
    sumsq = models.FloatField(default=0)
    positives = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "requested_model", "variant", "name", "bucket"], name="uniq_score_rollup"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.bucket:%Y-%m-%d %H} {self.requested_model} {self.name} {self.n}"


class CallRollupMinute(CallRollup):
    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "bucket", "model", "virtual_key_id", "variant"],
                name="uniq_rollup_minute",
            )
        ]


class CallRollupHour(CallRollup):
    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "bucket", "model", "virtual_key_id", "variant"],
                name="uniq_rollup_hour",
            )
        ]


class CallRollupDay(CallRollup):
    """Whole UTC days, for ranges longer than a week (a month reads 30 buckets instead of 720)."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "bucket", "model", "virtual_key_id", "variant"],
                name="uniq_rollup_day",
            )
        ]


class TagRollupHour(models.Model):
    """Calls per hour and tag (a call with two tags counts in both). Kept apart from CallRollup so that
    the tag list does not multiply its rows."""

    tenant_id = models.BigIntegerField()
    bucket = models.DateTimeField()
    tag = models.CharField(max_length=200)
    # The key, so that a member's view sums only their own keys' calls.
    virtual_key_id = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_picodollars = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "bucket", "tag", "virtual_key_id"],
                name="uniq_tag_rollup_hour",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.bucket:%Y-%m-%d %H:%M} {self.tag} {self.requests}"


class UserRollup(models.Model):
    """Calls per bucket, end user and key (the key so that a member's view sums only their own keys)."""

    tenant_id = models.BigIntegerField()
    bucket = models.DateTimeField()
    end_user = models.CharField(max_length=200)
    virtual_key_id = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_picodollars = models.BigIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.bucket:%Y-%m-%d %H:%M} {self.end_user} {self.requests}"


class UserRollupHour(UserRollup):
    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "bucket", "end_user", "virtual_key_id"], name="uniq_user_rollup_hour"
            )
        ]


class UserRollupDay(UserRollup):
    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "bucket", "end_user", "virtual_key_id"], name="uniq_user_rollup_day"
            )
        ]


# Stored bodies are capped so that one huge prompt cannot bloat the table; the cut is marked.
BODY_MAX_CHARS = 64 * 1024


class CallBody(models.Model):
    """The request and response body of one call, after PII redaction and size-capped.

    Written by the log writer only for tenants with `log_bodies` on, and purged with the call log
    (same tenant and `created_at`, so retention deletes both by the same range).
    """

    tenant_id = models.BigIntegerField()
    created_at = models.DateTimeField()
    request_id = models.CharField(max_length=100)
    request_body = models.TextField(blank=True)
    response_body = models.TextField(blank=True)
    truncated = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["tenant_id", "request_id"], name="callbody_tenant_request"),
            models.Index(fields=["tenant_id", "created_at"], name="callbody_tenant_created"),
        ]

    def __str__(self) -> str:
        return self.request_id


class StoredResponse(models.Model):
    """A Responses API answer kept for `GET /v1/responses/{id}` and `previous_response_id` (`store`, on
    by default). What was sent upstream is what is kept: the conversation after the data policy, the
    output as the provider gave it (pseudonyms, never the values they stand for). Written by the log
    writer with the call's row, and purged with the call log (the tenant's retention)."""

    id = models.CharField(primary_key=True, max_length=64)
    tenant_id = models.BigIntegerField()
    virtual_key_id = models.BigIntegerField(null=True)
    created_at = models.DateTimeField()
    request_id = models.CharField(max_length=100)
    previous_response_id = models.CharField(max_length=64, blank=True)
    response = models.JSONField()  # the `response` object the client was given, pseudonyms kept
    input_items = models.JSONField()  # this request's own input items, with their ids
    # The whole conversation as chat messages (earlier turns, this input, the answer), without the
    # instructions (they are not carried over), so that continuing it is one read.
    messages = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["tenant_id", "created_at"], name="storedresponse_tenant_created")]

    def __str__(self) -> str:
        return self.id


class ScoreKind(models.TextChoices):
    BOOLEAN = "boolean", "Boolean (0 or 1)"
    NUMERIC = "numeric", "Numeric (in a range)"
    CATEGORICAL = "categorical", "Categorical (one of some values)"


class ScoreDefinition(models.Model):
    """A named score a tenant's calls may get (`scores:` in the tenant YAML). `thumbs` (boolean) needs no
    definition."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="score_definitions")
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=12, choices=ScoreKind.choices)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    values = models.JSONField(default=list, blank=True)  # categorical: the allowed values (numbers)
    description = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_score_definition")]

    def __str__(self) -> str:
        return self.name


class EvaluatorKind(models.TextChoices):
    LLM = "llm", "LLM judge"
    JSON_VALID = "json_valid", "Answer is valid JSON"
    JSON_SCHEMA = "json_schema", "Answer matches a JSON schema"
    REGEX = "regex", "Answer matches a pattern"
    MAX_LENGTH = "max_length", "Answer is at most N characters"
    CONTAINS = "contains", "Answer contains a text"


class Evaluator(models.Model):
    """Scores calls automatically after they are logged (`evaluators:` in the tenant YAML;
    observability.evaluators): a rule, or an LLM judge that is one of the tenant's own models."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="evaluators")
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=12, choices=EvaluatorKind.choices)
    score = models.CharField(max_length=64)  # the score it gives (a defined one; a rule's may be implicit 0/1)
    model = models.CharField(max_length=200, blank=True)  # the judge's model
    prompt = models.TextField(blank=True)  # the judge's rubric, with {request} and {answer}
    params = models.JSONField(default=dict, blank=True)  # schema / pattern / max / value
    # Which calls: each list empty = any; `sample` the share of matching calls evaluated.
    models_filter = models.JSONField(default=list, blank=True)
    variants_filter = models.JSONField(default=list, blank=True)
    keys_filter = models.JSONField(default=list, blank=True)
    tags_filter = models.JSONField(default=list, blank=True)
    sample = models.FloatField(default=1.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_evaluator")]

    def __str__(self) -> str:
        return self.name


class JudgeKey(models.Model):
    """The virtual key a tenant's LLM-judge evaluators call the gateway with (observability.judge): one per
    tenant, made on first use and replaced if revoked. The worker sends the calls itself, so it keeps the
    secret, encrypted like provider keys."""

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey("tenants.VirtualKey", null=True, on_delete=models.SET_NULL, related_name="+")
    secret = models.TextField(blank=True)  # gateway_project.common.crypto.encrypt(the key's secret)

    def __str__(self) -> str:
        return f"judge key of tenant {self.tenant_id}"


class CallScore(models.Model):
    """One named score of one call from one source (`feedback` from a key, or an evaluator): a later score
    with the same name and source replaces the earlier one."""

    tenant_id = models.BigIntegerField()
    call_id = models.CharField(max_length=40)
    request_id = models.CharField(max_length=100)
    call_created_at = models.DateTimeField()  # the call's start: for retention, with the call log
    name = models.CharField(max_length=64)
    source = models.CharField(max_length=100)
    value = models.FloatField()
    weight = models.FloatField(default=1.0)
    comment = models.CharField(max_length=2000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    scored_by_key_id = models.BigIntegerField(null=True)
    # The scored call's dimensions, copied from its log row when the score is recorded: comparisons and
    # rollups by model, variant, key and user read the scores alone, with no join to the call log.
    requested_model = models.CharField(max_length=200, blank=True, default="")
    variant = models.CharField(max_length=200, blank=True, default="")
    virtual_key_id = models.BigIntegerField(null=True)
    end_user = models.CharField(max_length=200, blank=True, default="")
    tags = models.JSONField(default=list, blank=True)  # the call's tags (key tags and x-gateway-tags)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant_id", "call_id", "name", "source"], name="uniq_call_score")
        ]
        indexes = [
            models.Index(fields=["tenant_id", "name", "value"], name="callscore_tenant_name_value"),
            models.Index(
                fields=["tenant_id", "requested_model", "name", "call_created_at"], name="callscore_tenant_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.name}={self.value}"


class PlaygroundKey(models.Model):
    """The short-lived virtual key the console's playground sends one person's calls with, in one tenant.

    One row per (tenant, user), pointing at their current key: reused while it is valid, replaced by a
    new one when it has expired or was revoked (observability.playground). The console sends the calls
    itself, so it keeps the secret, encrypted like provider keys; the browser never sees it.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey("tenants.VirtualKey", null=True, on_delete=models.CASCADE, related_name="+")
    secret = models.TextField(blank=True)  # gateway_project.common.crypto.encrypt(key's secret)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="uniq_playground_key")]

    def __str__(self) -> str:
        return f"playground key of user {self.user_id} in tenant {self.tenant_id}"
