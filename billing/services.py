"""Writes for money: budgets, limits, prices, settings, and budget alert emails."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from billing.display import display_usd
from billing.invoice_rules import month_last_day
from billing.invoicing.services import invoice_finalize, local_today
from billing.models import (
    ALERT_REFUSED,
    BillingSettings,
    Budget,
    BudgetAlert,
    Invoice,
    InvoiceStatus,
    LimitScope,
    PriceOverride,
    RateLimit,
)
from billing.periods import period_start
from billing.selectors import tenant_timezone, top_spenders
from gateway_project.common.money import NANO
from tenants.audit import Actor, audit
from tenants.bounds import MAX_EMAIL_CHARS, MAX_NAME_CHARS, MAX_TAG_CHARS, check_text
from tenants.changes import record_change
from tenants.models import Membership, Role, Tenant, VirtualKey

DEFAULT_ALERTS = [50, 80, 100]

# RPM, TPM and parallel requests are PositiveIntegerField: a 32-bit column on PostgreSQL. Checked
# everywhere (SQLite would store more), so a file that applies on a laptop applies in production.
# 2.1 billion tokens per minute is far above any provider's quota, so 64-bit columns would buy nothing.
MAX_LIMIT = 2_147_483_647
# Budgets and prices are DecimalField(max_digits=18, decimal_places=6).
USD_DECIMAL_PLACES = 6
MAX_USD = Decimal("999999999999.999999")
MAX_ALERT_PERCENT = 1000


def usd_error(value: Decimal) -> str | None:
    """Why `value` cannot be stored as a budget or price in USD, or None when it can."""
    if not value.is_finite() or value < 0:
        return "must be zero or more"
    if value.as_tuple().exponent < -USD_DECIMAL_PLACES:  # type: ignore[operator]
        return f"at most {USD_DECIMAL_PLACES} decimal places"
    if value > MAX_USD:
        return f"must be at most {MAX_USD.normalize():f} USD"
    return None


def limit_error(value: object) -> str | None:
    """Why `value` cannot be stored as an RPM, TPM or parallel-requests limit, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a positive whole number"
    if value > MAX_LIMIT:
        return f"must be at most {MAX_LIMIT}"
    return None


# What a budget scope may name after its kind: a key name, an end-user id (the call log keeps 200
# characters of it) or a tag (the proxy keeps 100 characters of each; a longer one never matches).
SCOPE_VALUE_CHARS = {"key": MAX_NAME_CHARS, "user": MAX_NAME_CHARS, "tag": MAX_TAG_CHARS}
# Addresses every budget alert goes to, besides the owners and admins.
MAX_ALERT_EMAILS = 20


def validate_scope(scope: str) -> str:
    scope = scope.strip()
    kind, sep, value = scope.partition(":")
    if sep and kind in SCOPE_VALUE_CHARS and value.strip():
        check_text(value, "scope", max_chars=SCOPE_VALUE_CHARS[kind], what=f"budget's {kind}")
    if scope == "tenant" or (sep and kind in SCOPE_VALUE_CHARS and value.strip()):
        return scope
    raise ValidationError({"scope": f"Unknown budget scope {scope!r}: use tenant, key:NAME, user:ID or tag:TAG."})


def key_scope_error(tenant: Tenant, scope: str) -> str | None:
    """For a `key:NAME` budget scope, why it names no key of the tenant; None when it does (or is no key scope)."""
    kind, _sep, name = scope.partition(":")
    if kind != "key":
        return None
    # Revoked keys count: their budget still reads in the spend history, and export -> apply stays idempotent.
    if VirtualKey.objects.filter(tenant=tenant, name=name.strip()).exists():
        return None
    return f"There is no key named {name.strip()!r} in {tenant.slug}; create the key first, or fix the name."


