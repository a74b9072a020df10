"""The tenant's upstream MCP servers: writes, and their part of the tenant YAML (`mcp_servers:`).

A server is a name, a URL (checked by the same SSRF guard as provider base URLs, on save and again on
connect), a transport (Streamable HTTP, or the older HTTP+SSE), secrets (a bearer token and extra
headers, encrypted like provider keys and exported only as `env:` names), a timeout and an optional
RPM limit across all keys. The proxy serves them at /mcp (proxy.mcp).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from gateway_project.common import crypto
from gateway_project.common.netguard import UnsafeUpstreamError, validate_base_url
from routing.declarative import _resolve_secret, export_headers, export_secret, parse_headers
from routing.models import MAX_MCP_SERVERS, MAX_MCP_TIMEOUT_S, MCP_NAME_PATTERN, McpServer, McpTransport
from routing.services import KEEP, headers_clean
from tenants.audit import Actor, audit
from tenants.bounds import MAX_SECRET_CHARS
from tenants.changes import record_change
from tenants.config import EXTENSIONS
from tenants.models import Tenant

_NAME = re.compile(MCP_NAME_PATTERN)
FIELDS = {"name", "url", "transport", "bearer", "headers", "timeout_s", "rpm"}
MAX_RPM = 10_000_000


def name_problem(name: str) -> str:
    if not _NAME.match(name):
        return (
            f"{name!r} is not a server name: use 1-63 lower-case letters, digits, '-' and '_', starting with a "
            "letter or digit"
        )
    if "__" in name:
        return f"{name!r} must not contain '__': tools are listed as <server>__<tool> on /mcp"
    return ""


def _clean_url(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ValidationError({"url": "An MCP server needs a url."})
    if len(url) > 500:
        raise ValidationError({"url": "A url has at most 500 characters."})
    try:
        validate_base_url(url)
    except UnsafeUpstreamError as exc:
        raise ValidationError({"url": str(exc).replace("base_url", "url")}) from None
    return url


def _clean_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError({"timeout_s": "timeout_s is a number of seconds."})
    if not 0.1 <= float(value) <= MAX_MCP_TIMEOUT_S:
        raise ValidationError({"timeout_s": f"timeout_s is between 0.1 and {MAX_MCP_TIMEOUT_S:g} seconds."})
    return float(value)


def _clean_rpm(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RPM:
        raise ValidationError({"rpm": f"rpm is a whole number from 1 to {MAX_RPM:,}, or empty for no limit."})
    return value


@transaction.atomic
def mcp_server_upsert(  # noqa: C901
    tenant: Tenant,
    *,
    name: str,
    url: str,
    actor: Actor,
    transport: str = McpTransport.STREAMABLE_HTTP,
    bearer: str | object = KEEP,
    headers: dict | object = KEEP,
    timeout_s: float = 30.0,
    rpm: int | None = None,
    secret_sources: dict | None = None,
) -> tuple[McpServer, bool]:
    """Create or update a server. Returns (server, changed). Secrets left as KEEP stay as stored."""
    name = (name or "").strip()
    problem = name_problem(name)
    if problem:
        raise ValidationError({"name": problem[0].upper() + problem[1:] + "."})
    if transport not in McpTransport.values:
        raise ValidationError({"transport": f"transport is one of {', '.join(McpTransport.values)}."})
    url = _clean_url(url)
    timeout_s = _clean_timeout(timeout_s)
    rpm = _clean_rpm(rpm)
    if bearer is not KEEP:
        if not isinstance(bearer, str) or any(ch in bearer for ch in "\r\n\0"):
            raise ValidationError({"bearer": "The bearer token is one line of text."})
        if len(bearer) > MAX_SECRET_CHARS:
            raise ValidationError({"bearer": f"The bearer token has at most {MAX_SECRET_CHARS:,} characters."})
    if headers is not KEEP:
        assert isinstance(headers, dict)
        headers = headers_clean(headers)
        if any(h.lower() in {"authorization", "mcp-session-id", "mcp-protocol-version"} for h in headers):
            raise ValidationError(
                {
                    "headers": "Authorization (use bearer), Mcp-Session-Id and MCP-Protocol-Version are set by the gateway."
                }
            )
    server = McpServer.objects.select_for_update().filter(tenant=tenant, name=name).first()
    created = server is None
    if server is None:
        if McpServer.objects.filter(tenant=tenant).count() >= MAX_MCP_SERVERS:
            raise ValidationError({"name": f"A tenant has at most {MAX_MCP_SERVERS} MCP servers."})
        server = McpServer(tenant=tenant, name=name)
    changes: dict[str, Any] = {}
    for field_name, value in (("url", url), ("transport", transport), ("timeout_s", timeout_s), ("rpm", rpm)):
        if getattr(server, field_name) != value:
            changes[field_name] = [getattr(server, field_name), value]
            setattr(server, field_name, value)
    stored = server.secrets() if server.secrets_encrypted else {}
    secrets = dict(stored)
    if bearer is not KEEP:
        secrets["bearer"] = bearer
    if headers is not KEEP:
        secrets["headers"] = headers
    secrets = {k: v for k, v in secrets.items() if v}
    if secrets != stored:
        changes["secrets"] = "changed"  # never the values
        server.secrets_encrypted = crypto.encrypt(json.dumps(secrets)) if secrets else ""
        server.header_names = sorted(secrets.get("headers", {}))
    sources = dict(server.secret_sources or {})
    if secret_sources is not None:
        sources = {k: v for k, v in secret_sources.items() if v}
    elif bearer is not KEEP or headers is not KEEP:
        if bearer is not KEEP:
            sources.pop("bearer", None)
        if headers is not KEEP:
            sources.pop("headers", None)
    if sources != (server.secret_sources or {}):
        server.secret_sources = sources
        changes.setdefault("secrets", "changed")
    if not created and not changes:
        return server, False
    server.full_clean()
    server.save()
    audit(
        tenant,
        actor=actor,
        action="mcp_server.create" if created else "mcp_server.update",
        target=server,
        changes=changes,
    )
    record_change("tenant", tenant.id)
    return server, True


@transaction.atomic
def mcp_server_delete(tenant: Tenant, *, server: McpServer, actor: Actor) -> None:
    if server.tenant_id != tenant.id:
        raise McpServer.DoesNotExist
    audit(tenant, actor=actor, action="mcp_server.delete", target=server, changes={"name": server.name})
    server.delete()
    record_change("tenant", tenant.id)


# --- The tenant YAML: mcp_servers ------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    url: str
    transport: str = McpTransport.STREAMABLE_HTTP
    bearer: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    rpm: int | None = None
    sources: dict[str, Any] = field(default_factory=dict)


def parse_section(value: Any, path: str, c: Any) -> list[ServerSpec]:
    out: list[ServerSpec] = []
    seen: set[str] = set()
    items = c.sequence(value, path)
    if len(items) > MAX_MCP_SERVERS:
        raise c.fail(f"a tenant has at most {MAX_MCP_SERVERS} MCP servers", path)
    for i, raw in enumerate(items):
        p = f"{path}[{i}]"
        c.mapping(raw, p, FIELDS, {"name", "url"})
        name = c.string(raw["name"], f"{p}.name")
        problem = name_problem(name)
        if problem:
            raise c.fail(problem, f"{p}.name")
        if name in seen:
            raise c.fail(f"server {name!r} is listed twice", f"{p}.name")
        seen.add(name)
        spec = ServerSpec(name=name, url=c.string(raw["url"], f"{p}.url"))
        if raw.get("transport") is not None:
            spec.transport = c.string(raw["transport"], f"{p}.transport")
            if spec.transport not in McpTransport.values:
                raise c.fail(f"transport is one of {', '.join(McpTransport.values)}", f"{p}.transport")
        if raw.get("bearer") is not None:
            spec.bearer, spec.sources["bearer"] = _resolve_secret(
                c.string(raw["bearer"], f"{p}.bearer"), f"{p}.bearer", c
            )
        if raw.get("headers") is not None:
            spec.headers, spec.sources["headers"] = parse_headers(raw["headers"], f"{p}.headers", c)
        try:
            if raw.get("timeout_s") is not None:
                spec.timeout_s = _clean_timeout(raw["timeout_s"])
            spec.rpm = _clean_rpm(raw.get("rpm"))
        except ValidationError as exc:
            key, messages = next(iter(exc.message_dict.items()))
            raise c.fail(messages[0], f"{p}.{key}") from None
        out.append(spec)
    return out


def apply_section(tenant: Tenant, specs: list[ServerSpec] | None, *, actor: Actor) -> list[str]:
    """The file lists every server: the ones it does not list are removed."""
    changes: list[str] = []
    specs = specs or []
    existing = set(McpServer.objects.filter(tenant=tenant).values_list("name", flat=True))
    for spec in specs:
        _server, changed = mcp_server_upsert(
            tenant,
            name=spec.name,
            url=spec.url,
            transport=spec.transport,
            bearer=spec.bearer,
            headers=spec.headers,
            timeout_s=spec.timeout_s,
            rpm=spec.rpm,
            secret_sources=spec.sources,
            actor=actor,
        )
        if changed:
            changes.append(f"~ mcp server {spec.name}" if spec.name in existing else f"+ mcp server {spec.name}")
    keep = {s.name for s in specs}
    for server in McpServer.objects.filter(tenant=tenant).exclude(name__in=keep):
        mcp_server_delete(tenant, server=server, actor=actor)
        changes.append(f"- mcp server {server.name}")
    return changes


def export_section(tenant: Tenant) -> list[dict] | None:
    out = []
    for server in McpServer.objects.filter(tenant=tenant).order_by("name"):
        item: dict[str, Any] = {"name": server.name, "url": server.url}
        if server.transport != McpTransport.STREAMABLE_HTTP:
            item["transport"] = server.transport
        sources = server.secret_sources or {}
        if sources.get("bearer"):
            item["bearer"] = export_secret(sources["bearer"], tenant.slug, server.name, "bearer")
        if sources.get("headers"):
            item["headers"] = export_headers(sources["headers"], tenant.slug, server.name)
        if server.timeout_s != 30.0:
            item["timeout_s"] = int(server.timeout_s) if server.timeout_s.is_integer() else server.timeout_s
        if server.rpm is not None:
            item["rpm"] = server.rpm
        out.append(item)
    return out or None


apply_section.export = export_section  # type: ignore[attr-defined]


def register() -> None:
    EXTENSIONS["mcp_servers"] = (parse_section, apply_section)
