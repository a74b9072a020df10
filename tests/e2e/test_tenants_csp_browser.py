"""Content-Security-Policy in a real browser: the console and the Swagger UI still work under the policy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from tests.helpers import ROOT
from tests.helpers.browser import BROWSER_SKIP_REASON, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.usefixtures("console_defaults")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=BROWSER_SKIP_REASON)
def test_the_console_and_the_swagger_ui_work_under_the_policy_in_a_browser(gateway_factory):
    from playwright.sync_api import expect, sync_playwright

    # The server uses the production static storage: collect (only if changed) as `make serve` does.
    subprocess.run(
        [sys.executable, "manage.py", "gateway", "preflight", "--static-only"], cwd=ROOT, check=True, timeout=300
    )
    server = gateway_factory()
    violations: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(base_url=server.url).new_page()
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)

        page.goto("/api/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(settings.SPECTACULAR_SETTINGS["TITLE"])
        expect(page.locator(".opblock").first).to_be_visible()

        page.goto("/accounts/login/")
        assert page.evaluate("typeof window.htmx") == "object"
        browser.close()
    assert violations == []