@transaction.atomic
def budget_upsert(
    tenant: Tenant,
    *,
    scope: str,
    limit_usd: Decimal,
    period: str,
    mode: str,
    actor: Actor,
    alert_at: list[int] | None = None,
) -> tuple[Budget, bool]:
    scope = validate_scope(scope)
    alerts = sorted({int(a) for a in (alert_at if alert_at is not None else DEFAULT_ALERTS)})
    if any(a <= 0 or a > MAX_ALERT_PERCENT for a in alerts):
        raise ValidationError({"alert_at": f"Alert thresholds are percentages between 1 and {MAX_ALERT_PERCENT}."})
    problem = usd_error(Decimal(limit_usd))
    if problem:
        raise ValidationError({"limit_usd": f"The limit {problem}."})
    budget = Budget.objects.filter(tenant=tenant, scope=scope, period=period).first()
    created = budget is None
    if created:
        # A budget on a key that does not exist would never count anything. (An existing one stays
        # editable even after its key was renamed.)
        problem = key_scope_error(tenant, scope)
        if problem:
            raise ValidationError({"scope": problem})
    if budget is None:
        budget = Budget(tenant=tenant, scope=scope, period=period)
    new = {"limit_usd": Decimal(limit_usd), "mode": mode, "alert_at": alerts}
    changes = {k: [str(getattr(budget, k)), str(v)] for k, v in new.items() if created or getattr(budget, k) != v}
    if not changes:
        return budget, False
    for k, v in new.items():
        setattr(budget, k, v)
    budget.full_clean()
    budget.save(update_fields=None if created else list(new))
    audit(tenant, actor=actor, action="budget.create" if created else "budget.update", target=budget, changes=changes)
    record_change("tenant", tenant.id)
    return budget, True


@transaction.atomic
def budget_delete(tenant: Tenant, *, budget: Budget, actor: Actor) -> None:
    if budget.tenant_id != tenant.id:
        raise Budget.DoesNotExist
    audit(tenant, actor=actor, action="budget.delete", target=budget)
    budget.delete()
    record_change("tenant", tenant.id)


@transaction.atomic
def rate_limit_set(
    tenant: Tenant,
    *,
    scope: str,
    ref: str = "",
    rpm: int | None,
    tpm: int | None,
    max_parallel: int | None = None,
    actor: Actor,
) -> bool:
    """Set (or with all values None, remove) the limits of one scope. Returns whether anything changed."""
    for name, value in (("rpm", rpm), ("tpm", tpm), ("max_parallel", max_parallel)):
        problem = limit_error(value) if value is not None else None
        if problem:
            raise ValidationError({name: f"{name} {problem}."})
    if scope not in LimitScope.values:
        raise ValidationError({"scope": f"Unknown limit scope {scope!r}."})
    current = RateLimit.objects.filter(tenant=tenant, scope=scope, ref=ref).first()
    if rpm is None and tpm is None and max_parallel is None:
        if current is None:
            return False
        current.delete()
        changed = True
    else:
        if current and (current.rpm, current.tpm, current.max_parallel) == (rpm, tpm, max_parallel):
            return False
        RateLimit.objects.update_or_create(
            tenant=tenant, scope=scope, ref=ref, defaults={"rpm": rpm, "tpm": tpm, "max_parallel": max_parallel}
        )
        changed = True
    audit(
        tenant,
        actor=actor,
        action="limits.update",
        target_type="RateLimit",
        target_label=f"{scope}:{ref}" if ref else scope,
        changes={"rpm": rpm, "tpm": tpm, "max_parallel": max_parallel},
    )
    if scope == LimitScope.KEY:
        key_hash = VirtualKey.objects.filter(tenant=tenant, id=int(ref)).values_list("key_hash", flat=True).first()
        if key_hash:
            record_change("key", key_hash)
    else:
        record_change("tenant", tenant.id)
    return changed


# Negotiated prices are read into every tenant snapshot the proxy loads.
MAX_PRICE_OVERRIDES = 1000


