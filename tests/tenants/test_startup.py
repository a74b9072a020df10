"""Starting the gateway: settings from the environment, the port check, the demo seed, static files.

Settings are read once at import, so each configuration is loaded in a fresh Python process with
exactly the environment under test (no SECRET_KEY, `make run`'s GATEWAY_DEV=1, an https PUBLIC_URL...).
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gateway_project.common.env import default_public_url, is_loopback_host
from gateway_project.startup import check_port_free
from tests.helpers import ROOT, free_port

# Variables that would leak the test run's own configuration into the process under test.
_SCRUB = {"SECRET_KEY", "SECRET_KEY_FILE", "PYTEST_VERSION", "GATEWAY_DEV", "DEBUG", "HOST", "PORT", "PUBLIC_URL"}
_SCRUB |= {"ALLOWED_HOSTS", "SECURE_SSL", "TRUST_X_FORWARDED_PROTO", "GATEWAY_PRIVATE_UPSTREAMS", "GATEWAY_SECRET_FILE"}
_SETTINGS = [
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "PUBLIC_URL",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_PROXY_SSL_HEADER",
    "GATEWAY_PRIVATE_UPSTREAMS",
]


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(overrides)
    return env


def load_settings(**env: str) -> subprocess.CompletedProcess:
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {_SETTINGS!r}}}, default=str))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(DJANGO_SETTINGS_MODULE="gateway_project.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_of(**env: str) -> dict:
    result = load_settings(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- SECRET_KEY ------------------------------------------------------------------------------------


def test_a_production_start_without_secret_key_refuses_and_names_it():
    result = load_settings()
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_make_serve_without_secret_key_fails_with_a_clear_message():
    result = subprocess.run(
        ["make", "--no-print-directory", "serve", f"PORT={free_port()}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_make_run_generates_a_private_key_file_once_and_keeps_it(tmp_path):
    key_file = tmp_path / ".gateway-secret"
    first = settings_of(GATEWAY_DEV="1", GATEWAY_SECRET_FILE=str(key_file))["SECRET_KEY"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = settings_of(GATEWAY_DEV="1", GATEWAY_SECRET_FILE=str(key_file))["SECRET_KEY"]
    other_install = settings_of(GATEWAY_DEV="1", GATEWAY_SECRET_FILE=str(tmp_path / "other"))["SECRET_KEY"]
    assert first == again == key_file.read_text().strip()
    assert len(first) >= 50 and other_install != first


def test_make_run_on_a_public_address_needs_its_own_secret_key(tmp_path):
    result = load_settings(GATEWAY_DEV="1", HOST="0.0.0.0", GATEWAY_SECRET_FILE=str(tmp_path / "k"))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr and "HOST=0.0.0.0" in result.stderr
    assert not (tmp_path / "k").exists()
    assert settings_of(GATEWAY_DEV="1", HOST="0.0.0.0", SECRET_KEY="s" * 50)["SECRET_KEY"] == "s" * 50


# --- hosts and links -------------------------------------------------------------------------------


def test_public_url_follows_host_and_port_and_allowed_hosts_follow_public_url():
    s = settings_of(SECRET_KEY="k", HOST="0.0.0.0", PORT="9000")
    assert s["PUBLIC_URL"] == "http://127.0.0.1:9000"
    assert "*" not in s["ALLOWED_HOSTS"]
    assert {"127.0.0.1", "localhost", "[::1]"} <= set(s["ALLOWED_HOSTS"])
    s = settings_of(SECRET_KEY="k", PUBLIC_URL="https://gw.acme.example/")
    assert s["PUBLIC_URL"] == "https://gw.acme.example"
    assert s["ALLOWED_HOSTS"][0] == "gw.acme.example" and "*" not in s["ALLOWED_HOSTS"]
    assert settings_of(SECRET_KEY="k", ALLOWED_HOSTS="*")["ALLOWED_HOSTS"] == ["*"]


def test_default_public_url_shows_loopback_for_wildcards():
    assert default_public_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert default_public_url("0.0.0.0", 8765) == "http://127.0.0.1:8765"
    assert default_public_url("::", 8765) == "http://127.0.0.1:8765"
    assert default_public_url("::1", 8765) == "http://[::1]:8765"
    assert default_public_url("gw.local", 80) == "http://gw.local:80"
    assert is_loopback_host("127.0.0.2") and is_loopback_host("[::1]") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("10.0.0.1")


# --- HTTPS -----------------------------------------------------------------------------------------


def test_plain_http_sets_no_secure_cookies_nor_hsts():
    s = settings_of(SECRET_KEY="k")
    assert not s["SESSION_COOKIE_SECURE"] and not s["CSRF_COOKIE_SECURE"]
    assert s["SECURE_HSTS_SECONDS"] == 0 and s["SECURE_PROXY_SSL_HEADER"] is None


def test_an_https_public_url_makes_cookies_secure_and_sends_hsts():
    s = settings_of(SECRET_KEY="k", PUBLIC_URL="https://gw.acme.example")
    assert s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    assert s["SECURE_HSTS_SECONDS"] == 31536000 and not s["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    # X-Forwarded-Proto is trusted only when the operator says a proxy sets it.
    assert s["SECURE_PROXY_SSL_HEADER"] is None
    s = settings_of(
        SECRET_KEY="k", SECURE_SSL="true", TRUST_X_FORWARDED_PROTO="true", SECURE_HSTS_INCLUDE_SUBDOMAINS="1"
    )
    assert s["SESSION_COOKIE_SECURE"] and s["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert s["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


# --- upstreams on loopback -------------------------------------------------------------------------


def test_make_run_on_loopback_allows_local_model_servers_and_make_serve_does_not(tmp_path):
    dev = settings_of(GATEWAY_DEV="1", GATEWAY_SECRET_FILE=str(tmp_path / "k"))
    assert dev["GATEWAY_PRIVATE_UPSTREAMS"] == ["127.0.0.0/8", "::1/128"]
    assert settings_of(SECRET_KEY="k")["GATEWAY_PRIVATE_UPSTREAMS"] == []
    # An explicit empty value is the operator's choice, also under `make run`.
    explicit = settings_of(GATEWAY_DEV="1", GATEWAY_SECRET_FILE=str(tmp_path / "k"), GATEWAY_PRIVATE_UPSTREAMS="")
    assert explicit["GATEWAY_PRIVATE_UPSTREAMS"] == []


# --- the port --------------------------------------------------------------------------------------


@pytest.fixture
def busy_port():
    # Like granian: SO_REUSEPORT, which would let a second server share the port silently.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_a_port_in_use_is_refused(busy_port):
    with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{busy_port}.*make run PORT={busy_port + 1}"):
        check_port_free("127.0.0.1", busy_port)
    check_port_free("127.0.0.1", free_port())


def test_make_serve_refuses_a_port_in_use(busy_port):
    result = subprocess.run(
        ["make", "--no-print-directory", "serve", f"PORT={busy_port}"],
        cwd=ROOT,
        env=_env(SECRET_KEY="k" * 50),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr


# --- static files ----------------------------------------------------------------------------------


def test_static_files_are_collected_only_when_a_source_changed(settings, tmp_path):
    from gateway_project.startup import collectstatic_if_needed

    source = tmp_path / "src"
    (source / "js").mkdir(parents=True)
    (source / "js" / "app.js").write_text("// one")
    settings.STATICFILES_DIRS = [source]
    settings.STATIC_ROOT = tmp_path / "collected"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    assert collectstatic_if_needed() is True
    assert (tmp_path / "collected" / "js" / "app.js").read_text() == "// one"
    assert collectstatic_if_needed() is False
    (source / "js" / "app.js").write_text("// two, longer")
    # An edit comes seconds after a collection (collectstatic compares whole-second mtimes).
    later = (source / "js" / "app.js").stat().st_mtime + 5
    os.utime(source / "js" / "app.js", (later, later))
    assert collectstatic_if_needed() is True
    assert (tmp_path / "collected" / "js" / "app.js").read_text() == "// two, longer"
    assert collectstatic_if_needed() is False


# --- the demo seed ---------------------------------------------------------------------------------


def _demo_state(tenant) -> dict:
    from routing.models import ModelDeployment, ProviderCredential
    from tenants.models import VirtualKey

    return {
        "providers": sorted(ProviderCredential.objects.filter(tenant=tenant).values_list("name", "kind", "base_url")),
        "models": sorted(
            ModelDeployment.objects.filter(tenant=tenant).values_list("model_name", "provider__name", "upstream_model")
        ),
        "keys": sorted(VirtualKey.objects.filter(tenant=tenant).values_list("name", "revoked")),
    }


def test_seeding_again_keeps_what_the_user_changed_in_the_demo_tenant(db, settings, monkeypatch):
    from routing.demo import seed_demo
    from routing.models import ProviderCredential
    from routing.services import model_deployments_set, provider_upsert
    from tenants.audit import Actor
    from tenants.models import Tenant
    from tenants.services import virtual_key_create

    settings.GATEWAY_PRIVATE_UPSTREAMS = []
    first = seed_demo()
    assert "+ model gpt-4o-mini" in first and "+ key demo" in first
    demo = Tenant.objects.get(slug="demo")
    user = Actor(label="alice")
    # Alice adds her own provider, routes the demo's gpt-4o-mini to it, adds a model and a key.
    ollama, _ = provider_upsert(
        demo, name="ollama", kind="openai-compatible", base_url="https://ollama.acme.example/v1", actor=user
    )
    model_deployments_set(demo, model_name="gpt-4o-mini", deployments=[(ollama, "llama3")], actor=user)
    model_deployments_set(demo, model_name="llama", deployments=[(ollama, "llama3")], actor=user)
    mock = ProviderCredential.objects.get(tenant=demo, name="mock")
    model_deployments_set(
        demo, model_name="text-embedding-3-small", deployments=[(mock, "mock-embed"), (ollama, "nomic")], actor=user
    )
    virtual_key_create(demo, name="alice-app", actor=user)
    before = _demo_state(demo)

    assert seed_demo() == []
    assert seed_demo() == []
    assert _demo_state(demo) == before


def test_seeding_recreates_only_what_is_missing(db):
    from routing.demo import seed_demo
    from routing.services import model_delete
    from tenants.audit import Actor
    from tenants.models import Tenant

    seed_demo()
    demo = Tenant.objects.get(slug="demo")
    model_delete(demo, model_name="text-embedding-3-small", actor=Actor.cli())
    assert seed_demo() == ["+ model text-embedding-3-small"]


def test_a_demo_key_the_user_revoked_stays_revoked(db):
    from routing.demo import demo_key_secret, seed_demo
    from tenants.audit import Actor
    from tenants.models import VirtualKey, hash_secret
    from tenants.services import virtual_key_revoke

    seed_demo()
    key = VirtualKey.objects.get(key_hash=hash_secret(demo_key_secret()))
    virtual_key_revoke(key.tenant, key=key, actor=Actor.cli())
    seed_demo()
    key.refresh_from_db()
    assert key.revoked
    # The quickstart no longer offers it.
    out = io.StringIO()
    call_command("gateway", "quickstart", stdout=out)
    assert "The demo key was revoked" in out.getvalue() and demo_key_secret() not in out.getvalue()


def test_a_demo_key_from_the_old_shared_secret_is_revoked(db, settings):
    from gateway_project.common.env import LEGACY_DEV_SECRET
    from routing.demo import demo_key_secret, seed_demo
    from tenants.models import VirtualKey, hash_secret

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    real_key = settings.SECRET_KEY
    settings.SECRET_KEY = LEGACY_DEV_SECRET
    seed_demo()  # an install from before per-install keys
    legacy = VirtualKey.objects.get(key_hash=hash_secret(demo_key_secret()))
    settings.SECRET_KEY = real_key
    changes = seed_demo()
    legacy.refresh_from_db()
    assert legacy.revoked
    assert VirtualKey.objects.get(key_hash=hash_secret(demo_key_secret())).is_active
    assert any(line.startswith("~ user demo@example.com password") for line in changes)


@pytest.mark.parametrize(("given", "capped"), [(None, "True"), ("4", "False")])
def test_the_worker_caps_mallocs_arenas_unless_the_operator_did(given, capped):
    """glibc's arenas are capped at import of the ASGI module (a fresh process: once a thread has made
    its arena it stays); an operator's MALLOC_ARENA_MAX is left as set."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if given:
        env["MALLOC_ARENA_MAX"] = given
    code = "from gateway_project.common.malloc import cap_arenas; print(cap_arenas())"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == capped, out.stderr


