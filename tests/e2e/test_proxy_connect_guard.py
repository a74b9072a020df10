"""The SSRF check runs again when the proxy connects, not only when a provider is saved."""

from __future__ import annotations

import httpx
import pytest

from routing.models import ProviderCredential

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_hostname_that_resolves_to_loopback_is_refused_at_connect(gateway_factory, make_tenant, mint, upstream):
    tenant = make_tenant("rebind", {"m": "gpt-4o-mini"})
    # Simulate DNS rebinding: the stored base URL names a host that now resolves to loopback. The
    # server runs without GATEWAY_PRIVATE_UPSTREAMS, so loopback is forbidden there.
    ProviderCredential.objects.filter(tenant=tenant, name="main").update(
        base_url=f"http://localhost:{upstream.port}/v1"
    )
    key = mint(tenant)
    guarded = gateway_factory(extra_env={"GATEWAY_PRIVATE_UPSTREAMS": ""})
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(f"{guarded.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert upstream.requests == []
    # The same deployment works where the operator allows loopback: the refusal above was the guard.
    allowed = gateway_factory(extra_env={"GATEWAY_PRIVATE_UPSTREAMS": "127.0.0.0/8"})
    response = httpx.post(f"{allowed.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_a_stored_private_ip_literal_is_refused_before_any_request(gateway_factory, make_tenant, mint, upstream):
    tenant = make_tenant("literal", {"m": "gpt-4o-mini"})
    gateway = gateway_factory(extra_env={"GATEWAY_PRIVATE_UPSTREAMS": ""})
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {mint(tenant)}"},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_blocked"
    assert upstream.requests == []