@transaction.atomic
def prices_set(tenant: Tenant, *, prices: list[dict], actor: Actor) -> bool:
    """Make the tenant's negotiated prices exactly these (USD per million tokens)."""
    if len(prices) > MAX_PRICE_OVERRIDES:
        raise ValidationError({"prices": f"At most {MAX_PRICE_OVERRIDES} prices (this lists {len(prices)})."})
    for i, p in enumerate(prices):
        check_text(p["model"], f"prices[{i}].model", what="model name")
    want = {p["model"]: p for p in prices}
    have = {o.model: o for o in PriceOverride.objects.filter(tenant=tenant)}
    changed = False
    for model, p in want.items():
        values = {
            k: (Decimal(str(p[k])) if p.get(k) is not None else None)
            for k in ("input", "output", "cached_input", "cache_write")
        }
        for k, v in values.items():
            problem = usd_error(v) if v is not None else None
            if problem:
                raise ValidationError({k: f"{model}: the {k} price {problem}."})
        o = have.get(model)
        if o and all(getattr(o, k) == v for k, v in values.items()):
            continue
        existing = o is not None
        o = o or PriceOverride(tenant=tenant, model=model)
        for k, v in values.items():
            setattr(o, k, v)
        o.full_clean()
        o.save(update_fields=list(values) if existing else None)
        changed = True
    stale = [m for m in have if m not in want]
    if stale:
        PriceOverride.objects.filter(tenant=tenant, model__in=stale).delete()
        changed = True
    if changed:
        audit(
            tenant,
            actor=actor,
            action="prices.update",
            target_type="Prices",
            target_label=tenant.slug,
            changes={"models": sorted(want)},
        )
        record_change("tenant", tenant.id)
    return changed


def _settings_changed(tenant: Tenant, *, actor: Actor, changes: dict) -> None:
    """A change to the tenant's BillingSettings: audited, and the proxies reload the tenant."""
    audit(
        tenant,
        actor=actor,
        action="billing.settings",
        target_type="BillingSettings",
        target_label=tenant.slug,
        changes=changes,
    )
    record_change("tenant", tenant.id)


OUTAGE_MODES = ("closed", "open")


@transaction.atomic
def budget_outage_mode_set(tenant: Tenant, *, mode: str, actor: Actor) -> bool:
    """Whether hard budgets refuse calls ("closed") or let them through ("open") while Redis is down."""
    if mode not in OUTAGE_MODES:
        raise ValidationError({"hard_budgets_on_redis_outage": f"Use one of: {', '.join(OUTAGE_MODES)}."})
    obj = BillingSettings.objects.select_for_update().filter(tenant=tenant).first()
    current = obj.hard_budgets_on_redis_outage if obj is not None else "closed"
    if current == mode:
        return False  # (and no settings row is made just to hold the default)
    changes = {"hard_budgets_on_redis_outage": [current, mode]}
    if obj is None:
        BillingSettings.objects.create(tenant=tenant, hard_budgets_on_redis_outage=mode)
    else:
        obj.hard_budgets_on_redis_outage = mode
        obj.save(update_fields=["hard_budgets_on_redis_outage"])
    _settings_changed(tenant, actor=actor, changes=changes)
    return True


def _check_alert_emails(emails: list[str]) -> list[str]:
    if len(emails) > MAX_ALERT_EMAILS:
        raise ValidationError(
            {"alert_emails": f"At most {MAX_ALERT_EMAILS} alert addresses (this lists {len(emails)})."}
        )
    for i, email in enumerate(emails):
        check_text(email, f"alert_emails[{i}]", max_chars=MAX_EMAIL_CHARS, what="email address")
        try:
            validate_email(email)
        except ValidationError:
            raise ValidationError({f"alert_emails[{i}]": f"{email!r} is not an email address."}) from None
    return list(emails)


