"""Helpers shared by test modules that are not fixtures: the fixtures are in tests/conftest.py.

Test modules import from here (and from tests.fakes.*), never from each other or from a conftest.
This package: the test tenant YAML, real gateway servers (GatewayServer, start_gateway), wait_for,
free_port. Next to it: people.py (the console's named people), billing.py (ledger and invoice rows),
browser.py (Chromium for Playwright), routing.py (the routing YAML), pii_corpus.py (the PII corpus),
observability.py (reading a Prometheus scrape).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent.parent
UPSTREAM_KEY = "sk-upstream-test-0001"
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def tenant_yaml(slug: str, base_url: str, models: dict[str, str] | None = None) -> str:
    models = models or {"gpt-4o-mini": "gpt-4o-mini"}
    lines = [
        f"tenant: {slug}",
        f"name: {slug.title()} Corp",
        "providers:",
        "  - name: main",
        "    kind: openai-compatible",
        f"    base_url: {base_url}",
        "    api_key: env:FAKE_UPSTREAM_KEY",
        "  - name: mock",
        "    kind: mock",
        "models:",
    ]
    for public, upstream_model in models.items():
        provider = "mock" if upstream_model.startswith("mock") else "main"
        lines += [
            f"  - name: {public}",
            "    deployments:",
            f"      - provider: {provider}",
            f"        model: {upstream_model}",
        ]
    return "\n".join(lines) + "\n"


ACME_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini",
    "slow": "slow-stream",
    "broken": "fail-500",
    "limited": "fail-429",
    "bad-temp": "fail-400",
    "html": "fail-html",
    "embed": "text-embedding-3-small",
    "local": "mock-chat",
}


# --- real gateway servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    db = settings.DATABASES["default"]
    assert db["ENGINE"].endswith("postgresql"), "end-to-end tests need PostgreSQL (make test sets DATABASE_URL)"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class GatewayServer:
    def __init__(self, port: int, proc: subprocess.Popen, log_path: Path) -> None:
        self.port = port
        self.proc = proc
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL to granian and its workers (their own process group): a killed master leaves its
        workers running otherwise."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, sig: int = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        return self.proc.returncode


def _gateway_env(tmp_path: Path, extra_env: dict[str, str] | None, redis: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "GATEWAY_PRIVATE_UPSTREAMS": "127.0.0.0/8",
        "GATEWAY_LOG_FLUSH_INTERVAL": "0.1",
        # The call-log spool of the servers of one test: shared by them (a second server settles what a
        # killed one left), apart from every other test's.
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "SECRET_KEY": settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    # Each server start would otherwise compile Django and the project anew (about 2 s of CPU).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if redis and settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    env.update(extra_env or {})
    return env


def spawn_gateway(tmp_path: Path, env: dict[str, str]) -> GatewayServer:
    """A gateway process started, not yet waited for (wait_ready)."""
    port = free_port()
    log_path = tmp_path / f"gateway-{port}.log"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            "gateway_project.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a group of its own, so kill_group reaches its workers too
    )
    return GatewayServer(port, proc, log_path)


def wait_ready(server: GatewayServer) -> GatewayServer:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/v1/models", timeout=1).status_code == 401:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"gateway did not start:\n{server.log()}")


def start_gateway(tmp_path: Path, *, extra_env: dict[str, str] | None = None, redis: bool = True) -> GatewayServer:
    """A gateway under granian on this run's test database and Redis database (see tests/isolation.py)."""
    return wait_ready(spawn_gateway(tmp_path, _gateway_env(tmp_path, extra_env, redis)))


# What a gateway process reads of its environment (gateway_project.settings and the libraries it uses):
# a spare started under other values of these is not used. Others (PYTEST_CURRENT_TEST, a fake
# upstream's key set for a YAML file) do not change the gateway.
_GATEWAY_ENV = re.compile(
    r"^(GATEWAY_|STRIPE_|OTEL_|OIDC_|EMAIL_|DATABASE_|REDIS_|SECRET_|CELERY_|ACCOUNT_|CSRF_|SECURE_|TRUST_|MFA_|"
    r"DJANGO|PYTHON|DEBUG$|ALLOWED_HOSTS$|PUBLIC_URL$|DEFAULT_FROM_EMAIL$|LOG_LEVEL$|SQLITE_PATH$|PATH$|TZ$|"
    r"HTTPS?_PROXY$|NO_PROXY$|SSL_)",
    re.IGNORECASE,
)


def _relevant(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if _GATEWAY_ENV.match(k)}


class SpareGateway:
    """One plain gateway started ahead, while the test before runs: most end-to-end tests take a plain
    gateway, and its start (about 2.5 s, mostly importing Django and the project) then overlaps with the
    previous test instead of adding to it. A spare started under another environment than the test's
    own (a test that set a variable first) is not used: that test gets a fresh one."""

    def __init__(self) -> None:
        self.server: GatewayServer | None = None
        self.env: dict[str, str] = {}
        self.dir: Path | None = None
        # The session fixture stops it; this also does when pytest ends without tearing fixtures down.
        atexit.register(self.close)

    def _spawn(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-spare-"))
        self.env = _gateway_env(self.dir, None, True)
        self.server = spawn_gateway(self.dir, self.env)

    def take(self) -> GatewayServer | None:
        server, env, directory = self.server, self.env, self.dir
        self.server = None
        fresh = directory is not None and _relevant(_gateway_env(directory, None, True)) == _relevant(env)
        if server is not None and not fresh:
            server.kill_group()  # never used: nothing of its own to flush
            server = None
        self._spawn()  # the next test's, starting now
        return wait_ready(server) if server is not None else None

    def close(self) -> None:
        # Killed, not stopped: it never served a request, and one still starting may not have its
        # signal handlers yet (a worker's teardown must not leave it running).
        if self.server is not None:
            self.server.kill_group()
            self.server = None


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
