"""The main flow in a real browser against the real ASGI server.

Sign up (with the emailed code), add the built-in mock model, create a key, copy it with the copy
button, call the gateway with it, revoke it, and see the next call refused within a second.
Then every console page, on a laptop (1366 px) and a phone (375 px), with a screenshot of each (in the
test's tmp_path, and in $GATEWAY_SCREENSHOTS_DIR when set): nothing cut off, hidden or unlabeled
(tests/helpers/browser.py says what counts). Playwright drives Debian's Chromium (.ci/run installs it with apt); without it the test is skipped
and the run ends with a loud warning (see conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import httpx
import pytest
from django.utils import timezone
from django.utils.text import slugify

from tests.helpers import ROOT, wait_for
from tests.helpers.browser import BROWSER_SKIP_REASON, CHROMIUM, CHROMIUM_ARGS, LAYOUT_PROBLEMS_JS

pytestmark = [
    pytest.mark.usefixtures("console_defaults"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=BROWSER_SKIP_REASON),
]


def _verification_code(mail_dir: Path, email: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            if f"To: {email}" in text:
                match = re.search(r"^\s*([A-Z0-9]{3,}(?:-[A-Z0-9]{3,})*)\s*$", text.split("\n\n", 1)[1], re.M)
                if match:
                    return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no verification email for {email} in {mail_dir}")


def test_sign_up_create_copy_call_revoke_refused(gateway_factory, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    # Production settings serve hashed static files from the manifest, so build it as `make serve` does
    # (in a subprocess: the test settings swap the static storage for a plain one).
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True, timeout=120
    )
    mail_dir = tmp_path / "mail"
    server = gateway_factory(
        extra_env={
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(mail_dir),
        }
    )
    email = "grace@hopper.example"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=server.url)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm asks before revoking

        # Sign up, then type the code from the email.
        page.goto("/")
        page.get_by_role("link", name="Sign up", exact=True).click()
        page.fill("input[name=email]", email)
        page.fill("input[name=password1]", "correct horse battery staple")
        page.fill("input[name=password2]", "correct horse battery staple")
        page.get_by_role("button", name="Sign Up").click()
        page.fill("input[name=code]", _verification_code(mail_dir, email))
        page.get_by_role("button", name="Confirm").click()
        expect(page).to_have_url(re.compile(r"/t/grace/$"))
        expect(page.get_by_role("heading", name="Get started")).to_be_visible()

        # An empty tenant offers the built-in mock provider, then lands on the keys page.
        page.get_by_role("button", name="Try the built-in mock instead").click()
        expect(page).to_have_url(re.compile(r"/t/grace/keys/$"))

        # Create a key (htmx: no page load) and copy its secret with the button.
        page.fill("#id_name", "my first key")
        page.get_by_role("button", name="Create key").click()
        secret_box = page.get_by_test_id("new-secret")
        expect(secret_box).to_be_visible()
        secret = secret_box.inner_text().strip()
        assert secret.startswith("sk-gw-")
        copy = page.locator("#secret-reveal button[data-copy]")
        copy.click()
        expect(copy).to_have_text("Copied ✓")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == secret
        row = page.locator("#key-rows tr", has_text="my first key")
        expect(row).to_be_visible()  # the list reloaded itself on the keys-changed event

        def chat() -> httpx.Response:
            return httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "mock-chat", "messages": [{"role": "user", "content": "Hello"}]},
                headers={"Authorization": f"Bearer {copied}"},
                timeout=10,
            )

        answer = chat()
        assert answer.status_code == 200, answer.text
        assert "mock model answering" in answer.json()["choices"][0]["message"]["content"]

        row.get_by_role("button", name="Revoke").click()
        expect(row.locator(".badge")).to_have_text("revoked")
        revoked_at = time.monotonic()
        assert wait_for(lambda: chat().status_code == 401, timeout=1.0)
        assert time.monotonic() - revoked_at < 1.5
        browser.close()


# --- Every console page, on a laptop and on a phone -------------------------------------------------

WIDTHS = (1366, 375)
# Tenant URLs that are no page to look at: downloads, a redirect out of the console, and what forms and
# buttons post to. Every other tenant URL must be in the walk (it checks this at the end).
NOT_PAGES = {
    "tenant-export",  # YAML download
    "log-export",  # CSV or JSON lines download
    "billing-invoice-csv",
    "billing-invoice-pdf",
    "billing-stripe-portal",  # a redirect to Stripe
    "playground-cost",  # an answer's cost, a fragment of the playground page
    "evaluator-backfill-progress",  # a back-fill's progress, a fragment the evaluators page polls
    # POST only
    "key-revoke",
    "key-rotate",
    "key-limits",
    "member-role",
    "member-remove",
    "invitation-revoke",
    "token-revoke",
    "tenant-delete",
    "starter",
    "provider-delete",
    "provider-test",
    "mcp-server-delete",
    "mcp-server-test",
    "model-delete",
    "model-route",
    "policy-cache",
    "policy-preview",
    "guardrail-preview",
    "guardrail-delete",
    "budget-outage-mode",
    "budget-delete",
    "playground-send",
    "evaluator-delete",
    "evaluator-preview",
    "evaluator-backfill",
    "billing-invoice-void",
    "billing-invoice-finalize",
}
# A directory to keep the walk's screenshots in (<width>-<page>.png), besides the test's tmp_path.
SCREENSHOTS_ENV = "GATEWAY_SCREENSHOTS_DIR"

_STYLED_JS = """
() => [...document.styleSheets].some((s) => (s.href || "").includes("console") && s.cssRules.length > 0)
"""

# Long values, as API clients send them: they wrap inside their cell rather than push columns away.
END_USER = "customer-account-0042@subsidiary.very-long-company-domain.example"
TAGS = ["team:platform-infrastructure", "feature:customer-support-summaries", "experiment-2026-q1"]
EVALUATOR = "answer-is-valid-json-for-the-customer-support-summaries"
GUARDRAIL = "no-secrets-of-the-customer-support-summaries-team"


@dataclass
class ConsoleWorld:
    tenant: Any
    owner: Any
    key: Any
    budget: Any
    provider: Any
    mcp_server: Any
    model: str
    log: Any  # a call with upstream attempts, an end user and tags


def _seed_console_world() -> ConsoleWorld:
    """Alice's tenant with something on every page: long names, spend, budgets, limits, audit entries,
    an A/B split, a routing rule, and calls with end users, tags, errors and retries."""
    from billing.models import LimitScope, SpendLedger
    from billing.services import budget_upsert, rate_limit_set
    from gateway_project.common.money import to_pico
    from observability.evaluators import evaluators_set
    from routing.mcp_servers import mcp_server_upsert
    from routing.policies.services import tenant_guardrails_set
    from routing.services import model_deployments_set, model_routes_set, provider_upsert, route_rules_set
    from tenants.audit import Actor
    from tenants.models import Membership, Role, Tenant
    from tenants.services import management_token_create, virtual_key_create
    from tests.helpers.people import make_user

    acme = Tenant.objects.create(slug="acme", name="Acme Corporation International Holdings")
    alice = make_user("alice.longname-for-layout@acme-corporation.example")
    Membership.objects.create(tenant=acme, user=alice, role=Role.OWNER)
    erin = make_user("erin@acme.example")
    Membership.objects.create(tenant=acme, user=erin, role=Role.MEMBER)
    actor = Actor(user=alice)
    mock, _ = provider_upsert(acme, name="mock", kind="mock", actor=actor)
    local, _ = provider_upsert(
        acme,
        name="openai-compatible-production-eu-west",
        kind="openai-compatible",
        base_url="http://127.0.0.1:9/v1/some/very/long/path/for/the/layout/check",
        api_key="sk-upstream-secret-for-layout-0001",
        actor=actor,
    )
    mcp_server, _ = mcp_server_upsert(
        acme,
        name="github-enterprise-issues-and-pull-requests",
        url="http://127.0.0.1:9/mcp/some/very/long/path/for/the/layout/check",
        bearer="mcp-bearer-secret-for-layout-0001",
        headers={"X-Organization-Identifier-For-Layout": "acme"},
        rpm=600,
        actor=actor,
    )
    model = "team-alpha/very-long-model-name-for-layout-testing-2026-01-01"
    variant = "team-beta/candidate-model-for-the-ab-comparison-2026-02"
    model_deployments_set(acme, model_name=model, deployments=[(mock, "mock-chat")], actor=actor)
    model_deployments_set(
        acme,
        model_name=model,
        deployments=[(local, "gpt-4o-mini-2024-07-18-with-a-long-suffix"), (mock, "mock-chat")],
        actor=actor,
    )
    model_deployments_set(acme, model_name=variant, deployments=[(mock, "mock-chat")], actor=actor)
    split = {"model": variant, "percent": 20}
    model_routes_set(acme, routes={model: {"fallbacks": [variant], "split": split}}, actor=actor)
    route_rules_set(acme, rules=[{"if": {"tags": TAGS[-1:], "user": [END_USER]}, "route": variant}], actor=actor)
    key, _ = virtual_key_create(acme, name="production-backend-service-with-a-long-name", actor=actor)
    management_token_create(acme, name="continuous-integration-deploy-token", role=Role.ADMIN, actor=actor)
    budget, _ = budget_upsert(acme, scope="tenant", limit_usd=Decimal("0.0002"), period="day", mode="hard", actor=actor)
    budget_upsert(acme, scope=f"key:{key.name}", limit_usd=Decimal("1234.5"), period="month", mode="soft", actor=actor)
    rate_limit_set(acme, scope=LimitScope.KEY, ref=str(key.id), rpm=600, tpm=1_000_000, max_parallel=8, actor=actor)
    SpendLedger.objects.create(
        tenant=acme,
        day=timezone.localdate(),
        virtual_key_id=key.id,
        model=model,
        cost_picodollars=to_pico(Decimal("0.00005")),
    )
    log = _seed_calls(acme, key, model=model, variant=variant)
    rule = {
        "name": EVALUATOR,
        "kind": "json_valid",
        "score": "summary_is_json",
        "model": "",
        "prompt": "",
        "params": {},
    }
    evaluators_set(
        acme, [{**rule, "models": [model], "variants": [], "keys": [], "tags": TAGS, "sample": 0.25}], actor=actor
    )
    words = ["project falcon", "customer-account-0042@subsidiary.very-long-company-domain.example"]
    check = {"name": GUARDRAIL, "check": "keywords", "on": "both", "words": words, "applies_to": {"tags": TAGS}}
    tenant_guardrails_set(acme, guardrails=[check, {"name": "pi", "check": "prompt_injection"}], actor=actor)
    return ConsoleWorld(
        tenant=acme,
        owner=alice,
        key=key,
        budget=budget,
        provider=local,
        mcp_server=mcp_server,
        model=model,
        log=log,
    )


def _seed_calls(tenant, key, *, model: str, variant: str):
    """Six calls of the last half hour, stored as the gateway stores them (so rollups and ledger follow).

    Returns the newest, which has an end user, tags and two upstream attempts."""
    from observability.logbuffer import DatabaseSink
    from observability.models import CallLog
    from routing.models import ModelDeployment

    deployment = ModelDeployment.objects.filter(tenant=tenant, model_name=model).order_by("id").first()
    now = timezone.now()
    records = []
    for i in range(6):
        failed = i == 1
        tokens = (1200 + i, None if failed else 345)
        records.append(
            {
                "created_at": now - timedelta(minutes=5 * i + 1),
                "tenant_id": tenant.id,
                "virtual_key_id": key.id,
                "request_id": f"req_01JKQ8ZC7W3R5T9Y1B4N6M8P0{i}",
                "endpoint": "chat/completions",
                "requested_model": model,
                "route": variant if i == 2 else "",
                "variant": variant if i % 3 == 0 else "",
                "deployment_id": deployment.id,
                "provider": deployment.provider.name,
                "upstream_model": deployment.upstream_model,
                "stream": i % 2 == 0,
                "status_code": 502 if failed else 200,
                "latency_ms": 840.0 + 97 * i,
                "ttfb_ms": None if failed else 212.0 + 13 * i,
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "total_tokens": tokens[0] + (tokens[1] or 0),
                "error_type": "upstream_unavailable" if failed else "",
                "error_message": "every deployment failed: connection refused (retried twice)" if failed else "",
                "end_user": END_USER if i < 4 else "",
                "tags": TAGS if i < 3 else TAGS[:1],
                "attempts": [
                    {
                        "provider": deployment.provider.name,
                        "model": deployment.upstream_model,
                        "status": 502,
                        "latency_ms": 400.0,
                        "error": "upstream_unavailable: connection refused by 127.0.0.1:9",
                    },
                    {"provider": "mock", "model": "mock-chat", "status": 502 if failed else 200, "latency_ms": 12.0},
                ],
                "cost_picodollars": None if failed else 123_456_789 * (i + 1),
                "cost_estimated": False,
                "client_disconnected": False,
                "day": timezone.localdate(),
            }
        )
    DatabaseSink().write(records)
    return CallLog.objects.get(tenant=tenant, request_id=records[0]["request_id"])


def _console_pages(world: ConsoleWorld) -> list[str]:
    """Every page of the console: each tenant URL but NOT_PAGES, and the account's pages."""
    from django.urls import reverse

    def tenant_url(view: str, **kwargs) -> str:
        return reverse(view, kwargs={"slug": world.tenant.slug, **kwargs})

    key, log = world.key.id, world.log
    return [
        reverse("home"),
        reverse("tenant-new"),
        tenant_url("tenant-overview"),
        tenant_url("keys"),
        tenant_url("key-detail", key_id=key),
        tenant_url("key-usage", key_id=key),
        tenant_url("key-policy", key_id=key),
        tenant_url("providers"),
        tenant_url("provider-detail", provider_id=world.provider.id),
        tenant_url("mcp-servers"),
        tenant_url("mcp-server-detail", server_id=world.mcp_server.id),
        tenant_url("models"),
        tenant_url("model-detail", name=world.model),
        tenant_url("routing-ab"),
        tenant_url("routing-ab") + "?" + urlencode({"model": world.model}),
        tenant_url("routing-health"),
        tenant_url("route-rules"),
        tenant_url("routing-simulate"),
        tenant_url("policies"),
        tenant_url("guardrails"),
        tenant_url("guardrail-edit", name=GUARDRAIL),
        tenant_url("budgets"),
        tenant_url("budget-detail", budget_id=world.budget.id),
        tenant_url("limits"),
        tenant_url("spend"),
        tenant_url("spend-usage"),
        tenant_url("billing"),
        tenant_url("dashboard"),
        tenant_url("logs-live"),
        tenant_url("log-explorer"),
        tenant_url("log-detail", log_id=log.id),
        tenant_url("log-by-request", request_id=log.request_id),  # redirects to the call's page
        tenant_url("playground"),
        tenant_url("evaluators"),
        tenant_url("evaluator-edit", name=EVALUATOR),
        tenant_url("members"),
        tenant_url("tokens"),
        tenant_url("audit"),
        tenant_url("tenant-settings"),
        reverse("account_email"),
        reverse("account_change_password"),
        reverse("mfa_index"),
    ]


