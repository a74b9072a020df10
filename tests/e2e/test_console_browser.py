"""The main flow in a real browser against the real ASGI server.

Sign up (with the emailed code), add the built-in mock model, create a key, copy it with the copy
button, call the gateway with it, revoke it, and see the next call refused within a second.
Playwright drives Debian's Chromium (.ci/run installs it with apt); without it the test is skipped
and the run ends with a loud warning (see conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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

_STYLED_JS = """
() => [...document.styleSheets].some((s) => (s.href || "").includes("console") && s.cssRules.length > 0)
"""


def _seed_console_world():
    """Alice's tenant with something on every page: long names, spend, budgets, limits, audit entries."""
    from decimal import Decimal

    from billing.models import LimitScope, SpendLedger
    from billing.services import budget_upsert, rate_limit_set
    from gateway_project.common.money import to_pico
    from routing.services import model_deployments_set, provider_upsert
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
    model = "team-alpha/very-long-model-name-for-layout-testing-2026-01-01"
    model_deployments_set(acme, model_name=model, deployments=[(mock, "mock-chat")], actor=actor)
    model_deployments_set(
        acme,
        model_name=model,
        deployments=[(local, "gpt-4o-mini-2024-07-18-with-a-long-suffix"), (mock, "mock-chat")],
        actor=actor,
    )
    key, _ = virtual_key_create(acme, name="production-backend-service-with-a-long-name", actor=actor)
    management_token_create(acme, name="continuous-integration-deploy-token", role=Role.ADMIN, actor=actor)
    budget, _ = budget_upsert(acme, scope="tenant", limit_usd=Decimal("0.0002"), period="day", mode="hard", actor=actor)
    budget_upsert(acme, scope=f"key:{key.name}", limit_usd=Decimal("1234.5"), period="month", mode="soft", actor=actor)
    rate_limit_set(acme, scope=LimitScope.KEY, ref=str(key.id), rpm=600, tpm=1_000_000, max_parallel=8, actor=actor)
    from django.utils import timezone

    SpendLedger.objects.create(
        tenant=acme,
        day=timezone.localdate(),
        virtual_key_id=key.id,
        model=model,
        cost_picodollars=to_pico(Decimal("0.00005")),
    )
    return acme, alice, key, budget, local, model


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
    from django.conf import settings as django_settings
    from django.test import Client
    from django.urls import reverse
    from playwright.sync_api import sync_playwright

    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True, timeout=120
    )
    acme, alice, key, budget, provider, model = _seed_console_world()
    client = Client()
    client.force_login(alice)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    server = gateway_factory()

    def tenant_url(view: str, **kwargs) -> str:
        return reverse(view, kwargs={"slug": acme.slug, **kwargs})

    pages = [
        reverse("home"),
        reverse("tenant-new"),
        tenant_url("tenant-overview"),
        tenant_url("keys"),
        tenant_url("key-detail", key_id=key.id),
        tenant_url("providers"),
        tenant_url("provider-detail", provider_id=provider.id),
        tenant_url("models"),
        tenant_url("model-detail", name=model),
        tenant_url("budgets"),
        tenant_url("budget-detail", budget_id=budget.id),
        tenant_url("limits"),
        tenant_url("spend"),
        tenant_url("members"),
        tenant_url("tokens"),
        tenant_url("audit"),
        tenant_url("tenant-settings"),
        reverse("account_email"),
        reverse("account_change_password"),
    ]
    problems: list[str] = []

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
            for path in pages:
                response = page.goto(path, wait_until="load")
                if response is None or response.status != 200:
                    problems.append(f"{width}px {path}: status {response and response.status}")
                    continue
                if page.url.rstrip("/").endswith("/accounts/login"):
                    problems.append(f"{width}px {path}: redirected to login")
                problems += [f"{width}px {path}: {p}" for p in page.evaluate(LAYOUT_PROBLEMS_JS)]
            # An unknown page answers 404 with the console's look, not the browser's default.
            response = page.goto("/t/acme/no-such-page/", wait_until="load")
            if response is None or response.status != 404:
                problems.append(f"{width}px 404 page: status {response and response.status}")
            if not page.evaluate(_STYLED_JS):
                problems.append(f"{width}px 404 page: the stylesheet did not load")
            problems += [f"{width}px 404 page: {p}" for p in page.evaluate(LAYOUT_PROBLEMS_JS)]
            problems += [f"{width}px asset: {a}" for a in bad_assets]
            if width == WIDTHS[0]:
                _add_and_reorder_a_deployment(page, tenant_url("model-detail", name=model))
            context.close()
        browser.close()
    assert not problems, "\n".join(problems)
