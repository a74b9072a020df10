"""/api/docs/ documents the /v1 gateway API as well as the management API."""

from __future__ import annotations

import json

import pytest
from django.urls import get_resolver

from gateway_project.openapi_docs import PATHS, TAG

pytestmark = pytest.mark.usefixtures("console_defaults")


def _schema(client) -> dict:
    response = client.get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_schema_documents_the_gateway_endpoints(world, client):
    schema = _schema(client)
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["tags"] == [TAG]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/GatewayChatRequest")
    assert {"400", "401", "404", "413", "429", "502", "503", "504"} <= set(chat["responses"])
    assert "Retry-After" in chat["responses"]["429"]["headers"]
    assert "x-ratelimit-remaining-requests" in chat["responses"]["429"]["headers"]
    assert {"x-request-id", "x-gateway-model"} <= set(chat["responses"]["200"]["headers"])
    assert {"/v1/embeddings", "/v1/models", "/v1/models/{model}"} <= set(schema["paths"])
    assert "gatewayKey" in schema["components"]["securitySchemes"]
    assert "/api/v1/keys/" in schema["paths"]  # the management API is still there


def test_every_route_the_proxy_serves_is_documented():
    served = {
        "/"
        + str(p.pattern)
        .replace("<path:model>", "{model}")
        .replace("<str:response_id>", "{response_id}")
        .replace("<str:server>", "{server}")
        for p in get_resolver("proxy.urls").url_patterns
        if not str(p.pattern).startswith("^")  # the catch-all that answers 404
    }
    assert served == set(PATHS)
