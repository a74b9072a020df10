"""Gateway configurations under test, and setting up and starting the gateway for each.

A Variant is one row set of the table: a tenant YAML (and optionally extra mint-key arguments and
environment) benchmarked against the same mock. Each variant gets its own tenant and key in the
shared throwaway database and its own freshly started granian process, so one variant's caches,
connections or memory never flatter the next.

Adding a configuration (e.g. "with limits and a budget on") is one more entry in VARIANTS: the
runner, the pre-check and the report pick it up, and the report prints what it adds per request
over the plain "gateway" variant, as a difference and as a multiple ("x gateway").
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.bench.check import wait_until_answers
from tests.bench.procs import BenchError, Managed, Processes, free_port
from tests.bench.report import PLAIN_REDIS
from tests.bench.scan import FULL_POLICY

ROOT = Path(__file__).resolve().parents[2]
MANAGE_TIMEOUT = 180.0  # migrate on a cold SQLite file takes a few seconds; Postgres may be slower
READY_TIMEOUT = 60.0

# {tenant}, {json_base} and {stream_base} are filled in per run. The mock serves the same canned
# answers on both base URLs; /stream/v1 always streams, as in shared/bench.
BASE_YAML = """\
version: 1
tenant: {tenant}
name: Benchmark ({tenant})
providers:
  - name: mock
    kind: openai-compatible
    base_url: {json_base}
    api_key: sk-mock-not-a-real-key
  - name: mock-stream
    kind: openai-compatible
    base_url: {stream_base}
    api_key: sk-mock-not-a-real-key
models:
  - name: gpt-4o-mini
    deployments:
      - provider: mock
        model: gpt-4o-mini-2024-07-18
  - name: gpt-4o-mini-stream
    deployments:
      - provider: mock-stream
        model: gpt-4o-mini-2024-07-18
"""

# The same two bench models served by a `kind: anthropic` provider (the mock answers /v1/messages in
# Anthropic's wire format): every request is translated OpenAI -> Anthropic and the answer, stream
# events and usage back. Its "x plain" is the translation's cost over the OpenAI relay
# (budget: at most +0.3 CPU ms/request). {root} is the mock without /v1: the adapter appends /v1/messages.
ANTHROPIC_YAML = """\
version: 1
tenant: {tenant}
name: Benchmark ({tenant})
providers:
  - {{name: mock-claude, kind: anthropic, base_url: "{root}", api_key: sk-ant-mock-not-a-real-key}}
  - {{name: mock-claude-stream, kind: anthropic, base_url: "{root}/stream", api_key: sk-ant-mock-not-a-real-key}}
models:
  - name: gpt-4o-mini
    deployments:
      - {{provider: mock-claude, model: claude-haiku-4-5-20251001}}
  - name: gpt-4o-mini-stream
    deployments:
      - {{provider: mock-claude-stream, model: claude-haiku-4-5-20251001}}
"""


@dataclass(frozen=True)
class Variant:
    name: str  # the label in the table
    tenant: str
    description: str
    yaml_template: str = BASE_YAML
    mint_args: tuple[str, ...] = ()  # extra `gateway mint-key` arguments (per-key limits, say)
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the gateway process
    # Every request carries a different prompt (the prompt cache misses every time: lookup + fill).
    unique_prompts: bool = False
    # The client API the load calls: "chat" (/v1/chat/completions), or "responses" (/v1/responses with
    # store: false) and "responses+store" (the API's default store: true).
    api: str = "chat"
    # The variant answers from the prompt cache: the pre-check may see fewer upstream calls.
    cache_hits: bool = False

    def yaml(self, mock_port: int) -> str:
        base = f"http://127.0.0.1:{mock_port}"
        return self.yaml_template.format(
            tenant=self.tenant, root=base, json_base=f"{base}/v1", stream_base=f"{base}/stream/v1"
        )


# Limits high enough never to reject (a 429 would count as an error, not as overhead), but every
# request still goes through the full admission: key, tenant and deployment RPM/TPM, the key's
# parallel cap, and two hard budgets (tenant and key) with their worst-case reservation and settlement.
# TPM stays under the config's 32-bit ceiling (2147483647).
TENANT_BUDGET_YAML = """\
budgets:
  - scope: tenant
    limit_usd: 1000000
    period: month
    mode: hard
"""
LIMITS_AND_BUDGET_YAML = (
    """\
