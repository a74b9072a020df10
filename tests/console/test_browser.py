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

from tests.conftest import ROOT, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_SKIP_REASON = f"BROWSER TESTS SKIPPED: no Chromium at {CHROMIUM} (install it with `apt-get install chromium`)"

pytestmark = [
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
