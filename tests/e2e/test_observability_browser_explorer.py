"""In a real browser against the real server: calls made through the gateway show on the dashboard, the
explorer filters them, the CSV export downloads exactly the filtered rows, and the playground answers with a
short-lived key, shows the answer's latency and cost, and links to its log entry. Set-up as in
tests/e2e/test_console_browser.py."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, wait_for
from tests.helpers.browser import BROWSER_SKIP_REASON, CHROMIUM, CHROMIUM_ARGS, LAYOUT_PROBLEMS_JS

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=BROWSER_SKIP_REASON),
]

SCREENSHOTS = os.environ.get("GATEWAY_TEST_SCREENSHOTS", "")  # a directory, to look at the pages

YAML = """
tenant: acme
name: Acme Corp
providers:
  - {name: mock, kind: mock}
models:
  - name: local
    deployments: [{provider: mock, model: mock-chat}]
"""


def _collect_static_if_changed() -> None:
    """The production settings serve hashed files from the manifest. Build it as `make serve` does, unless
    an earlier browser test of this run already did and no file of ours changed since (saves seconds)."""
    from django.conf import settings as django_settings

    manifest = Path(django_settings.STATIC_ROOT) / "staticfiles.json"
    newest = max(p.stat().st_mtime for p in (ROOT / "static").rglob("*") if p.is_file())
    if manifest.exists() and manifest.stat().st_mtime >= newest:
        return
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True, timeout=120
    )


def test_dashboard_explorer_csv_and_playground(gateway_factory, mint, django_user_model):
    from django.conf import settings as django_settings
    from django.test import Client
    from playwright.sync_api import expect, sync_playwright

    from observability.models import CallLog
    from tenants.config import apply_config
    from tenants.models import Membership, Role

    _collect_static_if_changed()
    acme, _ = apply_config(YAML)
    alice = django_user_model.objects.create_user(username="alice", email="alice@acme.test")
    Membership.objects.create(user=alice, tenant=acme, role=Role.OWNER)
    client = Client()
    client.force_login(alice)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    secret = mint(acme, "backend")
    server = gateway_factory()

    for user in ("u-browser", "someone-else", "someone-else"):
        answer = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "Hello"}], "user": user},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    assert wait_for(lambda: CallLog.objects.filter(tenant=acme).count() == 3, timeout=10)
    wanted = CallLog.objects.get(tenant=acme, end_user="u-browser").request_id

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=server.url, accept_downloads=True)
        context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": server.url}])
        page = context.new_page()

        page.goto("/t/acme/dashboard/")
        expect(page.locator("#stat-requests")).to_have_text("3")
        if SCREENSHOTS:
            page.screenshot(path=f"{SCREENSHOTS}/dashboard.png", full_page=True)
        expect(page.locator("svg.chart").first).to_be_visible()

        page.get_by_role("link", name="Log explorer").first.click()
        expect(page.locator("#log-rows tr.log-row")).to_have_count(3)
        page.fill("#id_user", "u-browser")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#log-rows tr.log-row")).to_have_count(1)
        expect(page.locator("#log-rows")).to_contain_text(wanted)

        with page.expect_download() as download_info:
            page.locator("#export-csv").click()
        expect(page.locator("#export-progress")).to_contain_text("Done: 1 rows exported.")
        path = download_info.value.path()
        rows = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8").read())))
        assert [r["request_id"] for r in rows] == [wanted]
        assert download_info.value.suggested_filename.endswith(".csv")

        # The playground: a message, the answer with its latency and its cost (read from the call log once
        # the row is written), the short-lived key it went out with, and a link to its log entry.
        page.goto("/t/acme/playground/")
        page.fill("#id_message", "Say hello in five words.")
        page.get_by_role("button", name="Send", exact=True).click()
        answer = page.locator(".pg-answer").first
        expect(answer.locator(".pg-content")).to_contain_text("mock", timeout=10_000)
        expect(answer.locator(".pg-latency")).to_contain_text("ms")
        expect(answer.locator(".pg-cost")).to_contain_text("$", timeout=10_000)
        expect(page.locator("#pg-key-note")).to_contain_text("valid until")
        answer.get_by_role("link", name="Log entry").click()
        expect(page.locator("#detail-status")).to_have_text("200")
        if SCREENSHOTS:
            page.screenshot(path=f"{SCREENSHOTS}/detail.png", full_page=True)

        # On a phone, nothing sticks out of these pages (the check of tests/e2e/test_console_browser.py).
        detail = page.url
        page.set_viewport_size({"width": 375, "height": 800})
        problems = []
        for path in ("/t/acme/dashboard/", "/t/acme/logs/explore/", "/t/acme/playground/", detail):
            page.goto(path)
            if SCREENSHOTS:
                page.screenshot(path=f"{SCREENSHOTS}/{path.strip('/').replace('/', '_')[-30:]}.png", full_page=True)
            problems += [f"{path}: {p}" for p in page.evaluate(LAYOUT_PROBLEMS_JS)]
        assert not problems, "\n".join(problems)
        browser.close()