def _walk_coverage(walked: list[str]) -> list[str]:
    """Tenant URLs neither walked nor in NOT_PAGES (a new page must join the walk), and stale NOT_PAGES."""
    from django.urls import URLPattern, URLResolver, get_resolver, resolve

    def names(resolver, prefix: str = "") -> set[str]:
        found = set()
        for p in resolver.url_patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                found |= names(p, route)
            elif isinstance(p, URLPattern) and route.startswith("t/<slug:slug>/") and p.name:
                found.add(p.name)
        return found

    tenant_urls = names(get_resolver())
    unwalked = tenant_urls - NOT_PAGES - {resolve(path.split("?")[0]).url_name for path in walked}
    return [f"tenant page {name!r} is not walked" for name in sorted(unwalked)] + [
        f"NOT_PAGES names {name!r}, which is no tenant URL" for name in sorted(NOT_PAGES - tenant_urls)
    ]


def _screenshot_name(width: int, path: str) -> str:
    return f"{width}-{slugify(re.sub(r'[/?=&]+', ' ', unquote(path))) or 'home'}.png"


def _add_and_reorder_a_deployment(page, path: str) -> None:
    """The model editor: "Add a deployment" adds a row in the browser; one save stores rows and order."""
    from playwright.sync_api import expect

    page.goto(path)
    rows = page.locator("[data-formset-row]")
    before = rows.count()  # two deployments and the blank row
    page.get_by_role("button", name="Add a deployment").click()
    expect(rows).to_have_count(before + 1)
    page.select_option(f"[name=dep-{before}-provider]", label="mock (mock)")
    page.fill(f"[name=dep-{before}-model]", "added-in-the-browser")
    page.fill(f"[name=dep-{before}-ORDER]", "0")  # first
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Saved ✓")
    first = page.locator("[name=dep-0-model]")
    expect(first).to_have_value("added-in-the-browser")


