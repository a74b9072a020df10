"""POST /v1/feedback's cost, for `make bench` (issue 23: at most 1 CPU ms per score).

The plain gateway variant; chat calls first (their x-gateway-call-id), then one thumbs score for each,
back to back from one client; the gateway process's CPU over the scores, divided by their number. What
the endpoint adds is that less the CPU of the same number of authenticated `GET /v1/models`, measured
the same way in the same process: the HTTP server, the ASGI hop and the key lookup every request pays.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx

from tests.bench import gateway as gw
from tests.bench.payloads import JSON_MODEL, request_body
from tests.bench.procs import Processes, cpu_seconds

SCORES = 600


def feedback_cost(procs: Processes, env: dict[str, str], workdir: Path, mock_port: int) -> list[str]:
    variant = gw.Variant(name="feedback", tenant="bench-feedback", description="POST /v1/feedback")
    key = gw.configure(variant, mock_port, procs, env, workdir)
    gateway = gw.start_gateway(variant, key, procs, env, workdir, "warning")
    base = f"http://127.0.0.1:{gateway.port}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(timeout=30) as client:
        body = request_body(JSON_MODEL, stream=False)
        ids = [
            client.post(f"{base}/v1/chat/completions", headers=headers, content=body).headers["x-gateway-call-id"]
            for _ in range(SCORES + 20)
        ]
        time.sleep(1.0)  # the calls' rows are written (a score waits for its call's row otherwise)
        for call_id in ids[:20]:  # warm-up
            client.post(f"{base}/v1/feedback", headers=headers, json={"call_id": call_id, "value": 1})
        latencies, errors = [], 0
        before = cpu_seconds(gateway.process.pid)
        for i, call_id in enumerate(ids[20:]):
            started = time.perf_counter()
            answer = client.post(f"{base}/v1/feedback", headers=headers, json={"call_id": call_id, "value": i % 2})
            latencies.append((time.perf_counter() - started) * 1000)
            errors += answer.status_code >= 400
        cpu_ms = (cpu_seconds(gateway.process.pid) - before) * 1000 / SCORES
        for _ in range(20):
            client.get(f"{base}/v1/models", headers=headers)
        before = cpu_seconds(gateway.process.pid)
        for _ in range(SCORES):
            errors += client.get(f"{base}/v1/models", headers=headers).status_code >= 400
        base_ms = (cpu_seconds(gateway.process.pid) - before) * 1000 / SCORES
    procs.stop(gateway.process)
    q = statistics.quantiles(latencies, n=100)
    return [
        f"POST /v1/feedback: {cpu_ms:.3f} CPU ms per score in the gateway process; an authenticated GET /v1/models "
        f"{base_ms:.3f}: the endpoint adds {cpu_ms - base_ms:.3f} (target 1.0); p50 {q[49]:.2f} ms, "
        f"p99 {q[98]:.2f} ms; errors {errors} of {2 * SCORES}"
    ]