def test_a_worker_that_only_proxies_never_imports_the_console():
    """The proxy handler resolves /v1/ and /mcp with its own routes first: the console's views (allauth,
    the API, the forms) are imported only when something needs them, here a reverse() of a console page.
    Requests go through the ASGI application, as granian sends them (answered as refusals: no key, no
    route, the wrong method, or 503 before the configuration is loaded)."""
    code = """
import asyncio, sys
import gateway_project.asgi as entry
from django.urls import reverse

async def call(path):
    sent, body = [], [{"type": "http.request", "body": b"", "more_body": False}]
    async def receive():
        if body:
            return body.pop()
        await asyncio.Event().wait()  # the client stays until the answer is sent
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"authorization", b"Bearer sk-gw-nobody")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "scheme": "http", "http_version": "1.1", "root_path": "",
             "asgi": {"version": "3.0"}}
    await entry.application(scope, receive, send)
    return sent[0]["status"]

statuses = [asyncio.run(call(p)) for p in ("/v1/models", "/v1/nowhere", "/mcp/github")]
console = [m for m in ("gateway_project.urls", "allauth.account.views", "tenants.views") if m in sys.modules]
print(all(400 <= s < 500 or s == 503 for s in statuses), console, reverse("account_login"), "gateway_project.urls" in sys.modules)
"""
    env = {**os.environ, "SECRET_KEY": "x"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1:] == ["True [] /accounts/login/ True"], out.stderr[-3000:]
