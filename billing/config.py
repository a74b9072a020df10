"""The money sections of the tenant YAML: prices, limits, budgets, timezone, alert_emails.

A section that is absent from the file leaves that part of the tenant as it is (so key budgets made
with `mint-key --budget` survive an `apply` of an older file); a section that is present is the
whole truth for it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from billing.models import BillingSettings, Budget, BudgetMode, BudgetPeriod, LimitScope, PriceOverride, RateLimit
from billing.plan_config import register as register_plan
from billing.selectors import budget_outage_mode
from billing.services import (
    DEFAULT_ALERTS,
    MAX_ALERT_EMAILS,
    MAX_ALERT_PERCENT,
    MAX_LIMIT,
    OUTAGE_MODES,
    billing_settings_set,
    budget_delete,
    budget_outage_mode_set,
    budget_upsert,
    key_scope_error,
    prices_set,
    rate_limit_set,
    usd_error,
    validate_scope,
)
from routing.models import ModelDeployment
from tenants.audit import Actor
from tenants.bounds import MAX_EMAIL_CHARS
from tenants.config import EXTENSIONS, ConfigError
from tenants.models import Tenant


def _decimal(value: Any, path: str, c: Any) -> Decimal:
    """An amount in USD that fits its column (billing.services.usd_error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise c.fail(f"expected a number, got {type(value).__name__}", path)
    try:
        # str() first: YAML floats like 0.15 must become Decimal("0.15"), not its binary neighbour.
        number = Decimal(str(value))
    except InvalidOperation:
        raise c.fail(f"{value!r} is not a number", path) from None
    problem = usd_error(number)
    if problem:
        raise c.fail(problem, path)
    return number


def _positive_int(value: Any, path: str, c: Any, *, maximum: int = MAX_LIMIT) -> int:
    """A whole number from 1 to `maximum` (by default what an RPM/TPM column holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise c.fail("must be a positive whole number", path)
    if value > maximum:
        raise c.fail(f"must be at most {maximum}", path)
    return value


def parse_prices(value: Any, path: str, c: Any) -> list[dict]:
    out, seen = [], set()
    for i, item in enumerate(c.sequence(value, path)):
        p = f"{path}[{i}]"
        c.mapping(item, p, {"model", "input", "output", "cached_input", "cache_write"}, {"model", "input", "output"})
        model = c.string(item["model"], f"{p}.model")
        if model in seen:
            raise c.fail(f"model {model!r} is priced twice", f"{p}.model")
        seen.add(model)
        row = {"model": model}
        for k in ("input", "output", "cached_input", "cache_write"):
            if item.get(k) is not None:
                row[k] = _decimal(item[k], f"{p}.{k}", c)
        out.append(row)
    return out


def apply_prices(tenant: Tenant, prices: list[dict] | None, *, actor: Actor) -> list[str]:
    if prices is None:
        return []
    return ["~ prices"] if prices_set(tenant, prices=prices, actor=actor) else []


def export_prices(tenant: Tenant) -> list[dict] | None:
    rows = []
    for o in PriceOverride.objects.filter(tenant=tenant).order_by("model"):
        row: dict[str, Any] = {"model": o.model, "input": float(o.input), "output": float(o.output)}
        if o.cached_input is not None:
            row["cached_input"] = float(o.cached_input)
        if o.cache_write is not None:
            row["cache_write"] = float(o.cache_write)
        rows.append(row)
    return rows or None


def parse_limits(value: Any, path: str, c: Any) -> dict:
    c.mapping(value, path, {"tenant", "deployments"}, set())
    out: dict[str, Any] = {"tenant": None, "deployments": []}
    if value.get("tenant") is not None:
        t = c.mapping(value["tenant"], f"{path}.tenant", {"rpm", "tpm"}, set())
        out["tenant"] = {
            k: _positive_int(t[k], f"{path}.tenant.{k}", c) for k in ("rpm", "tpm") if t.get(k) is not None
        }
    for i, item in enumerate(c.sequence(value.get("deployments"), f"{path}.deployments")):
        p = f"{path}.deployments[{i}]"
        c.mapping(item, p, {"model", "provider", "rpm", "tpm"}, {"model", "provider"})
        out["deployments"].append(
            {
                "model": c.string(item["model"], f"{p}.model"),
                "provider": c.string(item["provider"], f"{p}.provider"),
                **{k: _positive_int(item[k], f"{p}.{k}", c) for k in ("rpm", "tpm") if item.get(k) is not None},
            }
        )
    return out


def apply_limits(tenant: Tenant, limits: dict | None, *, actor: Actor) -> list[str]:
    if limits is None:
        return []
    changes = []
    t = limits["tenant"] or {}
    if rate_limit_set(tenant, scope=LimitScope.TENANT, rpm=t.get("rpm"), tpm=t.get("tpm"), actor=actor):
        changes.append("~ limits tenant")
    wanted = set()
    for d in limits["deployments"]:
        deps = list(ModelDeployment.objects.filter(tenant=tenant, model_name=d["model"], provider__name=d["provider"]))
        if not deps:
            raise ValidationError(
                f"limits.deployments: no deployment of model {d['model']!r} on provider {d['provider']!r}"
            )
        for dep in deps:
            wanted.add(str(dep.id))
            if rate_limit_set(
                tenant, scope=LimitScope.DEPLOYMENT, ref=str(dep.id), rpm=d.get("rpm"), tpm=d.get("tpm"), actor=actor
            ):
                changes.append(f"~ limits {d['model']}/{d['provider']}")
    for stale in RateLimit.objects.filter(tenant=tenant, scope=LimitScope.DEPLOYMENT).exclude(ref__in=wanted):
        rate_limit_set(tenant, scope=LimitScope.DEPLOYMENT, ref=stale.ref, rpm=None, tpm=None, actor=actor)
        changes.append("- limits deployment")
    return changes


def export_limits(tenant: Tenant) -> dict | None:
    out: dict[str, Any] = {}
    t = RateLimit.objects.filter(tenant=tenant, scope=LimitScope.TENANT).first()
    if t:
        out["tenant"] = {k: v for k, v in (("rpm", t.rpm), ("tpm", t.tpm)) if v}
    deps = []
    for limit in RateLimit.objects.filter(tenant=tenant, scope=LimitScope.DEPLOYMENT).order_by("id"):
        dep = ModelDeployment.objects.filter(tenant=tenant, id=int(limit.ref)).select_related("provider").first()
        if dep:
            item = {"model": dep.model_name, "provider": dep.provider.name}
            item.update({k: v for k, v in (("rpm", limit.rpm), ("tpm", limit.tpm)) if v})
            deps.append(item)
    if deps:
        out["deployments"] = deps
    return out or None


def parse_budgets(value: Any, path: str, c: Any) -> list[dict]:
    out, seen = [], set()
    for i, item in enumerate(c.sequence(value, path)):
        p = f"{path}[{i}]"
        c.mapping(item, p, {"scope", "limit_usd", "period", "mode", "alert_at"}, {"scope", "limit_usd"})
        try:
            scope = validate_scope(c.string(item["scope"], f"{p}.scope"))
        except ValidationError as exc:
            raise c.fail(exc.messages[0], f"{p}.scope") from None
        period = c.string(item.get("period") or "month", f"{p}.period")
        if period not in BudgetPeriod.values:
            raise c.fail(f"unknown period {period!r} (use day, week, month or total)", f"{p}.period")
        mode = c.string(item.get("mode") or "hard", f"{p}.mode")
        if mode not in BudgetMode.values:
            raise c.fail(f"unknown mode {mode!r} (use hard or soft)", f"{p}.mode")
        if (scope, period) in seen:
            raise c.fail(f"a {period} budget for {scope} is listed twice", p)
        seen.add((scope, period))
        alerts = DEFAULT_ALERTS
        if item.get("alert_at") is not None:
            alerts = [
                _positive_int(a, f"{p}.alert_at[{j}]", c, maximum=MAX_ALERT_PERCENT)
                for j, a in enumerate(c.sequence(item["alert_at"], f"{p}.alert_at"))
            ]
        out.append(
            {
                "scope": scope,
                "limit_usd": _decimal(item["limit_usd"], f"{p}.limit_usd", c),
                "period": period,
                "mode": mode,
                "alert_at": alerts,
                # Where the scope was written: whether its key exists is known only when applying.
                "_at": (c.loc.line(f"{p}.scope"), f"{p}.scope"),
            }
        )
    return out


def apply_budgets(tenant: Tenant, budgets: list[dict] | None, *, actor: Actor) -> list[str]:
    if budgets is None:
        return []
    changes, keep = [], set()
    for b in budgets:
        b = dict(b)
        line, path = b.pop("_at", (None, ""))
        if not Budget.objects.filter(tenant=tenant, scope=b["scope"], period=b["period"]).exists():
            problem = key_scope_error(tenant, b["scope"])
            if problem:
                raise ConfigError(problem, line=line, path=path)
        budget, changed = budget_upsert(tenant, actor=actor, **b)
        keep.add(budget.id)
        if changed:
            changes.append(f"~ budget {b['scope']}/{b['period']}")
    for stale in Budget.objects.filter(tenant=tenant).exclude(id__in=keep):
        budget_delete(tenant, budget=stale, actor=actor)
        changes.append(f"- budget {stale.scope}/{stale.period}")
    return changes


def export_budgets(tenant: Tenant) -> list[dict] | None:
    rows = [
        {"scope": b.scope, "limit_usd": float(b.limit_usd), "period": b.period, "mode": b.mode, "alert_at": b.alert_at}
        for b in Budget.objects.filter(tenant=tenant).order_by("id")
    ]
    return rows or None


def parse_timezone(value: Any, path: str, c: Any) -> str:
    name = c.string(value, path)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise c.fail(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)", path) from None
    return name


def apply_timezone(tenant: Tenant, name: str | None, *, actor: Actor) -> list[str]:
    if name is None:
        return []
    return [f"~ timezone {name}"] if billing_settings_set(tenant, timezone_name=name, actor=actor) else []


def export_timezone(tenant: Tenant) -> str | None:
    name = BillingSettings.objects.filter(tenant=tenant).values_list("timezone", flat=True).first()
    return name if name and name != "UTC" else None


def parse_outage_mode(value: Any, path: str, c: Any) -> str:
    mode = c.string(value, path)
    if mode not in OUTAGE_MODES:
        raise c.fail(f"must be one of {', '.join(OUTAGE_MODES)} (what hard budgets do while Redis is down)", path)
    return mode


def apply_outage_mode(tenant: Tenant, mode: str | None, *, actor: Actor) -> list[str]:
    # Absent from the file: the default (closed), as every other section of a complete file.
    mode = mode or "closed"
    changed = budget_outage_mode_set(tenant, mode=mode, actor=actor)
    return [f"~ hard_budgets_on_redis_outage {mode}"] if changed else []


def export_outage_mode(tenant: Tenant) -> str | None:
    mode = budget_outage_mode(tenant.id)
    return mode if mode != "closed" else None


apply_outage_mode.export = export_outage_mode  # type: ignore[attr-defined]


def parse_alert_emails(value: Any, path: str, c: Any) -> list[str]:
    out = []
    items = c.sequence(value, path)
    if len(items) > MAX_ALERT_EMAILS:
        raise c.fail(f"at most {MAX_ALERT_EMAILS} addresses (this lists {len(items)})", path)
    for i, item in enumerate(items):
        email = c.string(item, f"{path}[{i}]")
        if len(email) > MAX_EMAIL_CHARS:
            raise c.fail(f"an email address has at most {MAX_EMAIL_CHARS} characters", f"{path}[{i}]")
        try:
            validate_email(email)
        except Exception:
            raise c.fail(f"{email!r} is not an email address", f"{path}[{i}]") from None
        out.append(email)
    return out


def apply_alert_emails(tenant: Tenant, emails: list[str] | None, *, actor: Actor) -> list[str]:
    if emails is None:
        return []
    tz = BillingSettings.objects.filter(tenant=tenant).values_list("timezone", flat=True).first() or "UTC"
    return (
        ["~ alert_emails"] if billing_settings_set(tenant, timezone_name=tz, alert_emails=emails, actor=actor) else []
    )


def export_alert_emails(tenant: Tenant) -> list[str] | None:
    return BillingSettings.objects.filter(tenant=tenant).values_list("alert_emails", flat=True).first() or None


apply_prices.export = export_prices  # type: ignore[attr-defined]
apply_limits.export = export_limits  # type: ignore[attr-defined]
apply_budgets.export = export_budgets  # type: ignore[attr-defined]
apply_timezone.export = export_timezone  # type: ignore[attr-defined]
apply_alert_emails.export = export_alert_emails  # type: ignore[attr-defined]


def register() -> None:
    # Order matters: the time zone first (budgets count in it), limits after models exist.
    EXTENSIONS["timezone"] = (parse_timezone, apply_timezone)
    EXTENSIONS["alert_emails"] = (parse_alert_emails, apply_alert_emails)
    EXTENSIONS["hard_budgets_on_redis_outage"] = (parse_outage_mode, apply_outage_mode)
    EXTENSIONS["prices"] = (parse_prices, apply_prices)
    EXTENSIONS["limits"] = (parse_limits, apply_limits)
    EXTENSIONS["budgets"] = (parse_budgets, apply_budgets)
    # The plan (`billing:`, billing.plan_config): invoices count months in the time zone set above.

    register_plan()
