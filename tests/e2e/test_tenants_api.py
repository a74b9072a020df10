"""The management REST API through the real server: a key made over HTTP works, then is refused once revoked."""

from __future__ import annotations

import httpx
import pytest
from django.urls import reverse

from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("console_defaults")


def test_a_key_created_by_api_works_and_is_refused_within_a_second_of_revocation(world, gateway):
    headers = {"Authorization": f"Bearer {world.objects['token_secret']}"}
    created = httpx.post(
        f"{gateway.url}/api/v1/keys/", json={"name": "e2e", "models": ["gpt-4o-mini"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]

    def chat() -> int:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        return httpx.post(
            f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
        ).status_code

    assert chat() == 200
    revoked = httpx.post(f"{gateway.url}/api/v1/keys/{created.json()['id']}/revoke/", headers=headers)
    assert revoked.status_code == 200
    assert wait_for(lambda: chat() == 401, timeout=1.0)


def test_management_api_over_http_is_csrf_free_and_tenant_scoped(world, gateway):
    other = httpx.get(
        f"{gateway.url}/api/v1/keys/{world.objects['key'].id}/",
        headers={"Authorization": f"Bearer {world.objects['g_token_secret']}"},
    )
    assert other.status_code == 404
    assert reverse("api-keys") == "/api/v1/keys/"
