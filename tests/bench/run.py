"""The orchestrator behind `make bench` / `python -m tests.bench`.

Order: start the mock, pre-check it, run every scenario straight at it (the baseline); then for each
gateway variant: apply its tenant YAML, mint a key, start granian, pre-check, warm up, run the same
scenarios through the gateway, read its memory, stop it. Finally print the markdown report.
Everything it starts is stopped in a finally block, including on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

import orjson

from tests.bench import gateway as gw
from tests.bench import peer
from tests.bench.check import mock_requests, precheck
from tests.bench.feedback import feedback_cost
from tests.bench.load import LoadResult, Request, pick_driver, run_load
from tests.bench.mcp import mcp_cost
from tests.bench.payloads import JSON_MODEL, STREAM_MODEL, UNIQUE_MARKER, request_body, responses_body
from tests.bench.procs import BenchError, Managed, Processes, cpu_seconds, memory_mib
from tests.bench.report import DIRECT, Row, Scenario, TargetInfo, render

HOST = "127.0.0.1"  # loopback only: the bench never listens on or calls anything else
MOCK_START_TIMEOUT = 15.0
# After each scenario, wait out the call log buffer's flush interval (0.5 s) before reading CPU, so
# the flush of a scenario's last requests is charged to that scenario, not the next one.
SETTLE = 0.75
WARMUP_CONCURRENCY = 16


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Measure the gateway's added latency and CPU per request against a zero-latency mock.",
    )
    p.add_argument("--duration", type=float, help="seconds per scenario (default 8; 3 with --quick)")
    p.add_argument("--warmup", type=float, help="seconds of unrecorded warm-up per mode (default 2; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="short run for a smoke test of the bench itself")
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated connection counts (default 1,16,64)")
    p.add_argument("--modes", default="json,stream", help="json, stream or both (default json,stream)")
    p.add_argument(
        "--driver", choices=("auto", "wrk", "python"), default="auto", help="load driver (default: wrk if installed)"
    )
    p.add_argument(
        "--variants", default="", help=f"gateway configs to run (default all: {', '.join(v.name for v in gw.VARIANTS)})"
    )
    p.add_argument("--json", dest="json_out", type=Path, help="also write raw results as JSON to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (database, logs, YAML)")
    p.add_argument(
        "--load-only",
        action="store_true",
        help="only the load scenarios: skip the PII scan, MCP, feedback and A/B page measurements",
    )
    p.add_argument(
        "--interleave",
        type=int,
        default=1,
        metavar="N",
        help="run the chosen variants' gateways at once and cut each scenario into N turns that alternate "
        "between them, so that their ratios come from the same moments (default 1: one variant after another)",
    )
    p.add_argument(
        "--litellm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run LiteLLM's proxy when ../shared/bench/litellm.sh installed it (default: yes)",
    )
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 8.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be > 0 and --warmup >= 0")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency takes integers, e.g. 1,16,64")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency needs positive integers")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - {"json", "stream"}:
        p.error("--modes takes json and/or stream")
    return args


def _log(started: float, message: str) -> None:
    # Progress goes to stderr so stdout carries only the report.
    print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start_mock(procs: Processes, workdir: Path) -> tuple[Managed, int]:
    mock = procs.start(
        "mock",
        [sys.executable, "-m", "tests.bench.mock", "--host", HOST, "--port", "0"],
        cwd=gw.ROOT,
        log=workdir / "mock.log",
        stdout=subprocess.PIPE,
    )
    assert mock.proc.stdout is not None
    ready, _, _ = select.select([mock.proc.stdout], [], [], MOCK_START_TIMEOUT)
    line = mock.proc.stdout.readline().decode() if ready else ""
    if not line.startswith("MOCK_PORT "):
        raise BenchError(f"the mock upstream did not start (got {line!r}):\n{mock.log_tail()}")
    return mock, int(line.split()[1])


def _requests(
    port: int, headers: dict[str, str], json_path: str, stream_path: str, unique: bool = False, api: str = "chat"
) -> dict[str, Request]:
    marker = UNIQUE_MARKER if unique else ""
    if api.startswith("responses"):
        store = api == "responses+store"
        return {
            mode: Request(
                HOST,
                port,
                "/v1/responses",
                responses_body(model, stream=mode == "stream", unique=unique, store=store),
                headers,
                marker,
            )
            for mode, model in (("json", JSON_MODEL), ("stream", STREAM_MODEL))
        }
    return {
        "json": Request(HOST, port, json_path, request_body(JSON_MODEL, stream=False, unique=unique), headers, marker),
        "stream": Request(
            HOST, port, stream_path, request_body(STREAM_MODEL, stream=True, unique=unique), headers, marker
        ),
    }


def _scan_cost(procs: Processes, env: dict[str, str]) -> list[str]:
    """The PII step's own CPU per request and per KB, measured in-process (tests/bench/scan.py)."""
    from tests.bench.scan import report_lines

    out = procs.run_captured([sys.executable, "-m", "tests.bench.scan"], timeout=300, env=env, cwd=gw.ROOT)
    try:
        return report_lines(orjson.loads(out.strip().splitlines()[-1]))
    except (IndexError, orjson.JSONDecodeError):
        raise BenchError(f"the PII scan measurement printed no result:\n{out[-2000:]}") from None


