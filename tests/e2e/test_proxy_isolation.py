"""Tenant isolation on the proxy: Bob's key never reaches Alice's deployments, nor the other way."""

from __future__ import annotations

import httpx
import pytest

from observability.models import CallLog
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def chat(gateway, key: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_bob_cannot_use_or_see_alice_models(gateway, acme, globex, alice, bob, mint, upstream):
    bob_key = mint(globex, name="bob-app")
    response = chat(gateway, bob_key, "slow")  # an acme-only model
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    models = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {bob_key}"}).json()
    assert sorted(m["id"] for m in models["data"]) == ["globex-secret-model", "gpt-4o-mini"]
    assert upstream.requests == []


def test_the_same_model_name_routes_to_each_tenants_own_deployment(gateway, acme, globex, mint, upstream):
    alice_key, bob_key = mint(acme), mint(globex)
    assert chat(gateway, alice_key, "globex-secret-model").status_code == 404
    assert chat(gateway, bob_key, "gpt-4o-mini").status_code == 200
    response = chat(gateway, alice_key, "gpt-4o-mini")
    assert response.status_code == 200
    assert wait_for(lambda: CallLog.objects.count() == 3)
    by_tenant = dict(CallLog.objects.filter(status_code=200).values_list("tenant__slug", "deployment__tenant__slug"))
    assert by_tenant == {"acme": "acme", "globex": "globex"}


def test_a_key_limited_to_some_models_gets_404_for_the_others(gateway, acme, mint):
    key = mint(acme, models=["local"])
    assert chat(gateway, key, "local").status_code == 200
    response = chat(gateway, key, "gpt-4o-mini")
    assert response.status_code == 404
    # The message is the same as for a model that does not exist: nothing is revealed.
    assert response.json()["error"]["message"] == chat(gateway, key, "nope").json()["error"]["message"].replace(
        "nope", "gpt-4o-mini"
    )
    listed = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert [m["id"] for m in listed["data"]] == ["local"]
