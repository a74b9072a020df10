"""LiteLLM's proxy under the same load, when the shared kit installed it (issue 22: "10x lighter than
LiteLLM", measured in the same run as our variants, so the ratio holds on a noisy machine).

`../shared/bench/litellm.sh install` puts it in /tmp/bench-litellm-venv (or $LITELLM_VENV). It runs as
the kit runs it: no database, the master key only, the bundled price map, telemetry off, one worker
(BENCH_WORKERS), both models pointing at this bench's mock.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.bench.check import call, wait_until_answers
from tests.bench.payloads import JSON_MODEL, STREAM_MODEL, request_body
from tests.bench.procs import BenchError, Managed, Processes, free_port

NAME = "litellm"
MASTER_KEY = "sk-bench-master"
READY_TIMEOUT = 180.0  # it imports a great deal on start: 20-60 s on these machines


def venv() -> Path | None:
    path = Path(os.environ.get("LITELLM_VENV", "/tmp/bench-litellm-venv"))
    return path if (path / "bin" / "litellm").exists() else None


def _config(mock_port: int) -> str:
    base = f"http://127.0.0.1:{mock_port}"
    return f"""model_list:
  - model_name: {JSON_MODEL}
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}/v1
      api_key: sk-mock-upstream-dummy
  - model_name: {STREAM_MODEL}
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}/stream/v1
      api_key: sk-mock-upstream-dummy
general_settings:
  master_key: {MASTER_KEY}
"""


def start(procs: Processes, workdir: Path, mock_port: int) -> tuple[Managed, int, float]:
    """Start the proxy and wait until both models answer 200; (process, port, seconds to ready)."""
    root = venv()
    if root is None:
        raise BenchError("LiteLLM is not installed")
    config = workdir / "litellm.yaml"
    config.write_text(_config(mock_port))
    port = free_port()
    # Not our environment: LiteLLM would read DATABASE_URL and REDIS_URL as its own.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY_DISABLED": "true"}
    started = time.monotonic()
    process = procs.start(
        NAME,
        [
            str(root / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            os.environ.get("BENCH_WORKERS", "1"),
        ],
        env=env,
        cwd=workdir,
        log=workdir / "litellm.log",
    )
    wait_until_answers("LiteLLM", process, port, "/health/liveliness", {}, READY_TIMEOUT, 0.25)
    ready = time.monotonic() - started
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}
    for model, stream in ((JSON_MODEL, False), (STREAM_MODEL, True)):
        reply = call("127.0.0.1", port, "POST", "/v1/chat/completions", request_body(model, stream=stream), headers)
        if reply.status != 200 or (stream and not reply.body.rstrip().endswith(b"data: [DONE]")):
            raise BenchError(f"LiteLLM pre-check ({model}): HTTP {reply.status} {reply.body[:300]!r}")
    return process, port, ready
