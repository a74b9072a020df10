"""The fallback load driver when wrk isn't installed: asyncio, raw keep-alive HTTP/1.1.

Run as its own process so its CPU isn't charged to the bench's orchestrator and the measured
server's CPU figures stay clean: `python -m tests.bench.pydriver SPEC_JSON`; it prints one JSON
line of results. Hand-written HTTP over asyncio streams rather than httpx: a client library would
spend more CPU per request than the gateway we are measuring on a 2-core machine.

Like wrk, each of the `concurrency` connections sends one request, reads the whole response
(the whole stream for SSE) and sends the next, until the deadline.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import orjson

CONNECT_RETRY_PAUSE = 0.05


@dataclass
class Counters:
    latencies_ns: list[int] = field(default_factory=list)
    non2xx: int = 0
    socket_errors: int = 0
    timeouts: int = 0
    body_bytes: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Read one response; return (status, body bytes, server wants the connection closed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    close = b"\r\nconnection: close" in lower
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        length = int(lower[i + 17 : j])
        if length:
            await reader.readexactly(length)
        return status, length, close
    if b"\r\ntransfer-encoding: chunked" in lower:
        total = 0
        # Bounded by the stream itself: every pass reads one chunk, the zero-size chunk ends it.
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # end of (empty) trailers
                return status, total, close
            await reader.readexactly(size + 2)
            total += size
    body = await reader.read()  # no length, not chunked: the body runs to the end of the connection
    return status, len(body), True


async def _connection(spec: dict, request: bytes, deadline: float, counters: Counters) -> None:
    host, port, timeout = spec["host"], spec["port"], spec["timeout"]
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                try:
                    async with asyncio.timeout(timeout):
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, TimeoutError):
                    counters.socket_errors += 1
                    await asyncio.sleep(CONNECT_RETRY_PAUSE)
                    continue
            assert reader is not None
            started = time.perf_counter_ns()
            try:
                async with asyncio.timeout(timeout):
                    writer.write(request)
                    status, size, close = await _read_response(reader)
            except TimeoutError:
                counters.timeouts += 1
                close = True
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                counters.socket_errors += 1
                close = True
            else:
                counters.latencies_ns.append(time.perf_counter_ns() - started)
                counters.body_bytes += size
                if not 200 <= status < 300:
                    counters.non2xx += 1
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def _percentile(sorted_values: list[int], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index] / 1e6


async def run(spec: dict) -> dict:
    """Drive load as described by spec; return the summary wrk's Lua hook would give."""
    body = spec["body"].encode()
    head = f"{spec['method']} {spec['path']} HTTP/1.1\r\nhost: {spec['host']}:{spec['port']}\r\n"
    for name, value in spec["headers"].items():
        head += f"{name}: {value}\r\n"
    head += f"content-length: {len(body)}\r\n\r\n"
    request = head.encode("latin1") + body
    counters = Counters()
    started = time.perf_counter()
    deadline = started + spec["duration"]
    await asyncio.gather(*(_connection(spec, request, deadline, counters) for _ in range(spec["concurrency"])))
    elapsed = time.perf_counter() - started
    lat = sorted(counters.latencies_ns)
    n = len(lat)
    return {
        "requests": n,
        "seconds": elapsed,
        "p50_ms": _percentile(lat, 50),
        "p90_ms": _percentile(lat, 90),
        "p99_ms": _percentile(lat, 99),
        "max_ms": lat[-1] / 1e6 if lat else 0.0,
        "mean_ms": sum(lat) / n / 1e6 if n else 0.0,
        "non2xx": counters.non2xx,
        "socket_errors": counters.socket_errors,
        "timeouts": counters.timeouts,
        "body_bytes": counters.body_bytes,
    }


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
