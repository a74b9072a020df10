"""Every database read that builds the proxy's snapshots (proxy.snapshot): a key, and a tenant with its
deployments, routes, rules, prices, limits, budgets and compiled policy steps.

Runs in a worker thread when a key or tenant is (re)loaded (proxy.configcache), never per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from billing.models import Budget, LimitScope, PriceOverride, RateLimit
from billing.selectors import budget_outage_mode, tenant_timezone
from gateway_project.common import crypto
from gateway_project.common.money import NANO, Price, find_price, shipped_prices
from gateway_project.common.netguard import UnsafeUpstreamError, check_address, literal_ip
from observability.scores import definitions_of
from proxy.providers import adapter_for
from proxy.snapshot import (
    BudgetSpec,
    CooldownSpec,
    Deployment,
    KeyEntry,
    McpServerSpec,
    RouteSpec,
    RuleSpec,
    SplitSpec,
    TenantEntry,
)
from proxy.steps.bodylog import BODY_LOG
from proxy.steps.cache import compile_cache
from proxy.steps.guardrails import guardrail_step
from proxy.steps.pii import pii_step
from routing.models import McpServer, ModelDeployment
from routing.models import ModelRoute as RouteRow
from routing.models import RouteRule as RuleRow
from tenants.models import Tenant, VirtualKey


@dataclass
class MoneyConfig:
    tz: ZoneInfo
    prices: dict[str, Price]
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None
    deployment_limits: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    budgets: list = field(default_factory=list)
    budgets_fail_open: bool = False

    def price_for(self, upstream_model: str, base_model: str = "") -> Price | None:
        """The deployment's price: its base_model's when set (a custom upstream id has no entry of its
        own), else the upstream model's. An unknown base_model is not priced as the upstream id: the
        operator named the model on purpose, so a typo shows up as "no known price" instead."""
        return find_price(base_model or upstream_model, self.prices)


def load_money_config(tenant_id: int) -> MoneyConfig:

    prices = dict(shipped_prices())
    for o in PriceOverride.objects.filter(tenant_id=tenant_id):
        prices[o.model] = Price(
            input=o.input,
            output=o.output,
            cached_input=o.cached_input,
            cache_write=o.cache_write,
            max_output=prices[o.model].max_output if o.model in prices else Price(o.input, o.output).max_output,
        )
    config = MoneyConfig(
        tz=tenant_timezone(tenant_id), prices=prices, budgets_fail_open=budget_outage_mode(tenant_id) == "open"
    )
    for limit in RateLimit.objects.filter(tenant_id=tenant_id).exclude(scope=LimitScope.KEY):
        if limit.scope == LimitScope.TENANT:
            config.tenant_rpm, config.tenant_tpm = limit.rpm, limit.tpm
        elif limit.scope == LimitScope.DEPLOYMENT and limit.ref.isdigit():
            config.deployment_limits[int(limit.ref)] = (limit.rpm, limit.tpm)
    for budget in Budget.objects.filter(tenant_id=tenant_id):
        kind, _, value = budget.scope.partition(":")
        spec = BudgetSpec(
            id=budget.id,
            scope_kind=kind,
            scope_value=value,
            limit_nanos=int(budget.limit_usd * NANO),
            period=budget.period,
            hard=budget.mode == "hard",
            alert_at=tuple(sorted(int(a) for a in budget.alert_at)),
        )
        # The period's counter is started from the ledger by admission, when it finds none
        # (proxy.admission._admit_seeding): a new period, a new budget or a Redis restart alike.
        config.budgets.append(spec)
    return config


def load_key(key_hash: str) -> KeyEntry | None:

    row = (
        VirtualKey.objects.filter(key_hash=key_hash)
        .values(
            "id",
            "tenant_id",
            "name",
            "allowed_models",
            "expires_at",
            "revoked",
            "metadata",
            "pii_policy",
            "guardrails",
            "mcp",
            "admin",
        )
        .first()
    )
    if row is None:
        return None

    limit = RateLimit.objects.filter(tenant_id=row["tenant_id"], scope=LimitScope.KEY, ref=str(row["id"])).first()
    metadata = row["metadata"] or {}
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return KeyEntry(
        key_id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        allowed_models=frozenset(row["allowed_models"] or ()),
        expires_at=row["expires_at"].timestamp() if row["expires_at"] else None,
        revoked=row["revoked"],
        metadata=metadata,
        loaded_at=time.monotonic(),
        rpm=limit.rpm if limit else None,
        tpm=limit.tpm if limit else None,
        max_parallel=limit.max_parallel if limit else None,
        tags=tuple(str(t) for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        pii_override=row["pii_policy"] is not None,
        pii_step=pii_step(row["pii_policy"]),
        guardrails_override=row["guardrails"] is not None,
        guardrail_step=guardrail_step(row["guardrails"]),
        mcp=_mcp_access(row["mcp"]),
        admin=row["admin"],
    )


def _mcp_access(value: Any) -> dict[str, frozenset[str] | None] | None:
    if not isinstance(value, dict):
        return None
    return {
        str(server): None if tools == "*" else frozenset(t for t in tools if isinstance(t, str))
        for server, tools in value.items()
        if tools == "*" or isinstance(tools, list)
    }


def mcp_server_spec(row: McpServer) -> McpServerSpec:
    """A server row as the proxy calls it: secrets decrypted into request headers, and why it cannot be
    used, if so. The console's "Test connection" builds its spec here too, so it tests what /mcp sends."""
    blocked = ""
    try:
        secrets = row.secrets()
    except crypto.DecryptionError as exc:
        secrets, blocked = {}, str(exc)
    headers = dict(secrets.get("headers") or {})
    if secrets.get("bearer"):
        headers["Authorization"] = f"Bearer {secrets['bearer']}"
    host = urlsplit(row.url).hostname or ""
    ip = literal_ip(host) if host else None
    if ip is not None:
        try:
            check_address(host, str(ip))
        except UnsafeUpstreamError as exc:
            blocked = str(exc)
    return McpServerSpec(
        id=row.id,
        name=row.name,
        url=row.url,
        transport=row.transport,
        headers=headers,
        timeout_s=float(row.timeout_s),
        rpm=row.rpm,
        blocked=blocked,
    )


