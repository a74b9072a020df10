"""The canary sweep: every secret the gateway handles is a unique random value, then we grep for it everywhere.

One run exercises the proxy (success and failure paths, JSON and streams, an upstream that quotes the
provider key back), the management API, every console page, the CLI's export and spend, password
reset mail and the "test connection" probe. Then it reads everything the gateway produced: every
response (status, headers, body; never our own requests), the gateway server's stdout/stderr,
`pg_dump` of the test database, every key and value in the test's Redis DB, decoded sessions,
mail, CLI output and this process's log records, and fails listing each place a canary turned up.

Where a plaintext may legitimately appear: a minted virtual key or management token in the one
response that mints it. Nothing else: provider keys only encrypted, passwords only hashed, key and
token secrets only as sha256 hashes and their stored prefix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import quopri
import re
import secrets
import shutil
import subprocess
import time
from base64 import b64decode
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.helpers import free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WINDOW = 16  # a run of this many characters of a secret's random part counts as a leak (catches truncation)
EMAIL = "alice@acme.example"


# --- canaries and where we look for them -----------------------------------------------------------------


@dataclass
class Canary:
    name: str
    value: str
    # The part of the value that must never appear: all of a value we chose, or what lies beyond the
    # stored prefix (first 16 characters at most) of a secret the gateway generated.
    secret_part: str
    allowed_in: set[str] = field(default_factory=set)  # haystack labels where the full value is expected

    def needles(self) -> list[str]:
        part = self.secret_part
        if len(part) <= WINDOW:
            return [part]
        return [part[i : i + WINDOW] for i in range(len(part) - WINDOW + 1)]


def chosen(name: str, prefix: str) -> Canary:
    core = secrets.token_hex(20)
    return Canary(name, prefix + core, core)


def generated(name: str, value: str, minted_in: str) -> Canary:
    return Canary(name, value, value[16:], {minted_in})


@dataclass
class Sweep:
    haystacks: list[tuple[str, str]] = field(default_factory=list)
    canaries: dict[str, Canary] = field(default_factory=dict)

    def add(self, label: str, text: str) -> None:
        self.haystacks.append((label, text))

    def response(self, label: str, response: httpx.Response, body: str | None = None) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        text = body if body is not None else response.content.decode("utf-8", "replace")
        self.add(f"response {label}", f"HTTP {response.status_code}\n{headers}\n\n{text}")
        return response

    def canary(self, canary: Canary) -> Canary:
        self.canaries[canary.name] = canary
        return canary

    def leaks(self) -> list[str]:
        found = []
        for canary in self.canaries.values():
            needles = canary.needles()
            for label, text in self.haystacks:
                if label in canary.allowed_in and canary.value in text:
                    # Expected exactly here; any other part of the secret elsewhere in it is still checked
                    # through the other haystacks.
                    continue
                hit = next((n for n in needles if n in text), None)
                if hit is not None:
                    found.append(f"{canary.name} in {label}: {_context(text, hit, self.canaries)}")
        return found


def _context(text: str, needle: str, canaries: dict[str, Canary]) -> str:
    at = text.index(needle)
    where = ""
    copy = text.rfind("\nCOPY ", 0, at)
    if copy != -1:  # pg_dump: name the table
        where = text[copy + 1 : text.index("(", copy)].strip() + ": "
    snippet = text[max(0, at - 100) : at + len(needle) + 100]
    for c in canaries.values():
        snippet = snippet.replace(c.value, f"<{c.name}>")
    for c in canaries.values():
        for n in c.needles():
            snippet = snippet.replace(n, f"<part of {c.name}>")
    return where + repr(snippet)


# --- reading the stores ------------------------------------------------------------------------------


def pg_dump_text() -> str:
    db = connection.settings_dict
    binary = shutil.which("pg_dump") or sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))[-1]
    env = {**os.environ, "PGPASSWORD": db["PASSWORD"] or ""}
    command = [str(binary), "--no-owner", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432)]
    command += ["-U", db["USER"], db["NAME"]]
    result = subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)
    return result.stdout.decode("utf-8", "replace")


def redis_text() -> str:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    out: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "hash":
            values = [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _score in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [
                json.dumps({k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}).encode()
                for _id, fields in client.xrange(key)
            ]
        out.append(f"KEY {key.decode('utf-8', 'replace')} ({kind})")
        for value in values:
            out.append(value.decode("utf-8", "replace"))
            out.extend(_kombu_bodies(value))
    return "\n".join(out)


def _kombu_bodies(value: bytes) -> list[str]:
    # Celery messages on the Redis broker carry their body base64-encoded: decode it, or a task argument
    # holding a secret would hide from the grep.
    try:
        message = json.loads(value)
        if isinstance(message, dict) and message.get("properties", {}).get("body_encoding") == "base64":
            return [b64decode(message["body"]).decode("utf-8", "replace")]
    except (ValueError, TypeError, AttributeError, KeyError):
        pass
    return []


def sessions_text() -> str:
    from django.contrib.sessions.models import Session

    return "\n".join(repr(s.get_decoded()) for s in Session.objects.all())


def rows_text(model) -> str:
    return "\n".join(repr(row) for row in model.objects.values())


def cli(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("gateway", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


# --- a person with a browser, through the real server ------------------------------------------------------


class Browser:
    def __init__(self, base_url: str, sweep: Sweep) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.sweep = sweep

    def get(self, path: str, label: str | None = None, **kwargs) -> httpx.Response:
        return self.sweep.response(label or f"GET {path}", self.http.get(path, **kwargs))

    def post(self, path: str, data: dict, label: str | None = None, htmx: bool = False) -> httpx.Response:
        token = self.http.cookies.get("csrftoken")
        if token is None:
            self.http.get(reverse("account_login"))  # sets the cookie
            token = self.http.cookies.get("csrftoken")
        headers = {"X-CSRFToken": token, **({"HX-Request": "true"} if htmx else {})}
        response = self.http.post(path, data={**data, "csrfmiddlewaretoken": token}, headers=headers)
        return self.sweep.response(label or f"POST {path}", response)


def log_in(browser: Browser, password: str, totp_secret: str, wrong_password: str) -> None:
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

    login = reverse("account_login")
    browser.get(login)
    failed = browser.post(login, {"login": EMAIL, "password": wrong_password}, "POST login (wrong password)")
    assert failed.status_code == 200
    response = browser.post(login, {"login": EMAIL, "password": password}, "POST login")
    assert response.status_code == 302 and response.headers["location"] == reverse("mfa_authenticate")
    browser.get(reverse("mfa_authenticate"))
    code = format_hotp_value(hotp_value(totp_secret, int(time.time()) // 30))
    response = browser.post(reverse("mfa_authenticate"), {"code": code}, "POST 2fa code")
    assert response.status_code == 302, response.text
    assert browser.get(reverse("tenant-overview", kwargs={"slug": "acme"})).status_code == 200


def tenant_console_paths(objects: dict[str, object]) -> list[str]:
    """Every console URL under /t/<slug>/, with its arguments filled from this tenant's objects."""
    paths = []

    def walk(resolver, prefix: str = "") -> None:
        for p in resolver.url_patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p, route)
            elif isinstance(p, URLPattern) and route.startswith("t/<slug:slug>/") and p.name:
                names = re.findall(r"<(?:\w+:)?(\w+)>", route)
                missing = [n for n in names if n != "slug" and n not in objects]
                assert not missing, f"the canary sweep cannot fill {missing} for {p.name}: add it to `objects`"
                kwargs = {n: objects[n] for n in names if n != "slug"}
                paths.append(reverse(p.name, kwargs={"slug": "acme", **kwargs}))

    walk(get_resolver())
    return paths


