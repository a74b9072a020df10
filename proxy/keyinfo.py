"""`GET /v1/gateway/key`: what a virtual key may do and has spent, asked with the key itself.

Self-service for the key's holder (no management token): its name, the models it may call, its rate
limits and every budget that applies to it, with this period's spend and what remains. Served from the
proxy's cached key and tenant (proxy.configcache) and the budget counters the limiter keeps (proxy.limits);
no database query, except that a budget counter nobody has used yet is started from the ledger once,
exactly as admission does (proxy.admission).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

from billing.periods import period_key
from gateway_project.common.money import NANO
from proxy.admission import budget_counter_key, seed_budget_counter
from proxy.errors import ProxyError, internal_error
from proxy.inbound import openai as inbound
from proxy.lifecycle import ensure_background
from proxy.limits import LocalLimiter, limiter
from proxy.snapshot import BudgetSpec, KeyEntry, TenantEntry

logger = logging.getLogger("gateway.proxy")


def _usd(nanos: int) -> str:
    return str((Decimal(nanos) / NANO).normalize() if nanos else Decimal(0))


def _applies(budget: BudgetSpec, key: KeyEntry) -> bool:
    """Budgets this key's calls count against whatever the request says (user budgets depend on it)."""
    kind = budget.scope_kind
    if kind == "tenant":
        return True
    if kind == "key":
        return budget.scope_value == key.name
    if kind == "tag":
        return budget.scope_value in key.tags
    return False


async def _spent(counter: str) -> int | None:
    backend = limiter()
    if isinstance(backend, LocalLimiter):
        return backend.spent.get(counter)
    raw = await backend.get(counter)
    return None if raw is None else int(raw)


async def _budget(budget: BudgetSpec, tenant: TenantEntry, now: datetime) -> dict[str, Any]:
    tz = tenant.tz or UTC
    period = period_key(budget.period, now, tz)
    counter = budget_counter_key(budget.id, period)
    spent = await _spent(counter)
    if spent is None:
        # Nobody has used this period's counter yet (or Redis restarted): start it from the ledger, once.
        await seed_budget_counter(budget.id, counter, tz, now)
        spent = await _spent(counter) or 0
    return {
        "scope": budget.scope,
        "period": budget.period,
        "period_key": period,
        "hard": budget.hard,
        "limit_usd": _usd(budget.limit_nanos),
        "spent_usd": _usd(spent),
        "remaining_usd": _usd(max(budget.limit_nanos - spent, 0)),
    }


async def describe(key: KeyEntry, tenant: TenantEntry, now: datetime) -> dict[str, Any]:
    specs = [b for b in tenant.budgets if _applies(b, key)]
    # Concurrent reads share the limiter's pipelined connection: one round trip for every budget.
    budgets = list(await asyncio.gather(*(_budget(b, tenant, now) for b in specs)))
    own = next((shown for spec, shown in zip(specs, budgets, strict=True) if spec.scope_kind == "key"), None)
    return {
        "object": "gateway.key",
        "name": key.name,
        "tenant": tenant.slug,
        "models": sorted(name for name in tenant.routes if key.may_use(name)),
        "expires_at": (
            datetime.fromtimestamp(key.expires_at, UTC).isoformat().replace("+00:00", "Z") if key.expires_at else None
        ),
        "metadata": key.metadata if isinstance(key.metadata, dict) else {},
        "limits": {
            "rpm": key.rpm,
            "tpm": key.tpm,
            "max_parallel": key.max_parallel,
            "tenant_rpm": tenant.rpm,
            "tenant_tpm": tenant.tpm,
        },
        # The key's own budget period, when it has one; every applicable budget is listed below.
        "spend": {"period": own["period"], "period_key": own["period_key"], "usd": own["spent_usd"]} if own else None,
        "budgets": budgets,
    }


async def key_info(request: HttpRequest) -> HttpResponse:
    ensure_background()
    started = time.perf_counter()
    request_id = inbound.request_id(request)
    try:
        if request.method != "GET":
            raise ProxyError(405, f"Method {request.method} is not allowed on /v1/gateway/key; use GET.")
        key = await inbound.authenticate(request)
        tenant = await inbound.tenant_of(key)
        response = HttpResponse(
            orjson.dumps(await describe(key, tenant, datetime.now(UTC))), content_type="application/json"
        )
    except ProxyError as exc:
        response = exc.response()
    except Exception:
        logger.exception("describing a key failed")
        response = internal_error().response()
    response["x-request-id"] = request_id
    response["x-gateway-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
    return response
