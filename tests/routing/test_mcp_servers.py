"""The tenant's MCP servers in YAML (`mcp_servers:`) and a key's MCP access: refused with the line and
field, secrets encrypted and exported only as env: names, export applies back unchanged; the key
field normalized the same way from the API, the CLI and the services."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from routing.models import McpServer
from tenants.config import ConfigError, apply_config, export_config
from tenants.models import AuditLog, VirtualKey
from tenants.services import mcp_access_clean

pytestmark = pytest.mark.django_db

HOOLI = """
tenant: hooli
mcp_servers:
  - {name: github, url: 'https://mcp.github.example/mcp', bearer: env:GITHUB_MCP_TOKEN, timeout_s: 12, rpm: 600}
  - name: docs
    url: https://docs.example/sse
    transport: sse
    headers: {X-Team: env:DOCS_TEAM}
"""


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("GITHUB_MCP_TOKEN", "ghp-secret-token-1234")
    monkeypatch.setenv("DOCS_TEAM", "hooli-platform")


def test_gavin_applies_two_servers_and_the_export_applies_back_unchanged(secrets):
    tenant, changes = apply_config(HOOLI)
    assert changes == ["+ tenant hooli", "+ mcp server github", "+ mcp server docs"]
    github = McpServer.objects.get(tenant=tenant, name="github")
    assert github.timeout_s == 12.0 and github.rpm == 600 and github.transport == "streamable_http"
    assert github.secrets() == {"bearer": "ghp-secret-token-1234"}
    assert "ghp-secret-token-1234" not in github.secrets_encrypted
    docs = McpServer.objects.get(tenant=tenant, name="docs")
    assert docs.header_names == ["X-Team"] and docs.secrets()["headers"] == {"X-Team": "hooli-platform"}

    exported = export_config(tenant)
    assert "ghp-secret-token-1234" not in exported and "hooli-platform" not in exported
    assert "bearer: env:GITHUB_MCP_TOKEN" in exported and "X-Team: env:DOCS_TEAM" in exported
    _tenant, again = apply_config(exported)
    assert again == []
    assert AuditLog.objects.filter(action="mcp_server.create").count() == 2


def test_a_server_left_out_of_the_file_is_removed(secrets):
    apply_config(HOOLI)
    _tenant, changes = apply_config(
        "tenant: hooli\nmcp_servers:\n  - {name: docs, url: 'https://docs.example/sse', transport: sse}\n"
    )
    assert "- mcp server github" in changes and "~ mcp server docs" in changes
    assert list(McpServer.objects.values_list("name", flat=True)) == ["docs"]


@pytest.mark.parametrize(
    ("server", "where", "says"),
    [
        ("{name: Git Hub, url: 'https://x.example/mcp'}", "mcp_servers[0].name", "not a server name"),
        ("{name: git__hub, url: 'https://x.example/mcp'}", "mcp_servers[0].name", "must not contain '__'"),
        (
            "{name: github, url: 'https://x.example/mcp', transport: websocket}",
            "mcp_servers[0].transport",
            "transport is one of",
        ),
        (
            "{name: github, url: 'https://x.example/mcp', bearer: env:NOT_SET_ANYWHERE}",
            "mcp_servers[0].bearer",
            "is not set",
        ),
        ("{name: github, url: 'https://x.example/mcp', timeout_s: 0}", "mcp_servers[0].timeout_s", "between 0.1"),
        ("{name: github, url: 'https://x.example/mcp', rpm: -3}", "mcp_servers[0].rpm", "whole number"),
        ("{name: github, url: 'https://x.example/mcp', token: abc}", "mcp_servers[0].token", "unknown field"),
    ],
)
def test_bad_servers_are_refused_with_the_field_and_nothing_is_written(server, where, says):
    with pytest.raises(ConfigError) as refused:
        apply_config(f"tenant: hooli\nmcp_servers:\n  - {server}\n")
    assert where in str(refused.value) and says in str(refused.value)
    assert not McpServer.objects.exists()


def test_a_server_on_a_metadata_address_is_refused_by_the_ssrf_guard():
    with pytest.raises(ConfigError) as refused:
        apply_config("tenant: hooli\nmcp_servers:\n  - {name: meta, url: 'http://169.254.169.254/mcp'}\n")
    assert "url" in str(refused.value)
    assert not McpServer.objects.exists()


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (
            {"github": ["search_issues", "get_issue", "search_issues"], "docs": "*"},
            {"github": ["get_issue", "search_issues"], "docs": "*"},
        ),
        (["github/search_issues", "docs/*", "docs/anything"], {"github": ["search_issues"], "docs": "*"}),
        ({"github": ["github/get_issue"]}, {"github": ["get_issue"]}),
        ({"github": ["*"]}, {"github": "*"}),
        ({"github": []}, {"github": []}),
        (None, None),
    ],
)
def test_a_keys_mcp_access_is_normalized(given, stored):
    assert mcp_access_clean(given) == stored


@pytest.mark.parametrize(
    "given",
    [{"GitHub": "*"}, {"github": "all"}, {"github": [3]}, ["github"], "github/*", {"github": ["bad tool name"]}],
)
def test_a_malformed_mcp_access_is_refused(given):
    with pytest.raises(ValidationError) as refused:
        mcp_access_clean(given)
    assert "mcp" in refused.value.message_dict


def test_mint_key_takes_mcp_access_as_json(secrets):
    apply_config(HOOLI)
    out = StringIO()
    call_command(
        "gateway",
        "mint-key",
        "--tenant",
        "hooli",
        "--name",
        "gavin-agent",
        "--mcp",
        json.dumps({"docs": "*"}),
        stdout=out,
    )
    assert out.getvalue().strip().startswith("sk-gw-")
    assert VirtualKey.objects.get(name="gavin-agent").mcp == {"docs": "*"}


@pytest.mark.usefixtures("console_defaults")
def test_the_key_api_sets_and_shows_mcp_access_for_admins_only(world, api_as):
    from tenants.models import Role

    def send(client, url, data, method="POST"):
        return client.generic(method, url, data=json.dumps(data), content_type="application/json")

    admin = api_as(Role.ADMIN)
    made = send(admin, "/api/v1/keys/", {"name": "agent", "mcp": ["github/search_issues", "docs/*"]})
    assert made.status_code == 201, made.content
    assert made.json()["mcp"] == {"github": ["search_issues"], "docs": "*"}
    key_id = made.json()["id"]
    changed = send(admin, f"/api/v1/keys/{key_id}/", {"mcp": None}, method="PATCH")
    assert changed.status_code == 200 and changed.json()["mcp"] is None
    assert VirtualKey.objects.get(id=key_id).mcp is None
    bad = send(admin, f"/api/v1/keys/{key_id}/", {"mcp": {"github": "all"}}, method="PATCH")
    assert bad.status_code == 400 and "mcp" in bad.json()["error"]["fields"]
    member = api_as(Role.MEMBER)
    refused = send(member, "/api/v1/keys/", {"name": "sneaky", "mcp": {"docs": "*"}})
    assert refused.status_code == 403
    assert not VirtualKey.objects.filter(name="sneaky").exists()
    assert send(member, "/api/v1/keys/", {"name": "plain"}).json()["mcp"] is None
