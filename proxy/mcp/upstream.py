"""The gateway as an MCP client of a tenant's upstream server: Streamable HTTP, and the older HTTP+SSE.

One `Upstream` per gateway session and server: the upstream session (its `Mcp-Session-Id`, or the SSE
transport's message endpoint) belongs to one client's session, so servers that keep per-session state
keep it per client. The handshake runs on first use; an upstream that forgot the session (404) is
greeted again, once, and the message retried. Every request goes through the shared upstream client
(proxy.upstream), whose resolver refuses private addresses at connect time (the SSRF guard).

Messages to the upstream carry the gateway's own ids (a counter per upstream session), so that
aggregated sessions never mix two clients' ids; answers get the client's id back in proxy.mcp.endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from proxy.snapshot import McpServerSpec
from proxy.upstream import get_client

logger = logging.getLogger("gateway.mcp")

# The handshake-era revisions the gateway speaks upstream, newest first.
UPSTREAM_VERSION = "2025-11-25"
CLIENT_INFO = {"name": "llm-gateway", "version": "1.0"}
# One SSE event (one JSON-RPC message) at most this large: a server cannot make the gateway buffer without end.
MAX_EVENT_BYTES = 8 * 1024 * 1024

Notify = Callable[[dict[str, Any]], Awaitable[None]]
# Fire-and-forget notices to upstreams, held until sent (a task nobody references may be collected).
_pending: set[asyncio.Task] = set()


class UpstreamFailure(Exception):
    """The upstream could not be reached or answered outside the protocol. `status` is what the call
    log records (502 unreachable or malformed, 504 timed out)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class SessionExpired(Exception):
    pass


async def _sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, bytes]]:
    """(event name, data) of each server-sent event, as the bytes arrive."""
    event, data, size = "message", bytearray(), 0
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, bytes(data)
            event, data, size = "message", bytearray(), 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            size += len(value) + 1
            if size > MAX_EVENT_BYTES:
                raise UpstreamFailure(f"the upstream sent an event over {MAX_EVENT_BYTES:,} bytes")
            if data:
                data += b"\n"
            data += value.encode()
        elif name == "event":
            event = value or "message"
    if data:
        yield event, bytes(data)


def _decode(data: bytes) -> dict[str, Any] | None:
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


