"""The MCP relay's cost, for `make bench`: CPU of the gateway process per tools/call.

A tenant with one MCP server, a key allowed one tool, one gateway process. The upstream is a minimal
Streamable HTTP server (FastMcp below: initialize with a session id, tools/call answered as JSON at
once), run in this process, so that the gateway is measured at a real request rate: the SDK's own
server (tests.fakes.mcp_upstream, which the tests use) answers in tens of ms, and at that rate the call
log's per-flush costs would be charged to a handful of calls each.
One session is opened, then tools/call is sent back to back (c=1) and from 8 threads (c=8); the
gateway process's CPU over each run, divided by the calls, is the relay's cost: authentication,
access check, limits, the PII policy on arguments and results, the upstream exchange, the log row.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import orjson
from aiohttp import web

from tests.bench import gateway as gw
from tests.bench.procs import Processes, cpu_seconds
from tests.fakes.loopback import LoopbackServer


class FastMcp(LoopbackServer):
    """Just enough of an MCP server over Streamable HTTP, per the specification's wire format."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    async def handle(self, request: web.Request) -> web.Response:
        message = orjson.loads(await request.read())
        if "id" not in message:
            return web.Response(status=202)
        method = message["method"]
        headers = {}
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "fast", "version": "1"},
            }
            headers["Mcp-Session-Id"] = "s-1"
        elif method == "tools/list":
            result = {"tools": [{"name": "get_issue", "inputSchema": {"type": "object"}}]}
        else:
            number = message["params"]["arguments"].get("number")
            issue = {"number": number, "title": f"Issue {number}", "state": "open"}
            result = {"content": [{"type": "text", "text": orjson.dumps(issue).decode()}], "structuredContent": issue}
        body = orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})
        return web.Response(body=body, content_type="application/json", headers=headers)

    def start(self) -> FastMcp:
        app = web.Application()
        app.router.add_post("/mcp", self.handle)
        app.router.add_delete("/mcp", lambda _r: web.Response(status=204))
        self.serve(app, "fast-mcp")
        return self


CALLS = 1500
YAML = """\
version: 1
tenant: bench-mcp
mcp_servers:
  - {{name: github, url: '{url}', timeout_s: 30}}
pii:
  mode: enforce
  detectors: {{email: pseudonymize}}
"""
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _session(client: httpx.Client, url: str, key: str) -> dict[str, str]:
    headers = {**HEADERS, "Authorization": f"Bearer {key}"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    answer = client.post(url, headers=headers, json=init)
    answer.raise_for_status()
    return {**headers, "Mcp-Session-Id": answer.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}


def _calls(client: httpx.Client, url: str, headers: dict[str, str], n: int, latencies: list[float]) -> int:
    errors = 0
    for i in range(n):
        body = {
            "jsonrpc": "2.0",
            "id": i + 1,
            "method": "tools/call",
            "params": {"name": "get_issue", "arguments": {"number": i}},
        }
        began = time.perf_counter()
        answer = client.post(url, headers=headers, json=body)
        latencies.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200 or "result" not in answer.json():
            errors += 1
    return errors


def _run(url: str, key: str, pid: int, threads: int) -> tuple[float, float, float, int]:
    per = CALLS // threads
    latencies: list[float] = []
    errors = [0]
    clients = [httpx.Client(timeout=30) for _ in range(threads)]
    sessions = [_session(c, url, key) for c in clients]
    for c, h in zip(clients, sessions, strict=True):
        _calls(c, url, h, 20, [])  # warm-up: the first calls greet the upstream and fill caches
    before = cpu_seconds(pid)

    def work(client: httpx.Client, headers: dict[str, str]) -> None:
        errors[0] += _calls(client, url, headers, per, latencies)

    workers = [threading.Thread(target=work, args=pair) for pair in zip(clients, sessions, strict=True)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    time.sleep(0.75)  # the call log's flush of the last calls is charged here
    cpu_ms = (cpu_seconds(pid) - before) * 1000 / (per * threads)
    for c in clients:
        c.close()
    q = statistics.quantiles(latencies, n=100)
    return cpu_ms, q[49], q[98], errors[0]


def mcp_cost(procs: Processes, env: dict[str, str], workdir: Path, plain: dict[int, float] | None = None) -> list[str]:
    """`plain`: the plain gateway's CPU ms per JSON chat request by concurrency, from this run, for the
    ratio (absolute figures move up to 2x between machines and days; ratios within a run do not)."""
    upstream = FastMcp().start()
    try:
        variant = gw.Variant(
            name="mcp",
            tenant="bench-mcp",
            description="MCP relay",
            yaml_template=YAML.replace("{url}", upstream.url),
            mint_args=("--mcp", '{"github": ["get_issue"]}'),
        )
        key = gw.configure(variant, 0, procs, env, workdir)
        gateway = gw.start_gateway(variant, key, procs, env, workdir, "warning")
        url = f"http://127.0.0.1:{gateway.port}/mcp/github"
        lines = ["MCP relay (tools/call through /mcp/github, JSON answers, PII policy on, one gateway worker):"]
        for threads in (1, 8):
            cpu_ms, p50, p99, errors = _run(url, key, gateway.process.pid, threads)
            base = (plain or {}).get(threads) or (plain or {}).get(16 if threads > 1 else 1)
            ratio = f" ({cpu_ms / base:.2f}x a plain chat request's {base:.3f})" if base else ""
            lines.append(
                f"- c={threads}: {cpu_ms:.3f} CPU ms per tool call in the gateway process{ratio}; "
                f"p50 {p50:.2f} ms, p99 {p99:.2f} ms round trip; errors {errors}"
            )
        procs.stop(gateway.process)
        return lines
    finally:
        upstream.stop()
