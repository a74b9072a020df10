"""PII pressure: does one tenant's huge prompts slow another tenant down?

    .venv/bin/python -m tests.bench.pii_pressure [--seconds 15] [--mib 2] [--concurrency 2]

Not part of CI. One gateway process (granian, one worker, SQLite) serves two tenants: `pii-heavy`, with
the full PII policy, and `bench`, with none. Bob's key (bench) sends small chat requests one at a time,
first alone, then while Alice's key (pii-heavy) sends prompts of `--mib` MiB of adversarial text (phone
numbers, the detectors' costliest input) at `--concurrency`. Prints Bob's p50 and p99 both times and
what Alice got. The goal (issue 19): p50 within 2x and p99 within 100 ms of the unloaded run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.bench import gateway as gw
from tests.bench.procs import BenchError, Processes
from tests.bench.run import _start_mock


def _phones(n_bytes: int) -> str:
    rnd = random.Random(7)
    out, size = [], 0
    while size < n_bytes:
        part = f"call {rnd.randint(200, 999)}-{rnd.randint(200, 999)}-{rnd.randint(1000, 9999)} "
        out.append(part)
        size += len(part)
    return "".join(out)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def _bob(url: str, key: str, seconds: float) -> list[float]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
    latencies = []
    async with httpx.AsyncClient(timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            response = await client.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            latencies.append(time.perf_counter() - t)
            if response.status_code != 200:
                raise BenchError(f"Bob's call failed: {response.status_code} {response.text[:200]}")
    return latencies


async def _alice(url: str, key: str, seconds: float, mib: float, concurrency: int) -> Counter:
    text = _phones(int(mib * 1024 * 1024))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 5}
    statuses: Counter = Counter()
    end = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            response = await client.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            code = response.json().get("error", {}).get("code") if response.status_code != 200 else "ok"
            statuses[f"{response.status_code} {code}"] += 1

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--mib", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-pii-pressure-"))
    try:
        env = gw.base_env(f"sqlite:///{workdir}/pressure.sqlite3")
        gw.migrate(procs, env)
        _mock, mock_port = _start_mock(procs, workdir)
        plain = gw.Variant(name="gateway", tenant="bench", description="no policy")
        heavy = gw.Variant(
            name="pii-heavy",
            tenant="pii-heavy",
            description="the full PII policy",
            yaml_template=gw.BASE_YAML + gw.PII_AND_CACHE_YAML,
        )
        bob = gw.configure(plain, mock_port, procs, env, workdir)
        alice = gw.configure(heavy, mock_port, procs, env, workdir)
        gateway = gw.start_gateway(plain, bob, procs, env, workdir, "warning")
        url = f"http://127.0.0.1:{gateway.port}"
        asyncio.run(_bob(url, bob, 3))  # warm-up
        alone = asyncio.run(_bob(url, bob, args.seconds))

        async def together() -> tuple[list[float], Counter]:
            heavy_load = asyncio.ensure_future(_alice(url, alice, args.seconds + 1, args.mib, args.concurrency))
            await asyncio.sleep(1)
            bob_latencies = await _bob(url, bob, args.seconds)
            return bob_latencies, await heavy_load

        loaded, alice_got = asyncio.run(together())
        p50a, p99a, p50b, p99b = _pct(alone, 0.5), _pct(alone, 0.99), _pct(loaded, 0.5), _pct(loaded, 0.99)
        print(f"Bob alone:                 {len(alone):6d} calls  p50 {p50a:7.2f} ms  p99 {p99a:7.2f} ms")
        print(
            f"Bob beside Alice's {args.mib:g} MiB x{args.concurrency}: {len(loaded):6d} calls  p50 {p50b:7.2f} ms  p99 {p99b:7.2f} ms"
        )
        print(f"p50 x{p50b / p50a:.2f} (goal <= 2), p99 +{p99b - p99a:.1f} ms (goal <= 100)")
        print(f"Alice's answers: {dict(alice_got)}")
        return 0 if p50b <= 2 * p50a and p99b - p99a <= 100 else 1
    except BenchError as exc:
        print(f"FAILED: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