def test_every_console_page_fits_phones_and_laptops(gateway_factory, tmp_path):
    """Each page at both widths: nothing cut off or hidden (LAYOUT_PROBLEMS_JS), and a screenshot."""
    from django.conf import settings as django_settings
    from django.test import Client
    from django.urls import reverse
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True, timeout=120
    )
    world = _seed_console_world()
    client = Client()
    client.force_login(world.owner)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    server = gateway_factory()
    pages = _console_pages(world)
    screens = tmp_path / "screens"
    screens.mkdir()
    problems = _walk_coverage(pages)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for width in WIDTHS:
            context = browser.new_context(base_url=server.url, viewport={"width": width, "height": 800})
            context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": server.url}])
            page = context.new_page()
            bad_assets: list[str] = []
            # ERR_ABORTED is the browser dropping a request because the page moved on (the favicon is
            # fetched after "load"); a missing or broken asset still shows up as a failed response below.
            page.on(
                "requestfailed",
                lambda r, sink=bad_assets: (
                    sink.append(f"{r.url} failed: {r.failure}") if "ERR_ABORTED" not in (r.failure or "") else None
                ),
            )
            page.on(
                "response",
                lambda response, sink=bad_assets: (
                    sink.append(f"{response.url} answered {response.status}")
                    if response.status >= 400 and response.request.resource_type != "document"
                    else None
                ),
            )
            for path in [*pages, "/t/acme/no-such-page/"]:
                response = page.goto(path, wait_until="load")
                try:  # panels that load themselves with htmx (usage, health, simulator, A/B)
                    page.wait_for_load_state("networkidle", timeout=5000)
                except PlaywrightError:
                    pass
                page.screenshot(path=screens / _screenshot_name(width, path), full_page=True)
                status = response and response.status
                if path.endswith("/no-such-page/"):
                    # An unknown page answers 404 with the console's look, not the browser's default.
                    if status != 404:
                        problems.append(f"{width}px 404 page: status {status}")
                    if not page.evaluate(_STYLED_JS):
                        problems.append(f"{width}px 404 page: the stylesheet did not load")
                elif status != 200:
                    problems.append(f"{width}px {path}: status {status}")
                    continue
                if page.url.rstrip("/").endswith("/accounts/login"):
                    problems.append(f"{width}px {path}: redirected to login")
                problems += [f"{width}px {path}: {p}" for p in page.evaluate(LAYOUT_PROBLEMS_JS)]
            problems += [f"{width}px asset: {a}" for a in bad_assets]
            if width == WIDTHS[0]:
                editor = reverse("model-detail", kwargs={"slug": world.tenant.slug, "name": world.model})
                _add_and_reorder_a_deployment(page, editor)
            context.close()
        browser.close()
    if os.environ.get(SCREENSHOTS_ENV):
        shutil.copytree(screens, os.environ[SCREENSHOTS_ENV], dirs_exist_ok=True)
    assert not problems, "\n".join(problems)
