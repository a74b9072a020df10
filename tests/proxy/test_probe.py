"""'Test connection' only says Connected when the base URL answers like an OpenAI models endpoint."""

from __future__ import annotations

import pytest

from gateway_project import crypto
from routing.models import ProviderCredential
from routing.probe import provider_test_connection
from tests.conftest import UPSTREAM_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def provider_at(acme, upstream):
    def make(prefix: str) -> ProviderCredential:
        return ProviderCredential.objects.create(
            tenant=acme,
            name=f"probe{prefix.replace('/', '-')}",
            kind="openai-compatible",
            base_url=f"http://{upstream.host}:{upstream.port}{prefix}/v1",
            api_key_encrypted=crypto.encrypt(UPSTREAM_KEY),
        )

    return make


def test_a_models_list_is_connected(provider_at):
    result = provider_test_connection(provider_at(""))
    assert result.ok and result.models == ["gpt-4o", "gpt-4o-mini"]


def test_a_200_web_page_is_not_connected(provider_at):
    result = provider_test_connection(provider_at("/html"))
    assert not result.ok
    assert "answered 200 but not JSON: is the base URL right?" in result.message


def test_200_json_that_is_not_a_model_list_is_not_connected(provider_at):
    result = provider_test_connection(provider_at("/odd"))
    assert not result.ok and "not with a list of models" in result.message


def test_a_provider_quoting_the_key_in_its_error_does_not_show_it(provider_at):
    result = provider_test_connection(provider_at("/quote"))
    assert not result.ok
    assert "HTTP 400: Incorrect API key provided: [redacted]" in result.message
    assert UPSTREAM_KEY not in result.message
