"""Console pages for the tenant's MCP servers (routing.mcp_servers): list, add, edit, delete, and "Test
connection", which greets the server the way /mcp does. They live in the proxy, not in routing.views,
because the test goes through the proxy's MCP client (proxy.mcp.upstream), which routing may not import.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from asgiref.sync import async_to_sync
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from gateway_project.common import crypto
from gateway_project.common.htmx import HtmxHttpRequest
from gateway_project.common.redact import redact, secrets_of
from proxy.loader import mcp_server_spec
from proxy.mcp.upstream import Upstream, UpstreamFailure, upstream_for
from proxy.snapshot import McpServerSpec
from proxy.upstream import close_client
from routing.mcp_servers import mcp_server_delete, mcp_server_upsert
from routing.models import McpServer, McpTransport
from routing.services import KEEP
from tenants.bounds import MAX_SECRET_CHARS
from tenants.forms import add_service_errors
from tenants.permissions import CONFIG_WRITE, TenantAccess, tenant_access

# A server that pages its tool list without end is cut off here; the timeout bounds the rest.
MAX_TOOL_PAGES = 20


class McpServerForm(forms.Form):
    """The shape of the input; the rules (name, SSRF guard on the URL, bounds) are mcp_server_upsert's."""

    name = forms.CharField(
        max_length=63,
        help_text="Lower-case letters, digits, “-” and “_”, e.g. “github”. Keys see its tools as name__tool.",
    )
    url = forms.CharField(
        max_length=500,
        label="URL",
        widget=forms.URLInput(attrs={"placeholder": "https://mcp.example.com/mcp"}),
    )
    transport = forms.ChoiceField(choices=McpTransport.choices, initial=McpTransport.STREAMABLE_HTTP)
    # Never rendered from storage; what was just typed comes back only with an error (the views are never_cache).
    bearer = forms.CharField(
        required=False,
        max_length=MAX_SECRET_CHARS,
        label="Bearer token",
        widget=forms.PasswordInput(render_value=True, attrs={"autocomplete": "off"}),
        help_text="Optional. Sent as “Authorization: Bearer …” to the server, encrypted at rest.",
    )
    clear_bearer = forms.BooleanField(required=False, label="Remove the stored bearer token")
    timeout_s = forms.FloatField(label="Timeout (seconds)", initial=30.0, help_text="For each request to the server.")
    rpm = forms.IntegerField(
        required=False,
        label="Tool calls per minute",
        help_text="Across all keys. Leave empty for no limit.",
    )

    def __init__(self, *args: Any, editing: McpServer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing is None:
            del self.fields["clear_bearer"]
            return
        # The name is how keys and YAML refer to the server: renaming is delete + add.
        self.fields["name"].disabled = True
        self.fields["name"].required = False
        state = bearer_state(editing)
        if state == "none":
            self.fields["bearer"].help_text = "No token stored. Optional."
            del self.fields["clear_bearer"]
        elif state == "unreadable":
            self.fields["bearer"].help_text = "The stored token cannot be decrypted any more: enter it again."
        else:
            self.fields["bearer"].help_text = "Stored and encrypted. Leave empty to keep it."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("clear_bearer") and data.get("bearer"):
            self.add_error("bearer", "Either type a new token or remove the stored one, not both.")
        return data

    def bearer_value(self) -> str | object:
        """What mcp_server_upsert gets: the new token, "" to remove it, or KEEP for an empty field."""
        data = self.cleaned_data
        if data.get("clear_bearer"):
            return ""
        return data.get("bearer") or KEEP

    @classmethod
    def initial_for(cls, server: McpServer) -> dict:
        # Settings only: secrets are never put back into the page.
        return {
            "name": server.name,
            "url": server.url,
            "transport": server.transport,
            "timeout_s": server.timeout_s,
            "rpm": server.rpm,
        }


def bearer_state(server: McpServer) -> str:
    """Whether a bearer token is stored: "set", "none", or "unreadable" (encrypted under a key this process
    no longer has). Never the token itself."""
    try:
        return "set" if server.secrets().get("bearer") else "none"
    except crypto.DecryptionError:
        return "unreadable"


def _servers_for(access: TenantAccess) -> QuerySet[McpServer]:
    return McpServer.objects.filter(tenant=access.tenant).order_by("name")


def _access_server(access: TenantAccess, server_id: int) -> McpServer:
    server = _servers_for(access).filter(id=server_id).first()
    if server is None:
        raise Http404("No such MCP server in this tenant.")
    return server


def _save(access: TenantAccess, form: McpServerForm, name: str) -> McpServer | None:
    """Upsert from a valid form; the service's refusals land on the form's fields."""
    data = form.cleaned_data
    try:
        server, _changed = mcp_server_upsert(
            access.tenant,
            name=name,
            url=data["url"],
            transport=data["transport"],
            bearer=form.bearer_value(),
            timeout_s=data["timeout_s"],
            rpm=data["rpm"],
            actor=access.actor,
        )
    except ValidationError as exc:
        add_service_errors(form, exc)
        return None
    return server


# --- Pages -----------------------------------------------------------------------------------------


@login_required
@never_cache  # a form shown again with an error holds the bearer token just typed
@require_http_methods(["GET", "POST"])
def mcp_servers(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    form = McpServerForm(request.POST or None)
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            name = form.cleaned_data["name"].strip()
            server = None
            if _servers_for(access).filter(name=name).exists():
                # The service would update it: adding must not overwrite a server by accident.
                form.add_error("name", f"There is already an MCP server named {name}.")
            else:
                server = _save(access, form, name)
            if server is not None:
                if request.htmx:
                    context = {"form": McpServerForm(), "created": server}
                    response = render(request, "proxy/mcp_servers.html#create_form", context)
                    return trigger_client_event(response, "mcp-servers-changed")
                messages.success(request, f"Added {server.name}. Use “Test connection” to check it.")
                return redirect("mcp-servers", slug=slug)
        if request.htmx:
            return render(request, "proxy/mcp_servers.html#create_form", {"form": form})
    rows = [(server, bearer_state(server)) for server in _servers_for(access)]
    context = {"section": "mcp", "form": form, "rows": rows}
    template = "proxy/mcp_servers.html#rows" if request.htmx else "proxy/mcp_servers.html"
    return render(request, template, context)


@login_required
@never_cache  # a form shown again with an error holds the bearer token just typed
@require_http_methods(["GET", "POST"])
def mcp_server_detail(request: HtmxHttpRequest, slug: str, server_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    server = _access_server(access, server_id)
    form = McpServerForm(request.POST or None, initial=McpServerForm.initial_for(server), editing=server)
    saved = False
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid() and _save(access, form, server.name) is not None:
            if not request.htmx:
                messages.success(request, f"Saved {server.name}.")
                return redirect("mcp-server-detail", slug=slug, server_id=server.id)
            server.refresh_from_db()
            saved = True
            form = McpServerForm(initial=McpServerForm.initial_for(server), editing=server)
    context = {"section": "mcp", "server": server, "bearer": bearer_state(server), "form": form, "saved": saved}
    template = "proxy/mcp_server_detail.html#edit_form" if request.htmx else "proxy/mcp_server_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def mcp_server_delete_view(request: HtmxHttpRequest, slug: str, server_id: int) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    server = _access_server(access, server_id)
    mcp_server_delete(access.tenant, server=server, actor=access.actor)
    messages.success(request, f"Deleted {server.name}. Keys no longer see its tools.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("mcp-servers", kwargs={"slug": slug}))
    return redirect("mcp-servers", slug=slug)


@login_required
@require_POST
def mcp_server_test(request: HtmxHttpRequest, slug: str, server_id: int) -> HttpResponse:
    # Any member may test, as with providers: it shows the server's tools, never its secrets.
    access = tenant_access(request, slug)
    server = _access_server(access, server_id)
    result = mcp_test_connection(server)
    context: dict[str, Any] = {"section": "mcp", "server": server, "bearer": bearer_state(server), "result": result}
    if request.htmx:
        return render(request, "proxy/mcp_server_detail.html#test_result", context)
    context["form"] = McpServerForm(initial=McpServerForm.initial_for(server), editing=server)
    return render(request, "proxy/mcp_server_detail.html", context)


# --- Test connection -------------------------------------------------------------------------------


@dataclass
class McpProbe:
    ok: bool
    message: str
    tools: list[tuple[str, str]] = field(default_factory=list)  # (name, description)


def mcp_test_connection(server: McpServer) -> McpProbe:
    """Initialize and tools/list against the server, as /mcp would send them. Never raises."""
    spec = mcp_server_spec(server)
    if spec.blocked:
        return McpProbe(False, spec.blocked)
    # A loop of its own, so that the upstream client _probe closes at the end is its own too: under the ASGI
    # server, plain async_to_sync would run on the server's loop, whose shared client carries proxy calls.
    return async_to_sync(_probe, force_new_loop=True)(spec)


class _Refused(Exception):
    """The server answered tools/list with an error."""


async def _probe(spec: McpServerSpec) -> McpProbe:
    upstream = upstream_for(spec)
    try:
        async with asyncio.timeout(spec.timeout_s):
            info = await upstream.start()
            tools = await _list_tools(upstream) if "tools" in (info.get("capabilities") or {}) else []
    except TimeoutError:
        return McpProbe(False, f"The server did not answer within {spec.timeout_s:g} s (its timeout).")
    except (_Refused, UpstreamFailure, httpx.HTTPError, OSError) as exc:
        # The server's own words can be in the message, and a server may quote the token it refused.
        message = redact(str(exc) or type(exc).__name__, secrets_of(spec))
        return McpProbe(False, message[:1].upper() + message[1:])
    finally:
        await upstream.close()
        await close_client()
    about = info.get("serverInfo")
    if not isinstance(about, dict):
        about = {}
    name = " ".join(str(about.get(k) or "") for k in ("name", "version")).strip() or "an unnamed server"
    version = str(info.get("protocolVersion") or "")
    listed = "no tools" if not tools else "1 tool" if len(tools) == 1 else f"{len(tools)} tools"
    return McpProbe(True, f"Connected to {name}{f' (protocol {version})' if version else ''}: {listed}.", tools)


async def _list_tools(upstream: Upstream) -> list[tuple[str, str]]:
    """The server's tools, every page (up to MAX_TOOL_PAGES)."""
    tools: list[tuple[str, str]] = []
    cursor: Any = None
    for _page in range(MAX_TOOL_PAGES):
        answer = await upstream.request("tools/list", {"cursor": cursor} if cursor else None)
        result = answer.get("result")
        if not isinstance(result, dict):
            error = answer.get("error")
            if not isinstance(error, dict):
                error = {}
            raise _Refused(f"The server refused tools/list: {str(error.get('message') or 'no reason given')[:300]}")
        for tool in result.get("tools") or []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                tools.append((tool["name"], str(tool.get("description") or "")))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return tools
