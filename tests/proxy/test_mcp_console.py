"""The console's MCP servers pages and a key's MCP access.

Alice owns acme, Dave is its admin, Erin a member, Charlie a viewer; Bob owns globex and must never
reach acme's servers. "Test connection" talks to the fake MCP server (tests.fakes.mcp_upstream) on
loopback, which the suite's settings allow.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from routing.mcp_servers import mcp_server_upsert
from routing.models import McpServer, McpTransport
from tenants.audit import Actor
from tenants.models import VirtualKey
from tests.fakes.mcp_upstream import FakeMcpUpstream

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}
BEARER = "mcp-bearer-secret-0123456789"


def url(view: str, slug: str = "acme", **kwargs) -> str:
    return reverse(view, kwargs={"slug": slug, **kwargs})


def text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def add_server(tenant, owner, *, name: str = "github", url: str = "https://mcp.example.com/mcp", **kwargs):
    server, _ = mcp_server_upsert(tenant, name=name, url=url, actor=Actor(user=owner), **kwargs)
    return server


@pytest.fixture(scope="module")
def fake_mcp():
    server = FakeMcpUpstream().start()
    yield server
    server.stop()


# --- The list and adding ---------------------------------------------------------------------------


def test_alice_adds_a_server_and_sees_it_listed_without_its_token(world, client_as):
    client = client_as(world.alice)
    data = {
        "name": "github",
        "url": "https://mcp.example.com/mcp",
        "transport": McpTransport.STREAMABLE_HTTP,
        "bearer": BEARER,
        "timeout_s": "12.5",
        "rpm": "60",
    }
    response = client.post(url("mcp-servers"), data, **HTMX)
    assert "Added" in text(response) and "mcp-servers-changed" in response["HX-Trigger"]
    server = McpServer.objects.get(tenant=world.acme, name="github")
    assert (server.timeout_s, server.rpm, server.secrets()["bearer"]) == (12.5, 60, BEARER)
    listed = client.get(url("mcp-servers"))
    body = text(listed)
    assert "github" in body and "https://mcp.example.com/mcp" in body and "12.5 s" in body
    assert "bearer token" in body and BEARER not in listed.content.decode()
    detail = client.get(url("mcp-server-detail", server_id=server.id)).content.decode()
    assert BEARER not in detail and "Stored and encrypted" in detail


def test_the_pages_name_themselves_and_the_nav_links_them(world, client_as):
    server = add_server(world.acme, world.alice)
    client = client_as(world.alice)
    page = client.get(url("mcp-servers")).content.decode()
    assert "<title>MCP servers · Acme Corp · LLM Gateway</title>" in page
    assert f'href="{url("mcp-servers")}" aria-current="page">MCP servers' in page
    detail = client.get(url("mcp-server-detail", server_id=server.id)).content.decode()
    assert "<title>github · MCP servers · Acme Corp · LLM Gateway</title>" in detail


def test_a_metadata_address_is_refused_next_to_the_url(world, client_as):
    data = {"name": "metadata", "url": "http://169.254.169.254/", "transport": "streamable_http", "timeout_s": "30"}
    response = client_as(world.alice).post(url("mcp-servers"), data, **HTMX)
    assert "a cloud metadata address, which is never allowed" in text(response)
    assert 'id="id_url_error"' in response.content.decode()
    assert not McpServer.objects.filter(name="metadata").exists()


def test_a_bad_name_and_timeout_show_the_services_words(world, client_as):
    data = {"name": "Git__Hub", "url": "https://mcp.example.com/mcp", "transport": "sse", "timeout_s": "30"}
    assert "is not a server name" in text(client_as(world.alice).post(url("mcp-servers"), data, **HTMX))
    data = {**data, "name": "github", "timeout_s": "9000"}
    assert "timeout_s is between 0.1 and 600 seconds" in text(
        client_as(world.alice).post(url("mcp-servers"), data, **HTMX)
    )
    assert not McpServer.objects.exists()


def test_adding_a_taken_name_does_not_overwrite_the_server(world, client_as):
    add_server(world.acme, world.alice, url="https://first.example.com/mcp")
    data = {"name": "github", "url": "https://second.example.com/mcp", "transport": "sse", "timeout_s": "30"}
    response = client_as(world.dave).post(url("mcp-servers"), data, **HTMX)
    assert "There is already an MCP server named github." in text(response)
    assert McpServer.objects.get(name="github").url == "https://first.example.com/mcp"


def test_erin_a_member_reads_but_cannot_add(world, client_as):
    add_server(world.acme, world.alice)
    client = client_as(world.erin)
    page = client.get(url("mcp-servers"))
    assert page.status_code == 200 and "github" in text(page) and "Add MCP server" not in text(page)
    data = {"name": "erins", "url": "https://mcp.example.com/mcp", "transport": "sse", "timeout_s": "30"}
    assert client.post(url("mcp-servers"), data).status_code == 403
    assert not McpServer.objects.filter(name="erins").exists()


def test_bob_gets_404_for_acmes_servers_even_through_globex(world, client_as):
    server = add_server(world.acme, world.alice, name="acme-tracker")
    client = client_as(world.bob)
    for slug in ("acme", "globex"):
        assert client.get(url("mcp-server-detail", slug=slug, server_id=server.id)).status_code == 404
        assert client.post(url("mcp-server-test", slug=slug, server_id=server.id)).status_code == 404
        assert client.post(url("mcp-server-delete", slug=slug, server_id=server.id)).status_code == 404
    assert client.get(url("mcp-servers")).status_code == 404
    assert "acme-tracker" not in text(client.get(url("mcp-servers", slug="globex")))
    assert McpServer.objects.filter(id=server.id).exists()


# --- Editing and deleting --------------------------------------------------------------------------


def test_an_empty_bearer_keeps_the_token_and_clearing_removes_it(world, client_as):
    server = add_server(world.acme, world.alice, bearer=BEARER)
    client = client_as(world.dave)
    edit = {"url": "https://moved.example.com/mcp", "transport": "sse", "timeout_s": "5", "rpm": ""}
    response = client.post(url("mcp-server-detail", server_id=server.id), {**edit, "bearer": ""}, **HTMX)
    assert "Saved ✓" in text(response)
    server.refresh_from_db()
    assert (server.url, server.transport, server.rpm) == ("https://moved.example.com/mcp", "sse", None)
    assert server.secrets()["bearer"] == BEARER
    both = client.post(url("mcp-server-detail", server_id=server.id), {**edit, "bearer": "new", "clear_bearer": "on"})
    assert "Either type a new token or remove the stored one" in text(both)
    client.post(url("mcp-server-detail", server_id=server.id), {**edit, "clear_bearer": "on"}, **HTMX)
    server.refresh_from_db()
    assert server.secrets() == {}


def test_charlie_a_viewer_cannot_edit_or_delete(world, client_as):
    server = add_server(world.acme, world.alice)
    client = client_as(world.charlie)
    edit = {"url": "https://elsewhere.example.com/mcp", "transport": "sse", "timeout_s": "5"}
    assert client.post(url("mcp-server-detail", server_id=server.id), edit).status_code == 403
    assert client.post(url("mcp-server-delete", server_id=server.id)).status_code == 403
    server.refresh_from_db()
    assert server.url == "https://mcp.example.com/mcp"


def test_alice_deletes_a_server(world, client_as):
    server = add_server(world.acme, world.alice)
    response = client_as(world.alice).post(url("mcp-server-delete", server_id=server.id), **HTMX)
    assert response["HX-Redirect"] == url("mcp-servers")
    assert not McpServer.objects.filter(id=server.id).exists()


# --- Test connection -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [McpTransport.STREAMABLE_HTTP, McpTransport.SSE])
def test_test_connection_lists_the_servers_tools(world, client_as, fake_mcp, transport):
    address = fake_mcp.url if transport == McpTransport.STREAMABLE_HTTP else fake_mcp.sse_url
    server = add_server(world.acme, world.alice, url=address, transport=transport, bearer=BEARER, timeout_s=10)
    # Charlie (viewer) may test, as with providers.
    response = client_as(world.charlie).post(url("mcp-server-test", server_id=server.id), **HTMX)
    body = text(response)
    assert "Connection works." in body and "Connected to fake-github" in body
    for tool in ("search_issues", "get_issue", "delete_repo"):
        assert tool in body
    assert "Search issues by text." in body
    assert BEARER not in response.content.decode()
    assert any(h.get("authorization") == f"Bearer {BEARER}" for h in fake_mcp.headers_seen)


def test_test_connection_without_htmx_renders_the_whole_page(world, client_as, fake_mcp):
    server = add_server(world.acme, world.alice, url=fake_mcp.url)
    response = client_as(world.alice).post(url("mcp-server-test", server_id=server.id))
    assert "<title>github · MCP servers" in response.content.decode() and "search_issues" in text(response)


def test_test_connection_says_why_it_failed(world, client_as):
    # Nothing listens on port 9 of loopback.
    server = add_server(world.acme, world.alice, url="http://127.0.0.1:9/mcp", timeout_s=5)
    body = text(client_as(world.alice).post(url("mcp-server-test", server_id=server.id), **HTMX))
    assert "Connection failed." in body and "could not be reached" in body


# --- A key's MCP access ----------------------------------------------------------------------------


def key_form(key: VirtualKey, **changes) -> dict:
    return {"name": key.name, "expires_at": "", "metadata": "", "mcp": "", **changes}


def test_alice_sets_a_keys_mcp_access_and_it_is_stored_normalized(world, client_as):
    key = world.objects["key"]
    client = client_as(world.alice)
    access = '{"github": ["get_issue", "search_issues", "github/get_issue"], "docs": "docs/*"}'
    response = client.post(url("key-detail", key_id=key.id), key_form(key, mcp=access), **HTMX)
    assert "Saved ✓" in text(response)
    key.refresh_from_db()
    assert key.mcp == {"github": ["get_issue", "search_issues"], "docs": "*"}
    page = text(client.get(url("key-detail", key_id=key.id)))
    assert "MCP: docs (every tool), github (get_issue, search_issues)" in page
    # Emptying the field takes MCP access away again.
    client.post(url("key-detail", key_id=key.id), key_form(key), **HTMX)
    key.refresh_from_db()
    assert key.mcp is None
    assert "MCP: no access" in text(client.get(url("key-detail", key_id=key.id)))


def test_invalid_mcp_access_is_an_error_on_the_field(world, client_as):
    key = world.objects["key"]
    client = client_as(world.alice)
    broken = text(client.post(url("key-detail", key_id=key.id), key_form(key, mcp='{"github": '), **HTMX))
    assert "Not valid JSON" in broken
    wrong = text(client.post(url("key-detail", key_id=key.id), key_form(key, mcp='{"github": "search"}'), **HTMX))
    assert 'mcp.github is "*" or a list of tool names.' in wrong.replace("&quot;", '"')
    key.refresh_from_db()
    assert key.mcp is None


def test_a_new_key_gets_mcp_access_from_an_admin_only(world, client_as):
    alice = client_as(world.alice)
    response = alice.post(url("keys"), {"name": "agent", "mcp": '["github/search_issues"]'}, **HTMX)
    assert response.status_code == 200
    assert VirtualKey.objects.get(tenant=world.acme, name="agent").mcp == {"github": ["search_issues"]}
    # Erin, a member, makes keys but cannot grant tools: what she posts in the field is ignored.
    erin = client_as(world.erin)
    assert erin.post(url("keys"), {"name": "erins-agent", "mcp": '{"github": "*"}'}, **HTMX).status_code == 200
    assert VirtualKey.objects.get(tenant=world.acme, name="erins-agent").mcp is None