limits:
  tenant: {{rpm: 100000000, tpm: 2000000000}}
  deployments:
    - {{model: gpt-4o-mini, provider: mock, rpm: 100000000, tpm: 2000000000}}
    - {{model: gpt-4o-mini-stream, provider: mock-stream, rpm: 100000000, tpm: 2000000000}}
"""
    + TENANT_BUDGET_YAML
)
LIMIT_MINT_ARGS = ("--rpm", "100000000", "--tpm", "2000000000", "--max-parallel", "1000", "--budget", "1000000")

# The routing shape on both bench models: three deployments on three providers (all the same
# zero-latency mock), least-latency, retries, a fallback model and a non-default breaker (so a route
# row exists). The mock never fails, so every call succeeds at its first attempt: what this measures
# is the cost of deciding the route and running the attempt loop, not of retrying.
ROUTING_YAML = """\
version: 1
tenant: {tenant}
name: Benchmark ({tenant})
providers:
  - {{name: mock-a, kind: openai-compatible, base_url: "{json_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-b, kind: openai-compatible, base_url: "{json_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-c, kind: openai-compatible, base_url: "{json_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-fallback, kind: openai-compatible, base_url: "{json_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-stream-a, kind: openai-compatible, base_url: "{stream_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-stream-b, kind: openai-compatible, base_url: "{stream_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-stream-c, kind: openai-compatible, base_url: "{stream_base}", api_key: sk-mock-not-a-real-key}}
  - {{name: mock-stream-fallback, kind: openai-compatible, base_url: "{stream_base}", api_key: sk-mock-not-a-real-key}}
models:
  - name: gpt-4o-mini
    strategy: least-latency
    retries: 2
    timeout_s: 60
    deployments:
      - {{provider: mock-a, model: gpt-4o-mini-2024-07-18}}
      - {{provider: mock-b, model: gpt-4o-mini-2024-07-18}}
      - {{provider: mock-c, model: gpt-4o-mini-2024-07-18}}
    fallbacks: [gpt-4o-mini-fallback]
    cooldown: {{failures: 5, window_s: 30, cooldown_s: 15}}
  - name: gpt-4o-mini-fallback
    deployments:
      - {{provider: mock-fallback, model: gpt-4o-mini-2024-07-18}}
  - name: gpt-4o-mini-stream
    strategy: least-latency
    retries: 2
    timeout_s: 60
    deployments:
      - {{provider: mock-stream-a, model: gpt-4o-mini-2024-07-18}}
      - {{provider: mock-stream-b, model: gpt-4o-mini-2024-07-18}}
      - {{provider: mock-stream-c, model: gpt-4o-mini-2024-07-18}}
    fallbacks: [gpt-4o-mini-stream-fallback]
    cooldown: {{failures: 5, window_s: 30, cooldown_s: 15}}
  - name: gpt-4o-mini-stream-fallback
    deployments:
      - {{provider: mock-stream-fallback, model: gpt-4o-mini-2024-07-18}}
"""
# Every routed deployment gets its own limits, as on the limits variants: least-latency may pick any.
EVERYTHING_EXTRA_YAML = (
    """\
limits:
  tenant: {{rpm: 100000000, tpm: 2000000000}}
  deployments:
    - {{model: gpt-4o-mini, provider: mock-a, rpm: 100000000, tpm: 2000000000}}
    - {{model: gpt-4o-mini, provider: mock-b, rpm: 100000000, tpm: 2000000000}}
    - {{model: gpt-4o-mini, provider: mock-c, rpm: 100000000, tpm: 2000000000}}
    - {{model: gpt-4o-mini-stream, provider: mock-stream-a, rpm: 100000000, tpm: 2000000000}}
    - {{model: gpt-4o-mini-stream, provider: mock-stream-b, rpm: 100000000, tpm: 2000000000}}
    - {{model: gpt-4o-mini-stream, provider: mock-stream-c, rpm: 100000000, tpm: 2000000000}}
"""
    + TENANT_BUDGET_YAML
)


# The full data policy (every detector, a custom pattern, a term list, pseudonyms restored in the
# answers) and the exact prompt cache. The benchmark's prompt holds no personal data, so the scan finds
# nothing and the answer is relayed unchanged: what this measures is the cost of looking.
CACHE_ONLY_YAML = """\
cache:
  enabled: true
  ttl_s: 3600
"""
# Guardrails on both sides (issue 24: the everything-on figures include them): the injection pack on the
# input, denied topics on both, keywords on the answer, the output token cap. Braces doubled (str.format).
GUARDRAILS_YAML = """\
guardrails:
  - {{name: pi, check: prompt_injection, on: input, action: block}}
  - {{name: topics, check: denied_topics, topics: [legal advice, medical diagnosis], action: flag}}
  - {{name: words, check: keywords, on: output, words: [project falcon], action: block}}
  - {{name: cap, check: max_output_tokens, max: 4096}}
"""
# The tenant gets the very policy whose scan cost tests/bench/scan.py measures in-process. Braces are
# doubled: the variant's YAML goes through str.format.
PII_AND_CACHE_YAML = (
    yaml.safe_dump({"pii": FULL_POLICY}, sort_keys=False).replace("{", "{{").replace("}", "}}") + CACHE_ONLY_YAML
)


def _redis_reachable() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


# One Redis DB per Redis variant, never one that tests take (tests/isolation.py leaves 12 and 13 alone):
# the bench never flushes, it only adds keys under its own tenants; override if 12/13 are taken.
REDIS_LIMITS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
REDIS_EVERYTHING_URL = os.environ.get("BENCH_REDIS_EVERYTHING_URL", "redis://127.0.0.1:6379/13")

# The variants a budget ratio is read from run first and back to back (plain, plain with Redis, everything
# on), so that the machine's drift over the bench's quarter of an hour falls between them the least.
_REDIS = _redis_reachable()
VARIANTS: tuple[Variant, ...] = (
    Variant(name="gateway", tenant="bench", description="plain config: keys, routing, call log"),
    *(
        (
            Variant(
                name=PLAIN_REDIS,
                tenant="bench-plain-redis",
                description="the plain config in the scale-out shape: with REDIS_URL the call log goes through "
                "the durable Redis stream and its consumer (as everything-on's does), no policy",
                env={"REDIS_URL": REDIS_LIMITS_URL},
            ),
            Variant(
                name="everything",
                tenant="bench-everything",
                description="auth + limits + two hard budgets in Redis + the routing model + the full PII policy "
                "+ guardrails (injection pack, topics, keywords, token cap) + the prompt cache (a unique prompt "
                "per request: every lookup misses and fills) + call log",
                yaml_template=ROUTING_YAML + EVERYTHING_EXTRA_YAML + PII_AND_CACHE_YAML + GUARDRAILS_YAML,
                mint_args=LIMIT_MINT_ARGS,
                env={"REDIS_URL": REDIS_EVERYTHING_URL},
                unique_prompts=True,
            ),
        )
        if _REDIS
        else ()
    ),
    Variant(
        name="responses",
        tenant="bench-responses",
        description="the plain config called through the Responses API (POST /v1/responses, translated to chat), "
        "store: false: the translation alone",
        api="responses",
    ),
    Variant(
        name="responses+store",
        tenant="bench-responses-store",
        description="the same with store on (the API's default): each answer is also kept with its log row",
        api="responses+store",
    ),
    Variant(
        name="gateway+limits",
        tenant="bench-limits",
        description="RPM/TPM on key, tenant and deployment, parallel cap, two hard budgets (in-process)",
        yaml_template=BASE_YAML + LIMITS_AND_BUDGET_YAML,
        mint_args=LIMIT_MINT_ARGS,
    ),
    Variant(
        name="routing",
        tenant="bench-routing",
        description="3 deployments, least-latency, retries 2, a fallback model, cooldown (all first-attempt hits)",
        yaml_template=ROUTING_YAML,
    ),
    Variant(
        name="anthropic",
        tenant="bench-anthropic",
        description="the plain config with a kind: anthropic upstream: OpenAI <-> Anthropic Messages translation",
        yaml_template=ANTHROPIC_YAML,
    ),
    *(
        (
            Variant(
                name="gateway+limits+redis",
                tenant="bench-redis",
                description="the same limits and budgets enforced in Redis (one Lua round trip + settle)",
                yaml_template=BASE_YAML + LIMITS_AND_BUDGET_YAML,
                mint_args=LIMIT_MINT_ARGS,
                env={"REDIS_URL": REDIS_LIMITS_URL},
            ),
            Variant(
                name="cache-hit",
                tenant="bench-cache-hit",
                description="the plain config with the prompt cache in Redis, the same prompt every time: "
                "every request after the first is answered from the cache",
                yaml_template=BASE_YAML + CACHE_ONLY_YAML,
                env={"REDIS_URL": REDIS_LIMITS_URL},
                cache_hits=True,
            ),
        )
        if _REDIS
        else ()
    ),
)


def variants_named(names: str) -> list[Variant]:
    if not names:
        return list(VARIANTS)
    by_name = {v.name: v for v in VARIANTS}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise BenchError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in wanted]


_BENCH_SECRET_KEY = secrets.token_urlsafe(50)


def base_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings"
    env["DATABASE_URL"] = database_url
    # The mock is on loopback, which the SSRF guard refuses unless the operator allows it.
    allowed = [n for n in env.get("GATEWAY_PRIVATE_UPSTREAMS", "").split(",") if n.strip()]
    env["GATEWAY_PRIVATE_UPSTREAMS"] = ",".join([*allowed, "127.0.0.0/8"])
    # Production settings: DEBUG would keep every query in memory and change error handling.
    env["DEBUG"] = "false"
    # Production settings refuse to start without a secret; one per bench run, shared by every process.
    env.setdefault("SECRET_KEY", _BENCH_SECRET_KEY)
    return env


def manage(procs: Processes, env: dict[str, str], *args: str) -> str:
    return procs.run_captured([sys.executable, "manage.py", *args], timeout=MANAGE_TIMEOUT, env=env, cwd=ROOT)


def migrate(procs: Processes, env: dict[str, str]) -> None:
    manage(procs, env, "migrate", "--noinput", "-v0")


def configure(variant: Variant, mock_port: int, procs: Processes, env: dict[str, str], workdir: Path) -> str:
    """Apply the variant's tenant YAML and mint a key for it; return the key's secret."""
    path = workdir / f"tenant-{variant.tenant}.yaml"
    path.write_text(variant.yaml(mock_port))
    manage(procs, env, "gateway", "apply", str(path))
    out = manage(procs, env, "gateway", "mint-key", "--tenant", variant.tenant, "--name", "bench", *variant.mint_args)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if len(lines) != 1 or not lines[0].startswith("sk-"):
        raise BenchError(f"gateway mint-key printed {out!r}, expected the secret as its only line")
    return lines[0]


@dataclass
class Gateway:
    process: Managed
    port: int
    startup_s: float


def granian_path() -> str:
    here = Path(sys.executable).parent / "granian"
    found = str(here) if here.exists() else shutil.which("granian")
    if not found:
        raise BenchError("granian is not installed in the virtualenv (run `make install`)")
    return found


def start_gateway(
    variant: Variant, key: str, procs: Processes, env: dict[str, str], workdir: Path, log_level: str
) -> Gateway:
    """Start granian as `make serve` does (one worker, uvloop) and wait until the proxy answers."""
    port = free_port()
    cmd = [
        granian_path(),
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        # BENCH_WORKERS=2 looks at what several workers share (the limiter's Redis, the log stream).
        os.environ.get("BENCH_WORKERS", "1"),
        "--loop",
        "uvloop",
        "--log-level",
        log_level,
        "gateway_project.asgi:application",
    ]
    started = time.monotonic()
    process = procs.start(
        f"granian ({variant.name})",
        cmd,
        env={**env, **variant.env},
        cwd=ROOT,
        log=workdir / f"gateway-{variant.name}.log",
    )
    # Ready means the proxy itself answers an authenticated request.
    headers = {"Authorization": f"Bearer {key}"}
    wait_until_answers("the gateway", process, port, "/v1/models", headers, READY_TIMEOUT, 0.1)
    return Gateway(process, port, time.monotonic() - started)


def call_log_rows(procs: Processes, env: dict[str, str], key: str) -> int | None:
    """Call log rows written for this run's key: checks the log buffer kept up with the load.

    Counted by key, not tenant, so earlier runs against a given DATABASE_URL don't inflate it; the
    secret travels in the environment rather than on a command line that `ps` shows.
    """
    code = (
        "import os; from observability.models import CallLog; from tenants.models import hash_secret; "
        "print(CallLog.objects.filter(virtual_key__key_hash=hash_secret(os.environ['BENCH_KEY'])).count())"
    )
    try:
        out = manage(procs, {**env, "BENCH_KEY": key}, "shell", "-c", code)
        return int(out.strip().splitlines()[-1])
    except (BenchError, ValueError, IndexError):
        return None