def decoded_log(gateway) -> str:
    return quopri.decodestring(gateway.log_path.read_bytes()).decode("utf-8", "replace")


def sse_body(response: httpx.Response) -> str:
    return "".join(response.iter_text())


# --- the sweep ---------------------------------------------------------------------------------------


def test_no_secret_leaks_anywhere(gateway_factory, quoting_upstream, tmp_path, caplog):
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    from billing.models import Budget
    from observability.models import CallLog
    from routing.models import McpServer, ProviderCredential
    from tenants.models import AuditLog, Invitation, ManagementToken, Membership, VirtualKey

    caplog.set_level(logging.DEBUG)
    # Our own HTTP client and the fake upstream log what they send and receive: not the gateway's records.
    for noisy in ("httpx", "httpcore", "aiohttp"):
        caplog.set_level(logging.WARNING, logger=noisy)
    sweep = Sweep()
    pk_yaml = sweep.canary(chosen("PROVIDER_KEY_YAML", "sk-proj-"))
    pk_api = sweep.canary(chosen("PROVIDER_KEY_API", "sk-proj-"))
    pk_console = sweep.canary(chosen("PROVIDER_KEY_CONSOLE", "sk-proj-"))
    password = sweep.canary(chosen("PASSWORD", "Pw-"))
    wrong_password = sweep.canary(chosen("WRONG_PASSWORD_TRIED", "Pw-"))
    new_password = sweep.canary(chosen("PASSWORD_SET_BY_RESET", "Pw-"))
    totp_value = generate_totp_secret()
    totp = sweep.canary(Canary("TOTP_SECRET", totp_value, totp_value))
    # No provider kind takes an AWS-style secret pair yet: nothing to plant for it.

    # -- the tenant from YAML, with a literal provider key, and Alice from the CLI ------------------------
    dead_port = free_port()  # nothing listens there: the "unreachable upstream" path
    config = tmp_path / "acme.yaml"
    config.write_text(
        "tenant: acme\nname: Acme Corp\nproviders:\n"
        f"  - name: yaml\n    kind: openai-compatible\n    base_url: {quoting_upstream.url()}\n"
        f"    api_key: {pk_yaml.value}\n"
        f"  - name: dead\n    kind: openai-compatible\n    base_url: http://127.0.0.1:{dead_port}/v1\n"
        f"    api_key: {pk_yaml.value}\n"
        "models:\n"
        "  - name: ok-yaml\n    deployments:\n      - provider: yaml\n        model: ok\n"
        "  - name: dead\n    deployments:\n      - provider: dead\n        model: ok\n"
    )
    sweep.add("cli gateway apply", cli("apply", str(config)))
    sweep.add(
        "cli gateway add-member",
        cli("add-member", "--tenant", "acme", "--email", EMAIL, "--role", "owner", "--password", password.value),
    )
    alice = Membership.objects.get(tenant__slug="acme").user
    TOTP.activate(alice, totp.value)

    gateway = gateway_factory(extra_env={"LOG_LEVEL": "DEBUG"})
    browser = Browser(gateway.url, sweep)
    log_in(browser, password.value, totp.value, wrong_password.value)

    # -- a management token from the console ------------------------------------------------------------
    tokens_url = reverse("tokens", kwargs={"slug": "acme"})
    browser.get(tokens_url)
    minted = browser.post(tokens_url, {"name": "ci", "role": "owner"}, "console token mint")
    found = set(re.findall(r"gwm-[A-Za-z0-9_-]{43}", minted.text))
    assert len(found) == 1, f"expected the new token once in the mint page, got {found}"
    token = sweep.canary(generated("MANAGEMENT_TOKEN", found.pop(), "response console token mint"))

    api = httpx.Client(base_url=f"{gateway.url}/api/v1", headers={"Authorization": f"Bearer {token.value}"}, timeout=30)

    def call(method: str, path: str, label: str | None = None, **kwargs) -> httpx.Response:
        return sweep.response(label or f"API {method} {path}", api.request(method, path, **kwargs))

    # -- providers, models, keys, a budget and an invitation through the management API -------------------
    created = call(
        "POST",
        "/providers/",
        json={"name": "main", "kind": "openai-compatible", "base_url": quoting_upstream.url(), "api_key": pk_api.value},
    )
    assert created.status_code == 201, created.text
    rejected = call(
        "POST",
        "/providers/",
        "API POST /providers/ (invalid)",
        json={"name": "bad", "kind": "openai-compatible", "base_url": "nope", "api_key": pk_api.value},
    )
    assert rejected.status_code == 400
    main_id = created.json()["id"]
    # Setting the key again (the update path writes the audit log and announces a config change).
    changed = call(
        "PATCH", f"/providers/{main_id}/", json={"api_key": pk_api.value, "base_url": quoting_upstream.url()}
    )
    assert changed.status_code == 200, changed.text
    models = {
        "gpt-4o-mini": "ok",
        "quote-401": "quote-401",
        "quote-stream": "quote-stream",
        "quote-text": "quote-text",
        "embed": "ok-embed",
        "embed-quote": "quote-401",
    }
    for name, upstream_model in models.items():
        response = call(
            "POST", "/models/", json={"name": name, "deployments": [{"provider": "main", "model": upstream_model}]}
        )
        assert response.status_code == 201, response.text

    minted = call("POST", "/keys/", "api key mint", json={"name": "app"})
    assert minted.status_code == 201, minted.text
    key = sweep.canary(generated("VIRTUAL_KEY", minted.json()["secret"], "response api key mint"))
    minted = call("POST", "/keys/", "api key mint (to rotate)", json={"name": "doomed"})
    doomed_id = minted.json()["id"]
    rotated_away = sweep.canary(
        generated("VIRTUAL_KEY_ROTATED_AWAY", minted.json()["secret"], "response api key mint (to rotate)")
    )
    rotated = call("POST", f"/keys/{doomed_id}/rotate/", "api key rotate")
    assert rotated.status_code == 200, rotated.text
    revoked = sweep.canary(generated("VIRTUAL_KEY_REVOKED", rotated.json()["secret"], "response api key rotate"))
    assert call("POST", f"/keys/{doomed_id}/revoke/").status_code < 300
    budget = call("POST", "/budgets/", json={"scope": "tenant", "limit_usd": "100", "period": "month", "mode": "soft"})
    assert budget.status_code in (200, 201), budget.text
    invited = call("POST", "/members/", json={"email": "erin@acme.example", "role": "member"})  # sends a mail
    assert invited.status_code in (200, 201), invited.text

    # -- the console: a provider with a key, a bad form, a key minted on the page ---------------------------
    providers_url = reverse("providers", kwargs={"slug": "acme"})
    browser.get(providers_url)
    response = browser.post(
        providers_url,
        {
            "name": "probe",
            "kind": "openai-compatible",
            "base_url": quoting_upstream.url("/quote"),
            "api_key": pk_console.value,
        },
        "console provider create",
    )
    assert response.status_code == 302, response.text
    response = browser.post(
        providers_url,
        {"name": "bad2", "kind": "openai-compatible", "base_url": "nope", "api_key": pk_console.value},
        "console provider create (invalid)",
    )
    assert response.status_code == 200
    # A form shown again with an error keeps what this user just typed (so they need not paste the key
    # again); that page goes to them alone and is never cached. Anywhere else the key is a leak.
    assert pk_console.value in response.text
    assert "no-store" in response.headers.get("cache-control", "")
    pk_console.allowed_in.add("response console provider create (invalid)")
    probe = ProviderCredential.objects.get(tenant__slug="acme", name="probe")
    edited = browser.post(
        reverse("provider-detail", kwargs={"slug": "acme", "provider_id": probe.id}),
        {"kind": "openai-compatible", "base_url": quoting_upstream.url("/quote"), "api_key": pk_console.value},
        "console provider edit",
    )
    assert edited.status_code in (200, 302), edited.text
    keys_url = reverse("keys", kwargs={"slug": "acme"})
    minted = browser.post(keys_url, {"name": "notebook"}, "console key mint")
    found = set(re.findall(r"sk-gw-[A-Za-z0-9_-]{43}", minted.text))
    assert len(found) == 1, f"expected the new key once in the mint page, got {found}"
    sweep.canary(generated("VIRTUAL_KEY_CONSOLE", found.pop(), "response console key mint"))

    # -- the console: an MCP server with a bearer token, and its test connection ----------------------------
    mcp_bearer = sweep.canary(chosen("MCP_BEARER_CONSOLE", "mcp-"))
    response = browser.post(
        reverse("mcp-servers", kwargs={"slug": "acme"}),
        {
            "name": "tracker",
            "url": quoting_upstream.url() + "/chat/completions",
            "transport": "streamable_http",
            "bearer": mcp_bearer.value,
            "timeout_s": "5",
        },
        "console mcp server create",
    )
    assert response.status_code == 302, response.text
    mcp_server = McpServer.objects.get(tenant__slug="acme", name="tracker")
    mcp_test = reverse("mcp-server-test", kwargs={"slug": "acme", "server_id": mcp_server.id})
    browser.post(mcp_test, {}, "console mcp server test")
    browser.post(mcp_test, {}, "console mcp server test (htmx)", htmx=True)

    # -- "test connection", from the API and the console, for every provider ------------------------------
    providers = {p.name: p for p in ProviderCredential.objects.filter(tenant__slug="acme")}
    for provider in providers.values():
        call("POST", f"/providers/{provider.id}/test/", f"API provider test {provider.name}")
        browser.post(
            reverse("provider-test", kwargs={"slug": "acme", "provider_id": provider.id}),
            {},
            f"console provider test {provider.name}",
        )
        browser.post(
            reverse("provider-test", kwargs={"slug": "acme", "provider_id": provider.id}),
            {},
            f"console provider test {provider.name} (htmx)",
            htmx=True,
        )

    # -- the proxy: success and failure paths ------------------------------------------------------------
    proxy = httpx.Client(base_url=f"{gateway.url}/v1", headers={"Authorization": f"Bearer {key.value}"}, timeout=30)
    request_ids: list[str] = []
    statuses: dict[str, int] = {}

    def chat(model: str, *, stream: bool = False) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
        label = f"proxy chat {model}{' stream' if stream else ''}"
        with proxy.stream("POST", "/chat/completions", json=body) as response:
            sweep.response(label, response, sse_body(response))
        statuses[label] = response.status_code
        request_ids.append(response.headers["x-request-id"])

    for model in ("gpt-4o-mini", "ok-yaml", "quote-401", "quote-text", "dead"):
        chat(model)
        chat(model, stream=True)
    chat("quote-stream", stream=True)
    for model in ("embed", "embed-quote"):
        response = sweep.response(
            f"proxy embeddings {model}", proxy.post("/embeddings", json={"model": model, "input": "x"})
        )
        statuses[f"proxy embeddings {model}"] = response.status_code
        request_ids.append(response.headers["x-request-id"])
    sweep.response("proxy models", proxy.get("/models"))
    sweep.response("proxy model", proxy.get("/models/gpt-4o-mini"))
    sweep.response("proxy unknown model", proxy.get("/models/nope"))
    sweep.response("proxy bad json", proxy.post("/chat/completions", content=b"{nope"))

    # -- personal data in every field a client can fill (issue 19): with a policy that pseudonymizes
    # emails and the prompt cache on, the planted address reaches no store, log or cache entry.
    pii_core = secrets.token_hex(12)
    pii = sweep.canary(Canary("PII_EMAIL", f"pii.{pii_core}@canary.example", pii_core))
    assert call("PUT", "/policies/pii/", json={"pii": {"detectors": {"email": "pseudonymize"}}}).status_code == 200
    assert call("PUT", "/policies/cache/", json={"cache": {"enabled": True, "ttl_s": 600}}).status_code == 200
    time.sleep(1.5)  # proxies pick up a saved policy within a second
    planted = {
        "model": "gpt-4o-mini",
        "user": pii.value,
        "metadata": {"customer": pii.value},
        "stop": [pii.value],
        "messages": [
            {"role": "system", "content": f"Customer: {pii.value}"},
            {
                "role": "user",
                "name": pii.value,
                "content": [
                    {"type": "text", "text": f"Mail {pii.value}"},
                    {"type": "image_url", "image_url": {"url": f"https://img.example/?to={pii.value}"}},
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "send",
                    "description": f"Sends to {pii.value}",
                    "parameters": {
                        "type": "object",
                        "properties": {"to": {"type": "string", "description": pii.value}},
                    },
                },
            }
        ],
    }
    for stream in (False, True):
        with proxy.stream("POST", "/chat/completions", json={**planted, "stream": stream}) as response:
            sweep.response(f"proxy chat with personal data{' stream' if stream else ''}", response, sse_body(response))
        assert response.status_code == 200
        request_ids.append(response.headers["x-request-id"])
    for name, old in (("rotated-away", rotated_away), ("revoked", revoked)):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {old.value}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        )
        sweep.response(f"proxy with {name} key", response)
        assert response.status_code == 401
    assert statuses["proxy chat gpt-4o-mini"] == 200 and statuses["proxy chat gpt-4o-mini stream"] == 200
    assert statuses["proxy chat ok-yaml"] == 200 and statuses["proxy embeddings embed"] == 200
    assert statuses["proxy chat quote-401"] >= 400 and statuses["proxy embeddings embed-quote"] >= 400
    # The sweep means something only if the upstream really received the planted provider keys.
    assert {pk_yaml.value, pk_api.value, pk_console.value} <= set(quoting_upstream.keys_seen)

    # -- the management API's reads, and every console page ---------------------------------------------------
    app_key = VirtualKey.objects.get(tenant__slug="acme", name="app")
    budget = Budget.objects.filter(tenant__slug="acme").first()
    for path in (
        "/keys/",
        f"/keys/{app_key.id}/",
        "/providers/",
        *(f"/providers/{p.id}/" for p in providers.values()),
        "/models/",
        "/models/gpt-4o-mini/",
        "/audit/",
        "/budgets/",
        "/spend/",
        "/members/",
        "/invitations/",
    ):
        call("GET", path)
    # A call log row and the month's invoice (built from the ledger) for the log and invoice pages.
    from billing.invoicing.services import invoice_for_month, local_today
    from tenants.models import Tenant

    assert wait_for(lambda: CallLog.objects.filter(request_id__in=request_ids).exists(), timeout=15)
    log = CallLog.objects.filter(request_id__in=request_ids).order_by("id").first()
    acme = Tenant.objects.get(slug="acme")
    invoice = invoice_for_month(acme, local_today(acme).replace(day=1))
    objects = {
        "invoice_id": invoice.id,
        "log_id": log.id,
        "request_id": log.request_id,
        "key_id": app_key.id,
        "provider_id": providers["main"].id,
        "server_id": mcp_server.id,
        "name": "quote-401",
        "run": "no-such-run",  # an evaluator back-fill's progress: none runs here
        "budget_id": budget.id,
        "membership_id": Membership.objects.get(user=alice).id,
        "invitation_id": Invitation.objects.filter(tenant__slug="acme").first().id,
        "token_id": ManagementToken.objects.get(tenant__slug="acme", name="ci").id,
    }
    pages = tenant_console_paths(objects)
    pages += [
        reverse(n, kwargs={"slug": "acme", "provider_id": p.id})
        for p in providers.values()
        for n in ("provider-detail",)
    ]
    pages += [
        "/",
        "/tenants/new/",
        reverse("account_email"),
        reverse("account_change_password"),
        reverse("mfa_index"),
        "/api/schema/",
        "/api/docs/",
        "/admin/",
    ]
    for page in pages:
        browser.get(page)
        browser.get(page, f"GET {page} (htmx)", headers={"HX-Request": "true"})

    # -- passwords: a failed change, then a reset by mail that sets a new one -------------------------------
    browser.post(
        reverse("account_change_password"),
        {"oldpassword": password.value, "password1": new_password.value, "password2": new_password.value + "x"},
        "POST password change (mismatch)",
    )
    anonymous = Browser(gateway.url, sweep)
    anonymous.get(reverse("account_reset_password"), "GET password reset (anonymous)")
    anonymous.post(reverse("account_reset_password"), {"email": EMAIL}, "POST password reset")
    assert wait_for(lambda: "/accounts/password/reset/key/" in gateway.log(), timeout=10), "no reset mail in the log"
    link = re.findall(r"https?://[^/\s]+(/accounts/password/reset/key/\S+/)", decoded_log(gateway))[-1]
    response = anonymous.get(link, "GET reset link")
    set_url = response.headers.get("location", link)
    anonymous.get(set_url, "GET reset form")
    response = anonymous.post(set_url, {"password1": new_password.value, "password2": new_password.value}, "POST reset")
    assert response.status_code == 302, response.text

    # -- the CLI -----------------------------------------------------------------------------------------
    sweep.add("cli gateway export", cli("export", "--tenant", "acme"))
    sweep.add("cli gateway spend --json", cli("spend", "--tenant", "acme", "--json"))

    # -- everything the gateway wrote: logs flushed, server stopped, then read the stores ----------------------
    assert wait_for(lambda: CallLog.objects.filter(request_id__in=request_ids).count() == len(request_ids), timeout=15)
    gateway.stop()  # a graceful stop flushes whatever is still buffered
    sweep.add("gateway server log", gateway.log())
    # Mail printed by the console backend is quoted-printable: soft line breaks would split a secret.
    sweep.add("gateway server log (quoted-printable decoded)", decoded_log(gateway))
    dump = pg_dump_text()
    assert all(request_id in dump for request_id in request_ids), "the call logs are not all in the dump"
    sweep.add("pg_dump", dump)
    sweep.add("redis", redis_text())
    sweep.add("sessions (decoded)", sessions_text())
    sweep.add("CallLog rows", rows_text(CallLog))
    sweep.add("AuditLog rows", rows_text(AuditLog))
    sweep.add("mail outbox (this process)", "\n".join(f"{m.subject}\n{m.body}\n{m.alternatives}" for m in mail.outbox))
    # This process's own records, less the HTTP client's traces of the requests this test sent.
    own = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "aiohttp"))]
    sweep.add("this process's log records", "\n".join(f"{r.name} {r.getMessage()}" for r in own))

    # Sanity: each minted secret was found where it was minted, so the grep does see them.
    for canary in sweep.canaries.values():
        for label in canary.allowed_in:
            assert any(lbl == label and canary.value in text for lbl, text in sweep.haystacks), (canary.name, label)

    leaks = sweep.leaks()
    if leaks:
        pytest.fail(f"{len(leaks)} leak(s) of canary secrets:\n" + "\n".join(leaks), pytrace=False)
