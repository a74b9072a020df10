"""The model editor in a real browser: deployments keep the order they have on screen.

Alice adds a model through "Add a model" with two deployments, the second one from the "Add a
deployment" button, and types no order: the first row is the primary, the second the backup. Then she
types an order on the model page and that order wins. Playwright drives Debian's Chromium (.ci/run
installs it); without it the test is skipped.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import reverse

from routing.models import ModelDeployment
from tests.helpers import ROOT
from tests.helpers.browser import BROWSER_SKIP_REASON, CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.usefixtures("console_defaults"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=BROWSER_SKIP_REASON),
]


def _saved_order(tenant, name: str) -> list[str]:
    rows = ModelDeployment.objects.filter(tenant=tenant, model_name=name).order_by("priority")
    return [row.upstream_model for row in rows]


def test_alice_adds_a_model_and_the_first_row_is_the_primary(world, client_as, gateway_factory):
    from playwright.sync_api import expect, sync_playwright

    # The server uses the production static storage: collect (only if changed) as `make serve` does.
    subprocess.run(
        [sys.executable, "manage.py", "gateway", "preflight", "--static-only"], cwd=ROOT, check=True, timeout=300
    )
    session = client_as(world.alice).cookies[settings.SESSION_COOKIE_NAME].value
    server = gateway_factory()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=server.url, viewport={"width": 1366, "height": 900})
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": server.url}])
        page = context.new_page()

        page.goto(reverse("models", kwargs={"slug": "acme"}))
        page.get_by_text("Add a model", exact=True).click()
        form = page.locator("#model-create-form")
        form.get_by_label("Model name").fill("team-chat")
        form.locator("[name=dep-0-provider]").select_option(label="mock (mock)")
        form.locator("[name=dep-0-model]").fill("typed-first")
        form.get_by_role("button", name="Add a deployment").click()
        form.locator("[name=dep-1-provider]").select_option(label="mock (mock)")
        form.locator("[name=dep-1-model]").fill("typed-second")
        # No order typed: the rows show their place on screen and leave the field empty.
        expect(form.locator("[name=dep-0-ORDER]")).to_have_value("")
        expect(form.locator("[name=dep-1-ORDER]")).to_have_value("")
        expect(form.locator("[name=dep-1-ORDER]")).to_have_attribute("placeholder", "2")
        form.get_by_role("button", name="Add model").click()
        expect(page.locator("#model-create-form .alert-success")).to_have_text("Added team-chat. Keys can call it now.")
        listed = page.locator("#model-rows tr", has_text="team-chat").locator(".badge:not(.badge-warn)")
        expect(listed).to_have_text(["mock / typed-first", "mock / typed-second"])

        # The model page lists them in that order; typing an order on the second row moves it first.
        page.goto(reverse("model-detail", kwargs={"slug": "acme", "name": "team-chat"}))
        expect(page).to_have_title("team-chat · Models · Acme Corp · LLM Gateway")
        expect(page.locator("[name=dep-0-model]")).to_have_value("typed-first")
        expect(page.locator("[name=dep-1-model]")).to_have_value("typed-second")
        page.locator("[name=dep-1-ORDER]").fill("1")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator("#model-edit-form").get_by_role("status")).to_have_text("Saved ✓")
        expect(page.locator("[name=dep-0-model]")).to_have_value("typed-second")
        browser.close()
    # Read after the browser is gone: Playwright's sync API runs an event loop, where the ORM refuses to run.
    assert _saved_order(world.acme, "team-chat") == ["typed-second", "typed-first"]