def _mcp_servers(tenant_id: int) -> dict[str, McpServerSpec]:
    return {row.name: mcp_server_spec(row) for row in McpServer.objects.filter(tenant_id=tenant_id)}


def load_tenant(tenant_id: int) -> TenantEntry | None:

    tenant = (
        Tenant.objects.filter(id=tenant_id)
        .values("id", "slug", "cache_policy", "pii_policy", "guardrails", "log_bodies")
        .first()
    )
    if tenant is None:
        return None

    money = load_money_config(tenant_id)
    models: dict[str, list[Deployment]] = {}
    for d in (
        ModelDeployment.objects.filter(tenant_id=tenant_id)
        .select_related("provider")
        .order_by("model_name", "priority", "id")
    ):
        p = d.provider
        try:
            api_key = crypto.decrypt(p.api_key_encrypted)
            secrets = p.secrets()  # aws_* and the operator's headers, encrypted together
        except crypto.DecryptionError as exc:
            api_key, secrets, blocked = "", {}, str(exc)
        else:
            blocked = ""
        base_url = p.endpoint_url  # Bedrock without a base_url: its regional host
        host = urlsplit(base_url).hostname or ""
        ip = literal_ip(host) if host else None
        if ip is not None:
            try:
                check_address(host, str(ip))
            except UnsafeUpstreamError as exc:
                blocked = str(exc)
        rpm, tpm = money.deployment_limits.get(d.id, (None, None))
        dep = Deployment(
            id=d.id,
            model_name=d.model_name,
            provider_name=p.name,
            kind=p.kind,
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            upstream_model=d.upstream_model,
            blocked=blocked,
            # A custom upstream id (an Azure deployment name) is priced as the model it runs.
            price=money.price_for(d.upstream_model, d.base_model),
            rpm=rpm,
            tpm=tpm,
            weight=d.weight,
            api_version=p.api_version,
            region=p.region,
            aws_access_key_id=secrets.get("aws_access_key_id", ""),
            aws_secret_access_key=secrets.get("aws_secret_access_key", ""),
            aws_session_token=secrets.get("aws_session_token", ""),
            extra_headers=dict(secrets.get("headers") or {}),
            base_model=d.base_model,
        )
        adapter_for(dep.kind).prepare(dep)
        models.setdefault(d.model_name, []).append(dep)
    # One query each for route settings and rules, whatever the number of models.
    rows = {r.model_name: r for r in RouteRow.objects.filter(tenant_id=tenant_id)}
    routes = {name: _model_route(name, deps, rows.get(name)) for name, deps in models.items()}
    rules = tuple(_route_rule(i, r.match, r.route) for i, r in enumerate(RuleRow.objects.filter(tenant_id=tenant_id)))

    # The prompt cache is always the last step: it keys on the request as the earlier steps left it.
    cache_step = compile_cache(tenant["cache_policy"])
    tenant_pii = pii_step(tenant["pii_policy"])
    tenant_guard = guardrail_step(tenant["guardrails"])
    return TenantEntry(
        tenant_id=tenant["id"],
        slug=tenant["slug"],
        models=models,
        routes=routes,
        rules=rules,
        loaded_at=time.monotonic(),
        tz=money.tz,
        rpm=money.tenant_rpm,
        tpm=money.tenant_tpm,
        budgets=money.budgets,
        budgets_fail_open=money.budgets_fail_open,
        # PII first (every later step sees only the redacted request), the prompt cache last. Guardrails
        # next to PII: they read the request as it will be sent and the answer before it is restored.
        # Body logging sits between them and the cache: it keeps what PII redaction left.
        steps=tuple(
            step
            for step in (
                tenant_pii,
                tenant_guard,
                BODY_LOG if tenant["log_bodies"] else None,
                cache_step,
            )
            if step is not None
        ),
        mcp_servers=_mcp_servers(tenant_id),
        pii=tenant_pii,
        guardrails=tenant_guard,
        score_definitions=definitions_of(tenant_id),
    )


def _model_route(name: str, deployments: list[Deployment], row: Any) -> RouteSpec:
    if row is None:
        return RouteSpec(name=name, deployments=deployments)
    return RouteSpec(
        name=name,
        deployments=deployments,
        strategy=row.strategy,
        retries=row.retries,
        timeout_s=float(row.timeout_s),
        fallbacks=tuple(row.fallbacks or ()),
        context_window_fallbacks=tuple(row.context_window_fallbacks or ()),
        split=SplitSpec(row.split_model, float(row.split_percent), row.split_sticky) if row.split_model else None,
        cooldown=CooldownSpec(row.cooldown_failures, float(row.cooldown_window_s), float(row.cooldown_s)),
    )


def _route_rule(index: int, match: dict, route: str) -> RuleSpec:
    over = match.get("prompt_bytes_over")
    return RuleSpec(
        index=index,
        key_names=frozenset(match.get("key") or ()),
        metadata=tuple(sorted((str(k), str(v)) for k, v in (match.get("metadata") or {}).items())),
        tags=frozenset(match.get("tags") or ()),
        users=frozenset(match.get("user") or ()),
        prompt_bytes_over=int(over) if over is not None else None,
        route=route,
    )
