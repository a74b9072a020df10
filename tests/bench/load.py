"""Running one load scenario with wrk, or with pydriver.py when wrk is missing.

Either way the driver runs in its own process (started in its own session so the cleanup can
end it by its id) and the result has the same shape: requests, seconds, latency percentiles in ms,
errors. The caller brackets each run with CPU readings of the server under test.
"""

from __future__ import annotations

import re
import resource
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.bench.procs import BenchError, Processes

# wrk's per-request timeout and the slack after the scenario before we give up on the driver.
REQUEST_TIMEOUT = 10
DRIVER_GRACE = 30


@dataclass(frozen=True)
class Request:
    """What every connection sends in a loop."""

    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    # When set, this substring of the body is replaced by a fresh token on every request (wrk only), so
    # that no two prompts are equal: the prompt cache then misses every time and pays lookup + fill.
    unique_marker: str = ""


@dataclass
class LoadResult:
    driver: str
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non2xx: int
    socket_errors: int
    timeouts: int
    client_cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors + self.timeouts


def pick_driver(wanted: str) -> str:
    """'wrk' if asked for or installed (auto), else 'python'."""
    has_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not has_wrk:
        raise BenchError("--driver wrk: wrk is not installed (apt-get install -y wrk)")
    if wanted == "auto":
        return "wrk" if has_wrk else "python"
    return wanted


def _lua_string(value: str) -> str:
    # A Lua long bracket needs no escaping as long as its closing token isn't in the text.
    level = 1
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


def _unique_body_lua(request: Request) -> str:
    """A wrk request() that sends the body with the marker replaced by a run-unique counter."""
    body = request.body.decode()
    head, found, tail = body.partition(request.unique_marker)
    if not found:
        raise BenchError(f"the request body does not contain the marker {request.unique_marker!r}")
    # A fresh nonce per wrk run: the counter restarts with every scenario, the prompts must not.
    nonce = uuid.uuid4().hex[:12]
    return f"""
local head = {_lua_string(head + nonce + "-")}
local tail = {_lua_string(tail)}
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, head .. counter .. tail)
end
"""


def _wrk_script(request: Request) -> str:
    headers = "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in request.headers.items())
    unique = _unique_body_lua(request) if request.unique_marker else ""
    # response() counts every non-2xx (wrk's own status error count only sees >= 400); each wrk
    # thread has its own Lua state, so done() sums the per-thread counters through setup()'s table.
    return f"""
wrk.method = "POST"
wrk.body = {_lua_string(request.body.decode())}
{headers}
local threads = {{}}
{unique}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d seconds=%.6f p50=%.4f p90=%.4f p99=%.4f max=%.4f mean=%.4f non2xx=%d sockerr=%d timeouts=%d\\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000, bad, e.connect + e.read + e.write, e.timeout))
end
"""


_RESULT = re.compile(r"^BENCH_RESULT (.*)$", re.MULTILINE)


def _run_wrk(request: Request, concurrency: int, duration: float, workdir: Path, procs: Processes) -> LoadResult:
    script = workdir / "bench.lua"
    script.write_text(_wrk_script(request))
    seconds = max(1, round(duration))  # wrk takes whole seconds
    cmd = [
        "wrk",
        "-t1",  # one thread: wrk is fast enough and leaves the cores to the system under test
        f"-c{concurrency}",
        f"-d{seconds}s",
        f"--timeout={REQUEST_TIMEOUT}s",
        "-s",
        str(script),
        f"http://{request.host}:{request.port}{request.path}",
    ]
    # stderr merged: a Lua error there would otherwise leave wrk silently running its default GET.
    out = procs.run_captured(cmd, timeout=seconds + DRIVER_GRACE, merge_stderr=True)
    match = _RESULT.search(out)
    if match is None or ".lua:" in out:
        raise BenchError(f"wrk printed no result line:\n{out[-2000:]}")
    v = dict(part.split("=", 1) for part in match.group(1).split())
    return LoadResult(
        driver="wrk",
        requests=int(v["requests"]),
        seconds=float(v["seconds"]),
        p50_ms=float(v["p50"]),
        p90_ms=float(v["p90"]),
        p99_ms=float(v["p99"]),
        max_ms=float(v["max"]),
        mean_ms=float(v["mean"]),
        non2xx=int(v["non2xx"]),
        socket_errors=int(v["sockerr"]),
        timeouts=int(v["timeouts"]),
    )


def _run_python(request: Request, concurrency: int, duration: float, procs: Processes) -> LoadResult:
    if request.unique_marker:
        raise BenchError("unique prompts per request need wrk (apt-get install -y wrk)")
    spec = {
        "host": request.host,
        "port": request.port,
        "method": "POST",
        "path": request.path,
        "headers": request.headers,
        "body": request.body.decode(),
        "concurrency": concurrency,
        "duration": duration,
        "timeout": REQUEST_TIMEOUT,
    }
    cmd = [sys.executable, "-m", "tests.bench.pydriver", orjson.dumps(spec).decode()]
    out = procs.run_captured(cmd, timeout=duration + REQUEST_TIMEOUT + DRIVER_GRACE)
    try:
        v = orjson.loads(out.strip().splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        raise BenchError(f"the Python driver printed no result:\n{out[-2000:]}") from None
    return LoadResult(
        driver="python",
        requests=v["requests"],
        seconds=v["seconds"],
        p50_ms=v["p50_ms"],
        p90_ms=v["p90_ms"],
        p99_ms=v["p99_ms"],
        max_ms=v["max_ms"],
        mean_ms=v["mean_ms"],
        non2xx=v["non2xx"],
        socket_errors=v["socket_errors"],
        timeouts=v["timeouts"],
    )


def run_load(
    driver: str, request: Request, concurrency: int, duration: float, workdir: Path, procs: Processes
) -> LoadResult:
    # The driver is the only child reaped during the run (the mock and the gateway are reaped at the
    # end), so the RUSAGE_CHILDREN delta is its CPU: it tells whether the client was the bottleneck.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if driver == "wrk":
        result = _run_wrk(request, concurrency, duration, workdir, procs)
    else:
        result = _run_python(request, concurrency, duration, procs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.client_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result