def _ab_page(procs: Processes, env: dict[str, str]) -> str:
    """The A/B comparison over a million scored calls, in a PostgreSQL database of its own (tests/bench/abpage.py)."""
    try:
        out = procs.run_captured([sys.executable, "-m", "tests.bench.abpage"], timeout=900, env=env, cwd=gw.ROOT)
        result = orjson.loads(out.strip().splitlines()[-1])
    except (BenchError, IndexError, orjson.JSONDecodeError) as exc:
        return f"A/B comparison with a million scored calls: not measured ({str(exc)[:200]})"
    return (
        f"A/B comparison with {result['rows']:,} scored calls (two scores each; PostgreSQL; target 300 ms): "
        f"the verdict {result['compare_ms']['median']:.0f} ms, the console page {result['page_ms']['median']:.0f} ms "
        f"(medians of 5; loaded in {result['load_s']:.0f} s)"
    )


@dataclass
class Live:
    """A variant's gateway, started and checked, and what the load sends it."""

    info: TargetInfo
    gateway: gw.Gateway
    key: str
    requests: dict[str, Request]


def combine(results: list[LoadResult]) -> LoadResult:
    """One scenario's turns as one result: counts add up, p50 is the median turn's, p99 the worst turn's."""
    requests = sum(r.requests for r in results)
    clients = [r.client_cpu_s for r in results if r.client_cpu_s is not None]
    return LoadResult(
        driver=results[0].driver,
        requests=requests,
        seconds=sum(r.seconds for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        mean_ms=sum(r.mean_ms * r.requests for r in results) / requests if requests else 0.0,
        non2xx=sum(r.non2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        timeouts=sum(r.timeouts for r in results),
        client_cpu_s=sum(clients) if clients else None,
    )


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Processes, workdir: Path, started: float) -> None:
        self.args = args
        self.procs = procs
        self.workdir = workdir
        self.started = started
        self.driver = pick_driver(args.driver)
        self.rows: list[Row] = []
        self.scenarios = [Scenario(m, c) for m in args.modes for c in args.concurrency]

    def warm_up(self, requests: dict[str, Request], warmup: float) -> int:
        """Unrecorded load in every mode; the number of requests completed."""
        done = 0
        if warmup > 0:
            for mode in self.args.modes:
                result = run_load(self.driver, requests[mode], WARMUP_CONCURRENCY, warmup, self.workdir, self.procs)
                done += result.requests
        return done

    def measure(self, server_pid: int, request: Request, concurrency: int, duration: float) -> tuple[LoadResult, float]:
        """One stretch of load, and the server tree's CPU seconds over it (its last flush included)."""
        cpu_before = cpu_seconds(server_pid)
        result = run_load(self.driver, request, concurrency, duration, self.workdir, self.procs)
        time.sleep(SETTLE)
        return result, cpu_seconds(server_pid) - cpu_before

    def record(self, target: str, scenario: Scenario, result: LoadResult, cpu_s: float, how: str = "") -> Row:
        row = Row(target, scenario, result, cpu_s)
        self.rows.append(row)
        client = f", client CPU {result.client_cpu_s / result.seconds:.0%}" if result.client_cpu_s else ""
        _log(
            self.started,
            f"{target:<16} {scenario.label:<12} {result.rps:>10,.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  CPU {row.cpu_ms_per_req:.3f} ms/req  errors {result.errors}{client}{how}",
        )
        return row

    def run_target(self, target: str, server_pid: int, requests: dict[str, Request], warmup: float) -> int:
        """Warm up, then run every scenario; return the number of requests completed."""
        done = self.warm_up(requests, warmup)
        for scenario in self.scenarios:
            result, cpu_s = self.measure(server_pid, requests[scenario.mode], scenario.concurrency, self.args.duration)
            self.record(target, scenario, result, cpu_s)
            done += result.requests
        return done

    def start_variant(self, variant: gw.Variant, mock_port: int, env: dict[str, str]) -> Live:
        """Configure the variant's tenant, start its gateway and pre-check it."""
        info = TargetInfo(variant.name, variant.description)
        key = gw.configure(variant, mock_port, self.procs, env, self.workdir)
        gateway = gw.start_gateway(variant, key, self.procs, env, self.workdir, "warning")
        info.startup_s = gateway.startup_s
        _log(self.started, f"{variant.name}: granian pid {gateway.process.pid} ready on port {gateway.port}")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        calls_before = mock_requests(mock_port)
        # The pre-check's prompts are the same every run, and a fresh database numbers the tenants alike: the
        # prompt cache's entries from an earlier run (the bench's Redis databases are never flushed) would
        # answer them. no-cache skips the lookup and stores the answer anew, as the check needs.
        precheck(
            variant.name,
            HOST,
            gateway.port,
            "/v1/chat/completions",
            "/v1/chat/completions",
            {**headers, "Cache-Control": "no-cache"},
            (JSON_MODEL, STREAM_MODEL),
        )
        if mock_requests(mock_port) - calls_before < (1 if variant.cache_hits or variant.unique_prompts else 3):
            raise BenchError(f"pre-check failed: {variant.name} answered without calling the mock upstream")
        requests = _requests(
            gateway.port, headers, "/v1/chat/completions", "/v1/chat/completions", variant.unique_prompts, variant.api
        )
        info.requests_sent = 3
        return Live(info, gateway, key, requests)

    def finish_variant(self, live: Live, env: dict[str, str]) -> TargetInfo:
        info = live.info
        info.rss_mib, info.pss_mib, info.processes, info.worker_rss_mib = memory_mib(live.gateway.process.pid)
        self.procs.stop(live.gateway.process)  # graceful: the lifespan shutdown flushes the call log
        info.call_log_rows = gw.call_log_rows(self.procs, env, live.key)
        if info.call_log_rows is not None and info.call_log_rows < info.requests_sent:
            info.notes.append(
                f"{info.name}: only {info.call_log_rows:,} call log rows for {info.requests_sent:,} requests"
            )
        return info

    def run_variant(self, variant: gw.Variant, mock_port: int, env: dict[str, str]) -> TargetInfo:
        live = self.start_variant(variant, mock_port, env)
        live.info.requests_sent += self.run_target(
            variant.name, live.gateway.process.pid, live.requests, self.args.warmup
        )
        return self.finish_variant(live, env)

    def run_interleaved(
        self, variants: list[gw.Variant], mock_port: int, env: dict[str, str], rounds: int
    ) -> list[TargetInfo]:
        """Every variant's gateway up at once; each scenario's time cut into `rounds` turns that go to the
        variants in turn (forward, then backward, so no one always goes first). Drift on the machine over
        minutes then falls on every variant alike, and their ratio is read from the same moments. CPU and
        requests add up over the turns; p50 is the turns' median, p99 their worst."""
        lives = [self.start_variant(v, mock_port, env) for v in variants]
        for live in lives:
            live.info.requests_sent += self.warm_up(live.requests, self.args.warmup)
        turn = self.args.duration / rounds
        for scenario in self.scenarios:
            turns: dict[str, list[tuple[LoadResult, float]]] = {live.info.name: [] for live in lives}
            for r in range(rounds):
                for live in lives if r % 2 == 0 else reversed(lives):
                    request = live.requests[scenario.mode]
                    turns[live.info.name].append(
                        self.measure(live.gateway.process.pid, request, scenario.concurrency, turn)
                    )
            for live in lives:
                taken = turns[live.info.name]
                load = combine([result for result, _ in taken])
                self.record(live.info.name, scenario, load, sum(cpu_s for _, cpu_s in taken), f"  ({rounds} turns)")
                live.info.requests_sent += load.requests
        return [self.finish_variant(live, env) for live in lives]

    def run_litellm(self, mock_port: int) -> TargetInfo | None:
        """The same scenarios through LiteLLM's proxy (tests/bench/peer.py), when the shared kit installed it."""
        if peer.venv() is None:
            _log(self.started, "LiteLLM not installed (../shared/bench/litellm.sh install): not measured")
            return None
        info = TargetInfo(peer.NAME, "LiteLLM's proxy as the shared kit runs it (no database)")
        process, port, info.startup_s = peer.start(self.procs, self.workdir, mock_port)
        _log(self.started, f"litellm pid {process.pid} ready on port {port} after {info.startup_s:.0f} s")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {peer.MASTER_KEY}"}
        requests = _requests(port, headers, "/v1/chat/completions", "/v1/chat/completions")
        info.requests_sent = 2 + self.run_target(peer.NAME, process.pid, requests, self.args.warmup)
        info.rss_mib, info.pss_mib, info.processes, info.worker_rss_mib = memory_mib(process.pid)
        self.procs.stop(process)
        return info

    def header(self, database: str) -> list[str]:
        cpu = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        driver = "wrk -t1" if self.driver == "wrk" else "the Python asyncio driver (tests/bench/pydriver.py)"
        return [
            f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} CPUs ({cpu or platform.machine()}); "
            f"Python {platform.python_version()}; granian, {os.environ.get('BENCH_WORKERS', '1')} worker(s), uvloop; database {database}.",
            f"Load: {driver}; {self.args.duration:g} s per scenario after {self.args.warmup:g} s warm-up per mode "
            f"at c={WARMUP_CONCURRENCY}; the stream is timed to its last byte (7 events + [DONE]).",
        ]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    try:
        variants = gw.variants_named(args.variants)
    except BenchError as exc:
        print(f"BENCH FAILED: {exc}", file=sys.stderr)
        return 2
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    given_db = os.environ.get("DATABASE_URL", "")
    database_url = given_db or f"sqlite:///{workdir}/bench.sqlite3"
    try:
        bench = Bench(args, procs, workdir, started)
        env = gw.base_env(database_url)
        _log(started, f"workdir {workdir}; driver {bench.driver}; migrating {database_url.split(':', 1)[0]} database")
        gw.migrate(procs, env)

        mock, mock_port = _start_mock(procs, workdir)
        _log(started, f"mock upstream pid {mock.pid} on port {mock_port}")
        direct_headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-direct-unused"}
        precheck(
            DIRECT, HOST, mock_port, "/v1/chat/completions", "/stream/v1/chat/completions", direct_headers,
            (JSON_MODEL, STREAM_MODEL),
        )  # fmt: skip
        direct = _requests(mock_port, direct_headers, "/v1/chat/completions", "/stream/v1/chat/completions")
        # The mock needs no real warm-up; a short one just opens the driver's connections once.
        bench.run_target(DIRECT, mock.pid, direct, min(args.warmup, 1.0))

        if args.interleave > 1:
            targets = bench.run_interleaved(variants, mock_port, env, args.interleave)
        else:
            targets = [bench.run_variant(v, mock_port, env) for v in variants]
        if args.litellm:
            litellm = bench.run_litellm(mock_port)
            if litellm is not None:
                targets.append(litellm)
        database = "given DATABASE_URL" if given_db else "temporary SQLite file"
        report = render(bench.header(database), bench.rows, targets)
        if any(v.name == "everything" for v in variants) and not args.load_only:
            report += "\n\n" + "\n".join(_scan_cost(procs, env))
            plain = {
                r.scenario.concurrency: r.cpu_ms_per_req
                for r in bench.rows
                if r.target == "gateway" and r.scenario.mode == "json"
            }
            report += "\n\n" + "\n".join(mcp_cost(procs, env, workdir, plain))
            report += "\n\n" + "\n".join(feedback_cost(procs, env, workdir, mock_port))
            report += "\n\n" + _ab_page(procs, env)
        print(report)
        elapsed = time.monotonic() - started
        _log(started, f"done in {elapsed:.0f} s")
        if args.json_out:
            args.json_out.write_text(
                orjson.dumps(
                    {"rows": [asdict(r) for r in bench.rows], "targets": [asdict(t) for t in targets]},
                    option=orjson.OPT_INDENT_2,
                ).decode()
            )
        failed = [r for r in bench.rows if r.load.errors]
        if failed:
            print(
                "FAILED: errors under load in " + ", ".join(f"{r.target} {r.scenario.label}" for r in failed),
                file=sys.stderr,
            )
            return 1
        return 0
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        print(f"(logs in {workdir})", file=sys.stderr)
        args.keep = True
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything the bench started", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short and orphan the gateway or the mock.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir.exists():
            print(f"kept {workdir}", file=sys.stderr)
