"""Ledger, call-log and invoice rows for billing tests, and the people invoices need."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from billing.models import SpendLedger
from billing.periods import period_start
from gateway_project.common.money import to_pico
from tenants.models import Tenant

NOV = date(2026, 11, 1)
DEC_2 = datetime(2026, 12, 2, 12, tzinfo=UTC)  # November is over everywhere


def record(
    tenant, key, *, cost: int | None, model: str = "gpt-4o-mini", user: str = "", tags=(), day=date(2026, 11, 25)
):
    return {
        "created_at": datetime(2026, 11, 25, 12, tzinfo=UTC),
        "tenant_id": tenant.id,
        "virtual_key_id": key.id,
        "request_id": "r",
        "endpoint": "chat/completions",
        "requested_model": model,
        "deployment_id": None,
        "provider": "main",
        "upstream_model": model,
        "stream": False,
        "status_code": 200,
        "latency_ms": 1.0,
        "ttfb_ms": 1.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "error_type": "",
        "error_message": "",
        "end_user": user,
        "client_disconnected": False,
        "attempts": [],
        "cost_picodollars": cost,
        "cost_estimated": False,
        "tags": list(tags),
        "day": day,
    }


@dataclass
class People:
    acme: Tenant
    globex: Tenant
    alice: object  # owner of acme
    erin: object  # member of acme
    bob: object  # owner of globex


def add_ledger(tenant, day: date, model: str, pico: int, *, key=None, prompt: int = 100, completion: int = 50) -> None:
    """One ledger row, or more spend on an existing one (as billing.ledger's upsert does)."""
    row, _ = SpendLedger.objects.get_or_create(
        tenant=tenant, day=day, virtual_key_id=key, end_user="", model=model, defaults={"cost_picodollars": 0}
    )
    row.cost_picodollars += pico
    row.requests += 1
    row.prompt_tokens += prompt
    row.completion_tokens += completion
    row.save()


def synthetic_month(tenant, month: date = NOV, seed: int = 13) -> int:
    """30 days x 3 models x 2 keys of odd picodollar costs; returns the exact total."""
    rng = random.Random(seed)
    rows = []
    for d in range(1, 31):
        for model in ("gpt-4o", "gpt-4o-mini", "claude-sonnet"):
            for key in (None, 7):
                pico = rng.randrange(1, 5 * 10**9) * 1001  # fractions of a cent that only add up exactly
                rows.append(
                    SpendLedger(
                        tenant=tenant,
                        day=month.replace(day=d),
                        virtual_key_id=key,
                        model=model,
                        cost_picodollars=pico,
                        requests=3,
                        prompt_tokens=300,
                        completion_tokens=120,
                    )
                )
    SpendLedger.objects.bulk_create(rows)
    return sum(r.cost_picodollars for r in rows)


def _today():
    return period_start("day", datetime.now(UTC), UTC)


def spend(tenant, usd: str, *, key=None, model: str = "gpt-4o-mini", day=None) -> None:
    """A ledger row, as the proxy writes them after a call."""
    SpendLedger.objects.create(
        tenant=tenant,
        day=day or _today(),
        virtual_key_id=key.id if key else None,
        model=model,
        cost_picodollars=to_pico(Decimal(usd)),
        requests=1,
    )
