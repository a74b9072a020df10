"""Soak: the gateway under steady load for minutes, RSS of every worker sampled each minute.

    .venv/bin/python -m tests.bench.soak --minutes 10 [--variant everything] [--workers 2] [--concurrency 16]

Not part of CI (it takes as long as you ask). It starts the bench's zero-latency mock and a gateway
(granian, `--workers` workers) configured as the bench `--variant`, alternates JSON and streamed
requests at `--concurrency` for `--minutes`, and prints each worker's RSS per minute, then the growth
of each worker from the end of the warm-up (the first `--warmup-minutes`) to the end. The budget: flat
within 5 MiB after warm-up over 30 minutes. Exit status 1 when a worker grew more than `--budget-mib`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.bench import gateway as gw
from tests.bench.load import pick_driver, run_load
from tests.bench.procs import BenchError, Processes, tree_pids
from tests.bench.run import _requests, _start_mock


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _print_spool_syncs(port: int) -> None:
    """What a machine crash could have lost: how often the spool's fsync came later than 1 s (twice the
    flush interval) after the oldest row it covered."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer soak"}).text
    except httpx.HTTPError:
        return
    counts = {"spool_fsyncs": 0.0, "spool_fsyncs_late": 0.0}
    for line in text.splitlines():
        for name in counts:
            if line.startswith("gateway_internal_events_total") and f'event="{name}"' in line:
                counts[name] += float(line.rsplit(" ", 1)[1])
    print(f"spool: {counts['spool_fsyncs']:,.0f} fsyncs, {counts['spool_fsyncs_late']:,.0f} later than 1 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--variant", default="everything")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--driver", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--budget-mib", type=float, default=5.0)
    args = parser.parse_args(argv)

    os.environ["BENCH_WORKERS"] = str(args.workers)
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir}/soak.sqlite3"
    try:
        (variant,) = gw.variants_named(args.variant)
        env = gw.base_env(database_url)
        env["GATEWAY_METRICS_TOKEN"] = "soak"
        gw.migrate(procs, env)
        _mock, mock_port = _start_mock(procs, workdir)
        key = gw.configure(variant, mock_port, procs, env, workdir)
        gateway = gw.start_gateway(variant, key, procs, env, workdir, "warning")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        requests = _requests(
            gateway.port, headers, "/v1/chat/completions", "/v1/chat/completions", variant.unique_prompts
        )
        driver = pick_driver(args.driver)
        workers = [pid for pid in tree_pids(gateway.process.pid) if pid != gateway.process.pid]
        print(f"soak: {variant.name}, {len(workers)} worker(s) {workers}, c={args.concurrency}, {args.minutes:g} min")
        samples: dict[int, list[float]] = {pid: [] for pid in workers}
        minutes = max(1, round(args.minutes))
        for minute in range(1, minutes + 1):
            done = errors = 0
            for mode in ("json", "stream"):
                result = run_load(driver, requests[mode], args.concurrency, 30.0, workdir, procs)
                done += result.requests
                errors += result.errors
            rss = {pid: _rss_mib(pid) for pid in workers}
            for pid, value in rss.items():
                if value is not None:
                    samples[pid].append(value)
            cells = "  ".join(f"{pid}: {value:7.1f} MiB" for pid, value in rss.items() if value is not None)
            print(f"minute {minute:3d}  {done:8,d} requests  {errors} errors  {cells}", flush=True)
        _print_spool_syncs(gateway.port)
        warm = min(max(1, round(args.warmup_minutes)), minutes) - 1
        worst = 0.0
        for pid, values in samples.items():
            if len(values) > warm:
                growth = values[-1] - values[warm]
                worst = max(worst, growth)
                print(f"worker {pid}: {values[warm]:.1f} -> {values[-1]:.1f} MiB after warm-up ({growth:+.1f} MiB)")
        if worst > args.budget_mib:
            print(
                f"FAILED: a worker grew {worst:.1f} MiB after warm-up (budget {args.budget_mib:g} MiB)", file=sys.stderr
            )
            return 1
        return 0
    except BenchError as exc:
        print(f"SOAK FAILED: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
