"""What hard budgets do while Redis is unreachable, chosen per tenant: refuse the calls they cover
(closed, the default) or let them through (open). YAML, the console's budgets page, and admission
against a Redis that does not answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from billing.models import BillingSettings, Budget
from billing.selectors import budget_outage_mode
from proxy import admission, limits
from proxy.errors import ProxyError
from proxy.limits import RedisLimiter
from proxy.loader import load_key, load_tenant
from tenants.config import ConfigError, apply_config, export_config
from tenants.models import AuditLog, hash_secret
from tests.helpers import free_port

YAML = """
tenant: acme
name: Acme Corp
providers:
  - {name: mock, kind: mock}
models:
  - name: local
    deployments: [{provider: mock, model: mock-chat}]
budgets:
  - {scope: tenant, limit_usd: 10, period: month, mode: hard}
"""


@pytest.mark.django_db
def test_the_yaml_sets_it_exports_it_and_a_file_without_it_means_closed():
    tenant, _changes = apply_config(YAML + "hard_budgets_on_redis_outage: open\n")
    assert budget_outage_mode(tenant.id) == "open"
    assert "hard_budgets_on_redis_outage: open" in export_config(tenant)
    apply_config(YAML)
    assert budget_outage_mode(tenant.id) == "closed"
    assert "hard_budgets_on_redis_outage" not in export_config(tenant)
    with pytest.raises(ConfigError, match="hard_budgets_on_redis_outage"):
        apply_config(YAML + "hard_budgets_on_redis_outage: maybe\n")


@pytest.mark.django_db
def test_alice_switches_it_on_the_budgets_page_and_charlie_cannot(world, client_as):
    url = reverse("budget-outage-mode", kwargs={"slug": "acme"})
    page = client_as(world.alice).get(reverse("budgets", kwargs={"slug": "acme"})).content.decode()
    assert "refuse the calls they cover" in page and "Let calls through instead" in page
    assert client_as(world.charlie).post(url, {"mode": "open"}).status_code == 403
    assert client_as(world.bob).post(url, {"mode": "open"}).status_code == 404
    assert budget_outage_mode(world.acme.id) == "closed"
    response = client_as(world.alice).post(url, {"mode": "open"})
    assert response.status_code == 302
    assert BillingSettings.objects.get(tenant=world.acme).hard_budgets_on_redis_outage == "open"
    assert AuditLog.objects.filter(tenant=world.acme, action="billing.settings", actor=world.alice).exists()
    page = client_as(world.charlie).get(reverse("budgets", kwargs={"slug": "acme"})).content.decode()
    assert "let calls through" in page and "instead" not in page  # Charlie reads, cannot switch


def _admit_with_redis_down(tenant_id: int, key_hash: str, monkeypatch):
    dead = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setattr(admission, "limiter", lambda: dead)
    monkeypatch.setattr(limits, "_limiter", dead)
    tenant, key = load_tenant(tenant_id), load_key(key_hash)
    deployment = tenant.routes["local"].deployments[0]
    return asyncio.run(
        admission.admit(
            key=key,
            tenant=tenant,
            deployment=deployment,
            payload={"model": "local", "messages": []},
            body=b"{}",
            endpoint="chat/completions",
            user="",
            tags=[],
            prompt_estimate=1,
            now=datetime.now(UTC),
        )
    )


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_hard_budget_with_redis_down_refuses_or_lets_through_as_chosen(mode, mint, monkeypatch):
    tenant, _ = apply_config(YAML + f"hard_budgets_on_redis_outage: {mode}\n")
    assert Budget.objects.filter(tenant=tenant, mode="hard").exists()
    secret = mint(tenant)
    if mode == "closed":
        with pytest.raises(ProxyError) as refused:
            _admit_with_redis_down(tenant.id, hash_secret(secret), monkeypatch)
        assert (refused.value.status, refused.value.code) == (503, "budget_unavailable")
    else:
        reservation, headers = _admit_with_redis_down(tenant.id, hash_secret(secret), monkeypatch)
        assert reservation is None and headers == {}
