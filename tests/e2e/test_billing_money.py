"""Costs, ledger, limits and budgets through real gateway processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import io
import json
from decimal import Decimal

import httpx
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum

from billing.models import SpendLedger
from gateway_project.common.money import from_pico
from observability.models import CallLog
from tenants.config import apply_config
from tests.helpers import UPSTREAM_KEY, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def money_yaml(base_url: str, extra: str = "") -> str:
    return f"""\
tenant: acme
name: Acme Corp
timezone: Europe/Berlin
providers:
  - name: main
    kind: openai-compatible
    base_url: {base_url}
    api_key: env:FAKE_UPSTREAM_KEY
models:
  - name: gpt-4o-mini
    deployments:
      - provider: main
        model: gpt-4o-mini
  - name: slow
    deployments:
      - provider: main
        model: slow-stream
prices:
  - model: gpt-4o-mini
    input: 1000
    output: 2000
  - model: slow-stream
    input: 1000
    output: 2000
{extra}"""


@pytest.fixture
def acme_money(upstream, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)

    def make(extra: str = ""):
        tenant, _ = apply_config(money_yaml(upstream.base_url, extra))
        return tenant

    return make


BODY = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "count to three"}]}


def post(url: str, key: str, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=body or BODY, headers={"Authorization": f"Bearer {key}", **(headers or {})}
    )


def test_each_call_log_carries_its_exact_cost_and_the_ledger_agrees(gateway, acme_money, mint):
    tenant = acme_money()
    key = mint(tenant, name="billing-app")
    response = post(gateway.url, key, headers={"x-gateway-tags": "team-a,exp-1"})
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert wait_for(lambda: CallLog.objects.filter(cost_picodollars__isnull=False).count() == 1)
    log = CallLog.objects.get()
    # 1000 and 2000 USD per million tokens: exactly 0.001 and 0.002 USD a token.
    expected = Decimal(usage["prompt_tokens"]) * Decimal("0.001") + Decimal(usage["completion_tokens"]) * Decimal(
        "0.002"
    )
    assert log.cost_usd == expected
    assert log.cost_estimated is False
    assert log.tags == ["team-a", "exp-1"]
    out = io.StringIO()
    call_command("gateway", "spend", "--tenant", "acme", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "total_usd": str(expected.normalize()),
        "by_key": {"billing-app": str(expected.normalize())},
        "by_model": {"gpt-4o-mini": str(expected.normalize())},
    }
    call_command("gateway", "reconcile", stdout=io.StringIO())


def test_streamed_calls_are_costed_from_the_upstream_usage(gateway, acme_money, mint, upstream):
    tenant = acme_money()
    key = mint(tenant)
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.status_code == 200
        list(response.iter_lines())
    assert wait_for(lambda: CallLog.objects.count() == 1)
    log = CallLog.objects.get()
    assert log.stream and not log.cost_estimated
    assert log.completion_tokens == 6
    assert log.cost_usd == Decimal(log.prompt_tokens) * Decimal("0.001") + 6 * Decimal("0.002")


def test_a_stream_cut_short_is_charged_for_what_was_generated_and_marked_estimated(gateway, acme_money, mint, upstream):
    import socket

    tenant = acme_money()
    key = mint(tenant)
    body = b'{"model": "slow", "stream": true, "messages": [{"role": "user", "content": "go"}]}'
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data: ") < 6:
            received += sock.recv(65536)
    assert wait_for(lambda: CallLog.objects.filter(client_disconnected=True).exists())
    log = CallLog.objects.get()
    assert log.cost_estimated is True
    assert log.cost_usd > 0


def test_hard_budget_holds_under_200_concurrent_requests_over_two_processes(gateway_factory, acme_money, mint):
    limit = Decimal("0.5")
    tenant = acme_money(f"budgets:\n  - scope: tenant\n    limit_usd: {limit}\n    period: month\n    mode: hard\n")
    first, second = gateway_factory(), gateway_factory()
    key = mint(tenant)

    async def fire() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=30) as client:

            async def one(i: int) -> int:
                url = (first if i % 2 else second).url
                r = await client.post(
                    f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
                )
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(200)))

    statuses = asyncio.run(fire())
    assert set(statuses) <= {200, 429}
    admitted = statuses.count(200)
    assert 0 < admitted < 200
    assert wait_for(lambda: CallLog.objects.count() == 200, timeout=10)
    spent = from_pico(CallLog.objects.aggregate(s=Sum("cost_picodollars"))["s"])
    assert 0 < spent <= limit
    refused = CallLog.objects.filter(status_code=429).first()
    assert refused.error_type == "budget_exceeded"
    # Everything reserved was settled or released: no reservation leaks.
    r = redis.Redis.from_url(settings.REDIS_URL)
    assert wait_for(lambda: all(int(r.hget(k, "_total") or 0) == 0 for k in r.scan_iter("gw:b:*:res")), timeout=5)
    call_command("gateway", "reconcile", "--tenant", "acme", stdout=io.StringIO())
    assert (
        SpendLedger.objects.aggregate(s=Sum("cost_picodollars"))["s"]
        == CallLog.objects.aggregate(s=Sum("cost_picodollars"))["s"]
    )


def test_an_rpm_limit_holds_to_the_request_across_two_processes(gateway_factory, acme_money, mint):
    tenant = acme_money("limits:\n  tenant: {rpm: 7}\n")
    first, second = gateway_factory(), gateway_factory()
    key = mint(tenant)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{(first if i % 2 else second).url}/v1/chat/completions",
                        json=BODY,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for i in range(30)
                )
            )

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses].count(200) == 7
    denied = next(r for r in responses if r.status_code == 429)
    assert denied.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(denied.headers["retry-after"]) >= 1
    assert denied.headers["x-ratelimit-limit-requests"] == "7"
    assert denied.headers["x-ratelimit-remaining-requests"] == "0"
    ok = next(r for r in responses if r.status_code == 200)
    for name in ("limit", "remaining", "reset"):
        assert f"x-ratelimit-{name}-requests" in ok.headers


def test_key_limits_from_mint_key_apply_rpm_tpm_and_parallel(gateway, acme_money, upstream):
    acme_money()
    out = io.StringIO()
    call_command(
        "gateway",
        "mint-key",
        "--tenant",
        "acme",
        "--name",
        "tight",
        "--rpm",
        "100",
        "--tpm",
        "100000",
        "--max-parallel",
        "1",
        stdout=out,
    )
    key = out.getvalue().strip()
    ok = post(gateway.url, key)
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 100000

    async def two_slow_streams() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "x"}]}

            async def one(delay: float) -> int:
                await asyncio.sleep(delay)
                async with client.stream(
                    "POST", f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                ) as r:
                    if r.status_code == 200:
                        async for _ in r.aiter_raw():
                            # Hold the stream open while the second request arrives, then hang up.
                            await asyncio.sleep(0.6)
                            break
                    return r.status_code

            return await asyncio.gather(one(0), one(0.3))

    assert sorted(asyncio.run(two_slow_streams())) == [200, 429]
    # The slot is freed when the first stream ends (here: when we hung up), so the key works again.
    assert wait_for(lambda: post(gateway.url, key).status_code == 200, timeout=3)


def test_reconcile_fails_on_any_difference(gateway, acme_money, mint):
    tenant = acme_money()
    assert post(gateway.url, mint(tenant)).status_code == 200
    assert wait_for(lambda: SpendLedger.objects.exists())
    SpendLedger.objects.update(cost_picodollars=1)
    with pytest.raises(CommandError, match="difference"):
        call_command("gateway", "reconcile", stdout=io.StringIO(), stderr=io.StringIO())