class Upstream:
    """One client session's connection to one upstream server (Streamable HTTP)."""

    def __init__(self, spec: McpServerSpec, on_list_changed: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.session_id = ""
        self.version = UPSTREAM_VERSION
        self.initialized: dict[str, Any] | None = None  # the upstream's InitializeResult
        self.ids = itertools.count(1)
        self.lock = asyncio.Lock()
        self.on_list_changed = on_list_changed

    def _headers(self) -> dict[str, str]:
        headers = {
            **self.spec.headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if self.initialized is not None:
            headers["MCP-Protocol-Version"] = self.version
        return headers

    async def start(self) -> dict[str, Any]:
        """The handshake, once: initialize, then notifications/initialized. Returns the upstream's result."""
        async with self.lock:
            if self.initialized is None:
                await self._handshake()
            assert self.initialized is not None
            return self.initialized

    async def _handshake(self) -> None:
        self.session_id = ""
        params = {"protocolVersion": UPSTREAM_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
        message = {"jsonrpc": "2.0", "id": next(self.ids), "method": "initialize", "params": params}
        answer = await self._exchange(message, None)
        result = answer.get("result")
        if not isinstance(result, dict):
            error = answer.get("error") or {}
            raise UpstreamFailure(f"the upstream refused the handshake: {str(error.get('message', ''))[:200]}")
        self.version = str(result.get("protocolVersion") or UPSTREAM_VERSION)
        self.initialized = result
        await self._send_notification({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(self, method: str, params: dict[str, Any] | None, notify: Notify | None = None) -> dict[str, Any]:
        """The upstream's answer (a JSON-RPC response, result or error) to one request; notifications
        it sends meanwhile (progress, log messages) go to `notify`."""
        await self.start()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            message["params"] = params
        try:
            return await self._exchange(message, notify)
        except asyncio.CancelledError:
            # The client went away (or cancelled): a dropped connection is not a cancellation for the
            # server (the specification says so), so tell it, without waiting for it.
            cancel = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": message["id"], "reason": "the client cancelled or disconnected"},
            }
            task = asyncio.get_running_loop().create_task(self._notify_quietly(cancel))
            _pending.add(task)
            task.add_done_callback(_pending.discard)
            raise
        except SessionExpired:
            # The upstream restarted or dropped the session: greet it again, once.
            async with self.lock:
                self.initialized = None
                await self._handshake()
            message["id"] = next(self.ids)
            return await self._exchange(message, notify)

    async def _notify_quietly(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self._send_notification(message)

    async def close(self) -> None:
        """Ends the upstream session (DELETE), best effort."""
        if not self.session_id:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await get_client().delete(self.spec.url, headers=self._headers())

    async def _send_notification(self, message: dict[str, Any]) -> None:
        client = get_client()
        async with asyncio.timeout(self.spec.timeout_s):
            response = await client.post(self.spec.url, content=orjson.dumps(message), headers=self._headers())
        if response.status_code >= 400:
            logger.info("mcp upstream %s refused a notification: %s", self.spec.name, response.status_code)

    async def _exchange(self, message: dict[str, Any], notify: Notify | None) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                return await self._post(message, notify)
        except TimeoutError:
            raise UpstreamFailure(
                f"the MCP server {self.spec.name!r} did not answer within {self.spec.timeout_s:g} s (timeout_s)", 504
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(
                f"the MCP server {self.spec.name!r} could not be reached ({type(exc).__name__})"
            ) from None
        except OSError as exc:  # the SSRF guard's refusal at connect time
            raise UpstreamFailure(f"the MCP server {self.spec.name!r} could not be reached: {exc}") from None

    async def _post(self, message: dict[str, Any], notify: Notify | None) -> dict[str, Any]:
        client = get_client()
        request = client.build_request("POST", self.spec.url, content=orjson.dumps(message), headers=self._headers())
        response = await client.send(request, stream=True)
        try:
            if response.status_code == 404 and self.session_id and message.get("method") != "initialize":
                raise SessionExpired
            if response.status_code >= 400:
                body = await response.aread()
                answer = _decode(body)
                if answer is not None and isinstance(answer.get("error"), dict):
                    answer["id"] = message["id"]
                    return answer
                raise UpstreamFailure(f"the MCP server {self.spec.name!r} answered HTTP {response.status_code}", 502)
            if message.get("method") == "initialize":
                self.session_id = response.headers.get("mcp-session-id", "")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                async for _event, data in _sse_messages(response):
                    answer = _decode(data)
                    if answer is None:
                        continue
                    if answer.get("id") == message["id"] and ("result" in answer or "error" in answer):
                        return answer
                    await self._incoming(answer, notify)
                raise UpstreamFailure(f"the MCP server {self.spec.name!r} ended its stream without an answer")
            body = await response.aread()
            answer = _decode(body)
            if answer is None:
                raise UpstreamFailure(f"the MCP server {self.spec.name!r} answered something other than JSON-RPC")
            return answer
        finally:
            await response.aclose()

    async def _incoming(self, message: dict[str, Any], notify: Notify | None) -> None:
        """A message from the upstream that is not the awaited answer."""
        method = message.get("method")
        if not isinstance(method, str):
            return
        if "id" in message:
            # A request of the server (sampling, elicitation, roots): the gateway does not relay these;
            # say so at once rather than leave the server waiting.
            refusal = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "error": {"code": -32601, "message": f"The gateway does not relay {method} to its clients."},
            }
            with contextlib.suppress(Exception):
                await self._send_notification(refusal)
            return
        if method.endswith("/list_changed") and self.on_list_changed is not None:
            self.on_list_changed(method)
        if notify is not None:
            await notify(message)


class SseUpstream(Upstream):
    """The HTTP+SSE transport (protocol 2024-11-05): a GET stream carries every answer; messages are
    POSTed to the endpoint the stream names first. A reader task hands answers to their waiters."""

    def __init__(self, spec: McpServerSpec, on_list_changed: Callable[[str], None] | None = None) -> None:
        super().__init__(spec, on_list_changed)
        self.version = "2024-11-05"
        self.endpoint = ""
        self.waiting: dict[Any, asyncio.Future] = {}
        self.notifiers: dict[Any, Notify] = {}
        self.reader: asyncio.Task | None = None

    def _headers(self) -> dict[str, str]:
        return {**self.spec.headers, "Content-Type": "application/json"}

    async def _handshake(self) -> None:
        await self._connect()
        await Upstream._handshake(self)

    async def _connect(self) -> None:
        if self.reader is not None and not self.reader.done():
            return
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.get_running_loop().create_task(self._read(ready))
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                self.endpoint = await ready
        except TimeoutError:
            self.reader.cancel()
            raise UpstreamFailure(
                f"the MCP server {self.spec.name!r} sent no endpoint within {self.spec.timeout_s:g} s", 504
            ) from None

    async def _read(self, ready: asyncio.Future[str]) -> None:
        client = get_client()
        headers = {**self.spec.headers, "Accept": "text/event-stream"}
        try:
            async with client.stream(
                "GET", self.spec.url, headers=headers, timeout=httpx.Timeout(10, read=None)
            ) as response:
                if response.status_code >= 400:
                    raise UpstreamFailure(f"the MCP server {self.spec.name!r} answered HTTP {response.status_code}")
                async for event, data in _sse_messages(response):
                    if event == "endpoint":
                        endpoint = urljoin(self.spec.url, data.decode())
                        if urlsplit(endpoint).netloc != urlsplit(self.spec.url).netloc:
                            raise UpstreamFailure("the MCP server named a message endpoint on another host")
                        if not ready.done():
                            ready.set_result(endpoint)
                        continue
                    message = _decode(data)
                    if message is None:
                        continue
                    rid = message.get("id")
                    if rid in self.waiting and ("result" in message or "error" in message):
                        future = self.waiting.pop(rid)
                        if not future.done():
                            future.set_result(message)
                        continue
                    token = (
                        ((message.get("params") or {}).get("progressToken"))
                        if isinstance(message.get("params"), dict)
                        else None
                    )
                    notify = (
                        next((n for n in self.notifiers.values()), None) if token is None else self.notifiers.get(token)
                    )
                    await self._incoming(message, notify)
        except Exception as exc:
            failure = (
                exc
                if isinstance(exc, UpstreamFailure)
                else UpstreamFailure(f"the MCP server {self.spec.name!r} stream failed ({type(exc).__name__})")
            )
            if not ready.done():
                ready.set_exception(failure)
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(failure)
            self.waiting.clear()
        finally:
            self.initialized = None  # the next request connects and greets again

    async def _send_notification(self, message: dict[str, Any]) -> None:
        async with asyncio.timeout(self.spec.timeout_s):
            await get_client().post(self.endpoint, content=orjson.dumps(message), headers=self._headers())

    async def _post(self, message: dict[str, Any], notify: Notify | None) -> dict[str, Any]:
        await self._connect()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        rid = message["id"]
        self.waiting[rid] = future
        token = ((message.get("params") or {}).get("_meta") or {}).get("progressToken")
        if notify is not None:
            self.notifiers[token if token is not None else rid] = notify
        try:
            response = await get_client().post(self.endpoint, content=orjson.dumps(message), headers=self._headers())
            if response.status_code >= 400:
                raise UpstreamFailure(f"the MCP server {self.spec.name!r} answered HTTP {response.status_code}")
            return await future
        finally:
            self.waiting.pop(rid, None)
            self.notifiers.pop(token if token is not None else rid, None)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()


def upstream_for(spec: McpServerSpec, on_list_changed: Callable[[str], None] | None = None) -> Upstream:
    return SseUpstream(spec, on_list_changed) if spec.transport == "sse" else Upstream(spec, on_list_changed)