@transaction.atomic
def billing_settings_set(
    tenant: Tenant, *, timezone_name: str, actor: Actor, alert_emails: list[str] | None = None
) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            {"timezone": f"Unknown time zone {timezone_name!r} (use an IANA name like Europe/Berlin)."}
        ) from None
    if alert_emails is not None:
        alert_emails = _check_alert_emails(alert_emails)
    obj, created = BillingSettings.objects.get_or_create(tenant=tenant)
    emails = alert_emails if alert_emails is not None else obj.alert_emails
    if not created and obj.timezone == timezone_name and obj.alert_emails == emails:
        return False
    changes = {"timezone": [obj.timezone, timezone_name]}
    obj.timezone = timezone_name
    obj.alert_emails = emails
    obj.save(update_fields=["timezone", "alert_emails"])
    _settings_changed(tenant, actor=actor, changes=changes)
    return True


def alert_recipients(tenant: Tenant) -> list[str]:
    emails = list(
        Membership.objects.filter(tenant=tenant, role__in=[Role.OWNER, Role.ADMIN])
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    extra = BillingSettings.objects.filter(tenant=tenant).values_list("alert_emails", flat=True).first() or []
    return sorted(set(emails) | {e for e in extra if isinstance(e, str) and e})


def thresholds_up_to(budget_id: int, threshold: int, spent_nanos: int) -> list[int]:
    """`threshold` and every lower threshold of the budget that `spent_nanos` has crossed, ascending."""
    budget = Budget.objects.filter(id=budget_id).only("limit_usd", "alert_at").first()
    if budget is None:
        return [threshold]  # budget_alert_send notices the missing budget and sends nothing
    limit_nanos = budget.limit_usd * NANO
    crossed = {t for t in budget.alert_at if t < threshold and spent_nanos * 100 >= limit_nanos * t}
    return sorted(crossed | {threshold})


def budget_alert_send(*, budget_id: int, period_key: str, threshold: int, spent_nanos: int) -> bool:
    """Send the alert for this budget, period and threshold unless it was already sent. Exactly once."""
    return budget_alerts_send(
        budget_id=budget_id, period_key=period_key, thresholds=[threshold], spent_nanos=spent_nanos
    )


def budget_alerts_send(*, budget_id: int, period_key: str, thresholds: list[int], spent_nanos: int) -> bool:
    """One e-mail for those of `thresholds` not mailed yet this period (50 % and 80 % crossed by one call
    go out together; ALERT_REFUSED says calls are now refused). Each threshold is mailed exactly once."""
    budget = Budget.objects.select_related("tenant").filter(id=budget_id).first()
    if budget is None:
        return False
    # The rows are the claim: whoever creates them (or finds them unsent, on a retry after a mail
    # failure) sends, under row locks, and marks them sent. So an alert goes out once, and is not lost
    # if the mail server was down the first time.
    BudgetAlert.objects.bulk_create(
        [
            BudgetAlert(budget=budget, period_key=period_key, threshold=t, spent_picodollars=spent_nanos * 1000)
            for t in thresholds
        ],
        ignore_conflicts=True,
    )
    with transaction.atomic():
        alerts = list(
            BudgetAlert.objects.select_for_update()
            .filter(budget=budget, period_key=period_key, threshold__in=thresholds)
            .order_by("threshold")
        )
        unsent = [a for a in alerts if a.sent_at is None]
        if not unsent:
            return False
        spent = max(Decimal(a.spent_picodollars) for a in unsent) / 10**12
        _send_alert_email(budget, period_key, [a.threshold for a in unsent], spent)
        BudgetAlert.objects.filter(id__in=[a.id for a in unsent]).update(sent_at=timezone.now())
    return True


def _send_alert_email(budget: Budget, period_key: str, thresholds: list[int], spent: Decimal) -> None:
    """Render and send one alert (HTML and text) to the tenant's owners, admins and alert addresses: the
    highest of `thresholds` (or "calls refused"), naming the others it passed too."""
    refused = ALERT_REFUSED in thresholds
    shares = [t for t in thresholds if t != ALERT_REFUSED]
    threshold = max(shares) if shares else 0
    tenant = budget.tenant
    since = period_start(budget.period, datetime.now(UTC), tenant_timezone(tenant.id))
    keys, models = top_spenders(tenant.id, since=since)
    context = {
        "tenant": tenant,
        "budget": budget,
        "threshold": threshold,
        # The lower thresholds this e-mail also reports ("50%, 80%"): crossed by the same spend.
        "passed": ", ".join(f"{t}%" for t in (shares if refused else shares[:-1])),
        "refused": refused,
        # Rounded for reading, never to zero: a 0.0002 USD test budget must not read "0 of 0".
        "spent": display_usd(spent),
        "limit": display_usd(budget.limit_usd),
        "percent": int(spent * 100 / budget.limit_usd) if budget.limit_usd else 100,
        "period_key": period_key,
        "top_keys": [(n, display_usd(c)) for n, c in keys],
        "top_models": [(n, display_usd(c)) for n, c in models],
        "url": f"{settings.PUBLIC_URL}/t/{tenant.slug}/budgets/",
    }
    recipients = alert_recipients(tenant)
    if recipients:
        money = f"{context['spent']} of {context['limit']} USD"
        if refused:
            subject = f"[{tenant.name}] {budget.scope} budget exhausted, calls refused ({money})"
        else:
            also = f", past {' and '.join(f'{t}%' for t in shares[:-1])} too" if len(shares) > 1 else ""
            subject = f"[{tenant.name}] {budget.scope} budget at {threshold}% ({money}{also})"
        message = EmailMultiAlternatives(
            subject=subject,
            body=render_to_string("billing/email/budget_alert.txt", context),
            to=recipients,
        )
        message.attach_alternative(render_to_string("billing/email/budget_alert.html", context), "text/html")
        message.send()


# --- Finalizing one invoice from the console or the API -----------------------------------------------

# The codes of the refusals that are about the invoice's state, not the request (the API answers 409).
NOT_A_DRAFT = "not_a_draft"
NOTHING_TO_BILL = "nothing_to_bill"


def invoice_finalize_draft(
    tenant: Tenant, *, invoice: Invoice, actor: Actor, early: bool = False, now: datetime | None = None
) -> Invoice:
    """Finalize this draft now, as `gateway finalize-invoices` would (billing.invoicing.services.
    invoice_finalize: numbered, frozen, audit-logged, pushed to Stripe). A month still running closes
    only with `early` (usage after today goes on a new invoice).

    Raises ValidationError, and nothing changes, when the invoice is no longer a draft (code
    NOT_A_DRAFT: finalized, paid or void, perhaps by someone else a moment ago), when it has nothing
    to bill (NOTHING_TO_BILL), or when its month is running and `early` is not given (field "early").
    """
    if invoice.tenant_id != tenant.id:
        raise ValidationError("That invoice belongs to another tenant.")
    with transaction.atomic():
        # The lock every invoice write of the tenant takes first: a second request for this draft
        # waits here, then finds it finalized.
        Tenant.objects.select_for_update().filter(id=tenant.id).first()
        current = Invoice.objects.filter(id=invoice.id).first()
        if current is None or current.status != InvoiceStatus.DRAFT:
            state = current.get_status_display().lower() if current else "gone"
            label = current.label if current else invoice.label
            raise ValidationError(f"{label} is {state}: only a draft can be finalized.", code=NOT_A_DRAFT)
        if not early and local_today(tenant, now) <= month_last_day(current.month):
            raise ValidationError(
                {
                    "early": f"{current.month:%Y-%m} has not ended yet: finalize it early to close it today "
                    "(usage after today goes on a new invoice)."
                }
            )
        done = invoice_finalize(tenant, month=current.month, actor=actor, early=early, now=now)
        if done is None:
            # invoice_finalize removed the empty draft; raising rolls that back, so the month closes as usual.
            raise ValidationError(
                f"The {current.month:%Y-%m} invoice has nothing to bill: there is nothing to finalize.",
                code=NOTHING_TO_BILL,
            )
    return done
