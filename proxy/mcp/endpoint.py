"""MCP at /mcp (every server the key may use, tools and prompts named `<server>__<name>`) and at
/mcp/<server> (one server, names as the server gives them): Streamable HTTP, authenticated with the
virtual key (`Authorization: Bearer`), on the handshake-era protocol (initialize, Mcp-Session-Id).

What the gateway adds between the client and the tenant's servers:
- access: the key's `mcp` field names its servers and tools; tools/list shows only those, and a call
  to anything else is a JSON-RPC error naming the tool, never relayed;
- limits: the key's RPM and the server's RPM, counted per tool call (proxy.limits, shared by processes);
- data policy: the key's or tenant's PII policy on tool arguments going up and on results coming
  back (restored pseudonyms; with scan_responses, new values removed);
- one call-log row per tool call (endpoint `mcp`, the server as provider, the tool as model).

Sessions are stateless for the gateway: the session id is signed for the key, so any gateway process
serves it; each process greets an upstream on the session's first use there (proxy.mcp.upstream).
List results are cached per server for LIST_TTL_S and dropped on the server's list_changed notice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from proxy.call import Call
from proxy.errors import ProxyError
from proxy.inbound import openai as inbound
from proxy.lifecycle import ensure_background
from proxy.limits import RateCheck, limiter
from proxy.mcp.upstream import Upstream, UpstreamFailure, upstream_for
from proxy.snapshot import KeyEntry, McpServerSpec, TenantEntry
from proxy.steps.bodylog import BodyLogStep
from proxy.steps.guardrails import guard_for
from proxy.steps.pii import PiiStep
from routing.policies.engine import PiiBlocked, PiiScanError, PiiSession

logger = logging.getLogger("gateway.mcp")

# Handshake-era revisions the gateway serves, newest first (the MCP specification's dates).
VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
SEP = "__"
LIST_TTL_S = 300.0
MAX_LIST_PAGES = 20
MAX_UPSTREAM_SESSIONS = 4096

# JSON-RPC error codes: the standard ones, and the implementation-defined range for the gateway's refusals.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
UPSTREAM_ERROR, RATE_LIMITED, ACCESS_DENIED, POLICY_BLOCKED = -32010, -32029, -32003, -32004
GUARDRAIL_BLOCKED = -32005


class McpError(Exception):
    def __init__(self, code: int, message: str, *, status: int = 200, log_status: int = 0, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status  # the HTTP status of the answer carrying the error
        self.log_status = log_status or (status if status >= 400 else 400)
        self.data = data

    def body(self, rid: Any) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": error})


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _result(rid: Any, result: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    return _json(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": result}), headers=headers)


# --- Sessions ----------------------------------------------------------------------------------------


def _signature(key_id: int, token: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"mcp-session:{key_id}:{token}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def new_session_id(key_id: int) -> str:
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    return f"{token}.{_signature(key_id, token)}"


def session_valid(session_id: str, key_id: int) -> bool:
    token, _, signature = session_id.partition(".")
    return bool(token) and len(session_id) <= 100 and hmac.compare_digest(signature, _signature(key_id, token))


# Per process: each session's connection to each server, least recently used first out.
_upstreams: OrderedDict[tuple[str, int, str, str], Upstream] = OrderedDict()
# Per process: each server's lists (tools, resources, templates, prompts), with when they expire.
_lists: dict[tuple[int, str, str], tuple[float, list[dict[str, Any]]]] = {}


def _upstream(session_id: str, spec: McpServerSpec) -> Upstream:
    # The spec's URL is part of the key: a server moved in the console gets new connections.
    ident = (session_id, spec.id, spec.url, spec.transport)
    upstream = _upstreams.get(ident)
    if upstream is None:

        def changed(method: str, server_id: int = spec.id) -> None:
            for k in [k for k in _lists if k[0] == server_id]:
                del _lists[k]

        upstream = _upstreams[ident] = upstream_for(spec, changed)
        while len(_upstreams) > MAX_UPSTREAM_SESSIONS:
            _ident, old = _upstreams.popitem(last=False)
            asyncio.get_running_loop().create_task(old.close())
    elif upstream.spec is not spec:
        upstream.spec = spec  # the tenant's config was reloaded (new secrets, timeout): same session
    _upstreams.move_to_end(ident)
    return upstream


async def _close_session(session_id: str) -> None:
    for ident in [i for i in _upstreams if i[0] == session_id]:
        await _upstreams.pop(ident).close()


# --- Access --------------------------------------------------------------------------------------------


class Ctx:
    """One request to /mcp: who asks, which servers it may reach, in which session."""

    __slots__ = ("key", "request", "scope", "servers", "session_id", "started", "tenant")

    def __init__(self, request: HttpRequest, key: KeyEntry, tenant: TenantEntry, scope: str | None) -> None:
        self.request = request
        self.key = key
        self.tenant = tenant
        self.scope = scope  # the one server of /mcp/<server>, or None for every allowed one
        access = key.mcp or {}
        names = [scope] if scope is not None else sorted(access)
        self.servers = {n: tenant.mcp_servers[n] for n in names if n in access and n in tenant.mcp_servers}
        self.session_id = ""
        self.started = time.perf_counter()

    def may_call(self, server: str, tool: str) -> bool:
        allowed = (self.key.mcp or {}).get(server, frozenset())
        return allowed is None or tool in allowed

    def public(self, server: str, name: str) -> str:
        return name if self.scope is not None else f"{server}{SEP}{name}"

    def resolve(self, name: Any, what: str) -> tuple[McpServerSpec, str]:
        """The server and its own name for a tool or prompt as the client named it."""
        if not isinstance(name, str) or not name:
            raise McpError(INVALID_PARAMS, f"{what} needs a name.", log_status=400)
        if self.scope is not None:
            server, own = self.scope, name
        else:
            server, sep, own = name.partition(SEP)
            if not sep or not own:
                raise McpError(INVALID_PARAMS, f"Unknown {what} {name!r}: on /mcp names are <server>{SEP}<name>.")
        spec = self.servers.get(server)
        if spec is None:
            raise McpError(
                INVALID_PARAMS, f"Unknown {what} {name!r}: this key has no MCP server {server!r}.", log_status=403
            )
        return spec, own


# --- Lists -----------------------------------------------------------------------------------------


LIST_FIELDS = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}


async def _server_list(ctx: Ctx, spec: McpServerSpec, method: str) -> list[dict[str, Any]]:
    """Every item of one server's list (all pages), from the cache while it is fresh."""
    ident = (spec.id, spec.url, method)
    cached = _lists.get(ident)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    field = LIST_FIELDS[method]
    upstream = _upstream(ctx.session_id, spec)
    initialized = await upstream.start()
    capability = {"tools/list": "tools", "prompts/list": "prompts"}.get(method, "resources")
    if capability not in (initialized.get("capabilities") or {}):
        _lists[ident] = (time.monotonic() + LIST_TTL_S, [])
        return []
    items: list[dict[str, Any]] = []
    cursor = None
    for _page in range(MAX_LIST_PAGES):
        answer = await upstream.request(method, {"cursor": cursor} if cursor else None)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise UpstreamFailure(f"the MCP server {spec.name!r} refused {method}: {_error_text(answer)}")
        items.extend(i for i in result.get(field) or () if isinstance(i, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    _lists[ident] = (time.monotonic() + LIST_TTL_S, items)
    return items


def _refused(answer: dict[str, Any], what: str, log_status: int = 0) -> McpError:
    """The upstream's own JSON-RPC error, relayed with its code, message and data."""
    error = answer.get("error")
    if not isinstance(error, dict):
        error = {}
    code = error.get("code")
    return McpError(
        code if isinstance(code, int) else UPSTREAM_ERROR,
        str(error.get("message") or f"The MCP server refused {what}.")[:2000],
        log_status=log_status,
        data=error.get("data"),
    )


def _error_text(answer: dict[str, Any]) -> str:
    error = answer.get("error")
    return str(error.get("message", ""))[:300] if isinstance(error, dict) else "no result"


async def _lists_of(ctx: Ctx, method: str) -> list[tuple[McpServerSpec, list[dict[str, Any]]]]:
    """Each allowed server's list; on /mcp a server that fails is left out (and logged), on
    /mcp/<server> its failure is the answer."""
    specs = [s for s in ctx.servers.values() if not s.blocked]
    found = await asyncio.gather(*(_server_list(ctx, s, method) for s in specs), return_exceptions=True)
    out = []
    for spec, items in zip(specs, found, strict=True):
        if isinstance(items, BaseException):
            if ctx.scope is not None:
                raise _upstream_error(items)
            logger.warning("mcp server %s left out of %s: %s", spec.name, method, items)
            continue
        out.append((spec, items))
    return out


def _upstream_error(exc: BaseException) -> McpError:
    if isinstance(exc, UpstreamFailure):
        return McpError(UPSTREAM_ERROR, str(exc)[0].upper() + str(exc)[1:] + ".", log_status=exc.status)
    if isinstance(exc, McpError):
        return exc
    logger.error("mcp upstream failed", exc_info=exc)
    return McpError(INTERNAL_ERROR, "The MCP server could not be used.", log_status=502)


async def _list(ctx: Ctx, method: str) -> dict[str, Any]:
    field = LIST_FIELDS[method]
    out: list[dict[str, Any]] = []
    for spec, items in await _lists_of(ctx, method):
        for item in items:
            if method == "tools/list":
                if not ctx.may_call(spec.name, str(item.get("name"))):
                    continue
                out.append({**item, "name": ctx.public(spec.name, str(item.get("name")))})
            elif method == "prompts/list":
                out.append({**item, "name": ctx.public(spec.name, str(item.get("name")))})
            else:
                out.append(item)
    return {field: out}


# --- Calls -----------------------------------------------------------------------------------------


def _pii_step(ctx: Ctx) -> Any:
    return ctx.key.pii_step if ctx.key.pii_override else ctx.tenant.pii


def _scan_arguments(ctx: Ctx, params: dict[str, Any]) -> PiiSession | None:
    """The data policy on what goes up (in place); the session restores and scans what comes back."""
    step = _pii_step(ctx)
    if step is None:
        return None
    if not isinstance(step, PiiStep):
        raise McpError(
            INTERNAL_ERROR, "The data policy of this tenant or key is invalid; the call was not sent.", log_status=500
        )
    session = PiiSession(step.policy)
    size = len(orjson.dumps(params))
    if size > settings.GATEWAY_PII_SCAN_MAX_BYTES:
        raise McpError(
            INVALID_PARAMS,
            f"The arguments are too large for the data policy to scan ({size:,} bytes; the limit is "
            f"{settings.GATEWAY_PII_SCAN_MAX_BYTES:,}); they were not sent.",
            log_status=413,
        )
    try:
        session.apply_payload(params)
    except PiiBlocked as exc:
        raise McpError(
            POLICY_BLOCKED,
            f"The call was blocked by the data policy: the {exc.detector!r} detector found a value that may not "
            f"be sent to an MCP server (in {exc.where}).",
            log_status=400,
        ) from None
    except PiiScanError as exc:
        raise McpError(
            POLICY_BLOCKED, f"The data policy could not scan these arguments ({exc}); they were not sent."
        ) from None
    return session


def _restore(session: PiiSession | None, node: Any) -> Any:
    """Every string of an answer as the client sees it: pseudonyms restored, new values removed (scan_responses)."""
    if session is None or (not session.values and not session.policy.scan_responses):
        return node
    if isinstance(node, str):
        return session.answer_text(node)
    if isinstance(node, list):
        return [_restore(session, item) for item in node]
    if isinstance(node, dict):
        return {k: (v if k in ("type", "mimeType", "uri", "blob") else _restore(session, v)) for k, v in node.items()}
    return node


async def _admit(ctx: Ctx, spec: McpServerSpec, request_id: str) -> None:
    checks = []
    if ctx.key.rpm:
        checks.append(RateCheck(f"mk:{ctx.key.key_id}", ctx.key.rpm, None))
    if spec.rpm:
        checks.append(RateCheck(f"ms:{spec.id}", spec.rpm, None))
    if not checks:
        return
    admission, _reservation = await limiter().admit(request_id, checks, 0, None, [], 0)
    if not admission.ok:
        whose = "this key's" if admission.scope.startswith("mk:") else f"the MCP server {spec.name!r}'s"
        raise McpError(
            RATE_LIMITED,
            f"Rate limit reached: {whose} requests per minute. Retry in {admission.retry_after:.1f} s.",
            log_status=429,
            data={"retry_after": round(admission.retry_after, 3)},
        )


class ToolCall:
    """One tools/call: checked, limited, scanned, relayed, restored and logged once."""

    def __init__(self, ctx: Ctx, rid: Any, params: dict[str, Any]) -> None:
        self.ctx = ctx
        self.rid = rid
        self.params = params
        self.call = call = Call(inbound.request_id(ctx.request), "mcp", ctx.started)
        call.key, call.tenant = ctx.key, ctx.tenant
        call.tags = inbound.tags(ctx.request, ctx.key)
        user = ctx.request.META.get("HTTP_X_GATEWAY_USER", "")
        call.user = user[:200] if user.isprintable() else ""
        name = params.get("name")
        call.model = name[:200] if isinstance(name, str) else ""
        self.sent_bytes = 0

    async def run(self, notify: Any = None) -> bytes:
        """The JSON-RPC answer for the client (a result or an error); the call is logged either way."""
        call = self.call
        server, tool = "", ""
        try:
            spec, tool = self.ctx.resolve(self.params.get("name"), "tool")
            server = spec.name
            call.mcp = (server, tool)
            if not self.ctx.may_call(server, tool):
                raise McpError(INVALID_PARAMS, f"Tool {call.model!r} is not allowed for this key.", log_status=403)
            if spec.blocked:
                raise McpError(
                    UPSTREAM_ERROR, f"The MCP server {server!r} cannot be used: {spec.blocked}", log_status=502
                )
            arguments = self.params.get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                raise McpError(INVALID_PARAMS, "arguments must be an object.")
            await _admit(self.ctx, spec, call.request_id)
            params = {k: v for k, v in self.params.items() if k != "name"}
            session = _scan_arguments(self.ctx, params)
            call.pii_actions = session.counts if session is not None else None
            params["name"] = tool
            sent = orjson.dumps(params.get("arguments") or {})
            self.sent_bytes = len(sent)
            if any(isinstance(s, BodyLogStep) for s in self.ctx.tenant.steps):
                call.bodies = {"request_body": sent.decode()}
            upstream = _upstream(self.ctx.session_id, spec)
            began = time.perf_counter()
            try:
                answer = await upstream.request("tools/call", params, notify)
            finally:
                self._attempt(spec, tool, time.perf_counter() - began)
            call.ttfb = time.perf_counter()
            result = answer.get("result")
            if not isinstance(result, dict):
                raise _refused(answer, "the call", log_status=502)
            raw = orjson.dumps(result)
            if call.bodies is not None:
                call.bodies["response_body"] = raw.decode()
            result = _restore(session, result)
            self._guard(result)
            call.status = 200
            if result.get("isError") is True:
                call.error_type = "tool_error"
                call.error_message = _content_text(result)[:2000]
            body = orjson.dumps({"jsonrpc": "2.0", "id": self.rid, "result": result})
            if call.attempts:
                call.attempts[-1]["response_bytes"] = len(raw)
                call.attempts[-1]["status"] = 200
            return body
        except McpError as exc:
            call.status = exc.log_status
            call.error_type = _error_type(exc)
            call.error_message = exc.message
            return exc.body(self.rid)
        except asyncio.CancelledError:
            call.status = 499
            call.error_type = "client_disconnected"
            call.disconnected = True
            raise
        except UpstreamFailure as exc:
            error = _upstream_error(exc)
            call.status = exc.status
            call.error_type = "upstream_timeout" if exc.status == 504 else "upstream_error"
            call.error_message = error.message
            return error.body(self.rid)
        finally:
            call.finish()

    def _guard(self, result: dict[str, Any]) -> None:
        """The guardrails on the result before the agent reads it (indirect prompt injection): the key's own
        when it has them, else the tenant's."""
        guard = guard_for(self.ctx.key, self.ctx.tenant)
        if guard is None:
            return
        text = _content_text(result)
        if isinstance(result.get("structuredContent"), dict):
            text += "\n" + orjson.dumps(result["structuredContent"]).decode()
        try:
            guard.check_tool_result(self.call, text)
        except ProxyError as exc:
            raise McpError(GUARDRAIL_BLOCKED, exc.message, log_status=exc.status) from None

    def _attempt(self, spec: McpServerSpec, tool: str, latency_s: float) -> None:
        self.call.attempts.append(
            {
                "deployment": None,
                "provider": spec.name,
                "model": tool,
                "status": 0,
                "latency_ms": round(latency_s * 1000, 3),
                "error": "",
                "start_ms": round((time.perf_counter() - latency_s - self.call.started) * 1000, 3),
                "kind": "mcp",
                "request_bytes": self.sent_bytes,
            }
        )


def _error_type(exc: McpError) -> str:
    return {
        RATE_LIMITED: "rate_limited",
        POLICY_BLOCKED: "pii_blocked",
        GUARDRAIL_BLOCKED: "guardrail_blocked",
        UPSTREAM_ERROR: "upstream_error",
    }.get(exc.code, "tool_not_allowed" if exc.log_status == 403 else "invalid_request")


def _content_text(result: dict[str, Any]) -> str:
    return " ".join(
        str(item.get("text", ""))
        for item in result.get("content") or ()
        if isinstance(item, dict) and item.get("type") == "text"
    )


# --- Relayed reads: resources and prompts ------------------------------------------------------------


async def _read_resource(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    uri = params.get("uri")
    if not isinstance(uri, str) or not uri:
        raise McpError(INVALID_PARAMS, "resources/read needs a uri.")
    spec = ctx.servers.get(ctx.scope) if ctx.scope is not None else await _owner_of(ctx, uri)
    if spec is None:
        raise McpError(INVALID_PARAMS, f"Unknown resource {uri!r} for this key.", data={"uri": uri})
    return await _relay(ctx, spec, "resources/read", params)


async def _owner_of(ctx: Ctx, uri: str) -> McpServerSpec | None:
    for spec, items in await _lists_of(ctx, "resources/list"):
        if any(item.get("uri") == uri for item in items):
            return spec
    for spec, items in await _lists_of(ctx, "resources/templates/list"):
        for item in items:
            template = str(item.get("uriTemplate") or "")
            if template and uri.startswith(template.split("{", 1)[0]):
                return spec
    return None


async def _relay(ctx: Ctx, spec: McpServerSpec, method: str, params: dict[str, Any]) -> dict[str, Any]:
    if spec.blocked:
        raise McpError(UPSTREAM_ERROR, f"The MCP server {spec.name!r} cannot be used: {spec.blocked}")
    params = dict(params)
    session = _scan_arguments(ctx, params) if method == "prompts/get" else None
    try:
        answer = await _upstream(ctx.session_id, spec).request(method, params)
    except UpstreamFailure as exc:
        raise _upstream_error(exc) from None
    result = answer.get("result")
    if not isinstance(result, dict):
        raise _refused(answer, method)
    if session is None and (step := _pii_step(ctx)) is not None and isinstance(step, PiiStep):
        session = PiiSession(step.policy)  # answers are scanned (scan_responses) even with nothing to restore
    return _restore(session, result)


async def _get_prompt(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    spec, own = ctx.resolve(params.get("name"), "prompt")
    return await _relay(ctx, spec, "prompts/get", {**params, "name": own})


# --- The endpoint ----------------------------------------------------------------------------------


def _capabilities(ctx: Ctx, upstream: dict[str, Any] | None) -> dict[str, Any]:
    ours: dict[str, Any] = {"tools": {"listChanged": False}, "resources": {}, "prompts": {}, "logging": {}}
    if upstream is None:
        return ours
    theirs = upstream.get("capabilities") or {}
    return {name: value for name, value in ours.items() if name in theirs}


async def _initialize(ctx: Ctx, rid: Any, params: dict[str, Any]) -> HttpResponse:
    asked = params.get("protocolVersion")
    version = asked if asked in VERSIONS else VERSIONS[0]
    ctx.session_id = new_session_id(ctx.key.key_id)
    info: dict[str, Any] = {"name": "llm-gateway", "version": "1.0"}
    instructions = f"Tools of {len(ctx.servers)} MCP servers, named <server>{SEP}<tool>." if ctx.scope is None else ""
    upstream_init = None
    if ctx.scope is not None:
        spec = ctx.servers[ctx.scope]
        try:
            upstream_init = await _upstream(ctx.session_id, spec).start()
        except UpstreamFailure as exc:
            raise _upstream_error(exc) from None
        their_info = upstream_init.get("serverInfo")
        if isinstance(their_info, dict):
            info = {k: v for k, v in their_info.items() if k in ("name", "title", "version")}
        instructions = str(upstream_init.get("instructions") or "")
    result: dict[str, Any] = {
        "protocolVersion": version,
        "capabilities": _capabilities(ctx, upstream_init),
        "serverInfo": info,
    }
    if instructions:
        result["instructions"] = instructions
    return _result(rid, result, {"Mcp-Session-Id": ctx.session_id})


def _stream(tool_call: ToolCall) -> StreamingHttpResponse:
    """tools/call answered as server-sent events: the server's progress notifications as they come, then
    the answer."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def notify(message: dict[str, Any]) -> None:
        if message.get("method") in ("notifications/progress", "notifications/message"):
            await queue.put(orjson.dumps(message))

    async def events() -> AsyncIterator[bytes]:
        task = asyncio.get_running_loop().create_task(tool_call.run(notify))
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield b"event: message\ndata: " + item + b"\n\n"
            yield b"event: message\ndata: " + task.result() + b"\n\n"
        finally:
            if not task.done():
                tool_call.call.disconnected = True
                task.cancel()

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


async def _dispatch(ctx: Ctx, message: dict[str, Any]) -> HttpResponseBase:
    rid = message.get("id")
    method = message["method"]
    params = message.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise McpError(INVALID_PARAMS, "params must be an object.")
    if method == "initialize":
        return await _initialize(ctx, rid, params)
    if method == "ping":
        return _result(rid, {})
    if method == "tools/call":
        tool_call = ToolCall(ctx, rid, params)
        accepts = ctx.request.META.get("HTTP_ACCEPT", "")
        wants_progress = isinstance(params.get("_meta"), dict) and "progressToken" in params["_meta"]
        if wants_progress and "text/event-stream" in accepts:
            return _stream(tool_call)
        return _json(await tool_call.run())
    if method in LIST_FIELDS:
        try:
            return _result(rid, await _list(ctx, method))
        except UpstreamFailure as exc:
            raise _upstream_error(exc) from None
    if method == "resources/read":
        return _result(rid, await _read_resource(ctx, params))
    if method == "prompts/get":
        return _result(rid, await _get_prompt(ctx, params))
    if method == "logging/setLevel":
        return _result(rid, {})
    if method == "completion/complete" and ctx.scope is not None:
        return _result(rid, await _relay(ctx, ctx.servers[ctx.scope], method, params))
    raise McpError(METHOD_NOT_FOUND, f"Method not found: {method}", data=method)


def _http_error(
    status: int, message: str, code: int = INVALID_REQUEST, headers: dict[str, str] | None = None
) -> HttpResponse:
    return _json(McpError(code, message).body(None), status=status, headers=headers)


def _message(request: HttpRequest) -> dict[str, Any] | HttpResponse:
    try:
        message = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return _http_error(400, f"Parse error: {exc}", PARSE_ERROR)
    if isinstance(message, list):
        return _http_error(400, "JSON-RPC batches are not supported; send one message per request.")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _http_error(400, 'Invalid request: a JSON-RPC 2.0 message has "jsonrpc": "2.0".')
    return message


def _session_refusal(session_id: str, key_id: int) -> HttpResponse | None:
    if not session_id:
        return _http_error(400, "Missing Mcp-Session-Id: send initialize first, then the id it returned.")
    if not session_valid(session_id, key_id):
        # Unknown, or another key's: the client starts a new session (the specification's 404).
        return _http_error(404, "Session not found; send initialize again.")
    return None


async def endpoint(request: HttpRequest, server: str | None = None) -> HttpResponseBase:
    ensure_background()
    if request.method not in ("POST", "DELETE"):
        # No stream of server-initiated messages: list changes are picked up by the next tools/list.
        return _http_error(
            405, f"Method {request.method} is not allowed on /mcp; use POST.", headers={"Allow": "POST, DELETE"}
        )
    try:
        key = await inbound.authenticate_secret(inbound.credential(request))
        tenant = await inbound.tenant_of(key)
    except ProxyError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="llm-gateway"'} if exc.status == 401 else None
        return _http_error(exc.status, exc.message, -32001, headers)
    if key.mcp is None:
        return _http_error(
            403, "This key has no MCP access: an admin grants servers and tools in the key's mcp field.", ACCESS_DENIED
        )
    ctx = Ctx(request, key, tenant, server)
    if server is not None and server not in ctx.servers:
        return _http_error(404, f"This key has no MCP server {server!r}.", ACCESS_DENIED)
    session_id = request.META.get("HTTP_MCP_SESSION_ID", "")
    if request.method == "DELETE":
        if session_id and session_valid(session_id, key.key_id):
            await _close_session(session_id)
        return HttpResponse(status=204)
    message = _message(request)
    if isinstance(message, HttpResponse):
        return message
    method = message.get("method")
    if not isinstance(method, str):
        return HttpResponse(status=202)  # a client's answer to a server request: nothing is waiting for it
    if "id" not in message:
        return HttpResponse(status=202)  # notifications (initialized, cancelled, progress): accepted
    if method != "initialize":
        refusal = _session_refusal(session_id, key.key_id)
        if refusal is not None:
            return refusal
        ctx.session_id = session_id
    try:
        response = await _dispatch(ctx, message)
    except McpError as exc:
        response = _json(exc.body(message.get("id")), status=exc.status)
    if ctx.session_id and not response.has_header("Mcp-Session-Id"):
        response["Mcp-Session-Id"] = ctx.session_id
    return response
