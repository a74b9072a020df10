"""Content-Security-Policy: console pages run scripts from our own static files only.

An injected <script> or onclick= in a page would not run. The templates must therefore carry no
inline script, and the pages that ship with packages (the Swagger UI at /api/docs/) must still work.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.helpers import ROOT

pytestmark = pytest.mark.usefixtures("console_defaults")


def _policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


@pytest.mark.parametrize("url", ["/accounts/login/", "/accounts/signup/", "/api/docs/"])
def test_console_pages_allow_scripts_from_self_only(db, url):
    response = Client().get(url)
    assert response.status_code == 200
    policy = _policy(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]


def test_a_signed_in_tenant_page_carries_the_policy(world):
    client = Client()
    client.force_login(world.alice)
    response = client.get(reverse("tenant-overview", kwargs={"slug": "acme"}))
    assert response.status_code == 200
    assert _policy(response)["script-src"] == ["'self'"]


# A <script> without src runs inline, unless it only carries data (type="application/json").
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\s(on[a-z]+|hx-on[:\w-]*)\s*=", re.I)


def test_no_template_has_inline_script_or_event_handlers():
    offenders = []
    for directory in [ROOT / "templates", *ROOT.glob("*/templates")]:
        for path in directory.rglob("*.html"):
            if "/email/" in str(path):
                continue  # mail bodies are not served under the policy
            text = path.read_text()
            if INLINE_SCRIPT.search(text) or INLINE_HANDLER.search(text):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
