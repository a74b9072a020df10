"""What the console says: a <title> per page, counts in the right number, and one word for one thing.

Alice (owner of acme, two models) and Bob (owner of globex, one model) read their own tenants' pages.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from observability.logbuffer import after_write
from observability.models import CallLog
from routing.models import ProviderCredential
from tests.helpers.people import make_user

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(view: str, slug: str = "acme", **kwargs) -> str:
    return reverse(view, kwargs={"slug": slug, **kwargs})


def title(response) -> str:
    assert response.status_code == 200
    return re.search(r"<title>(.*?)</title>", response.content.decode(), re.S).group(1)


def text(response) -> str:
    """The page's words with tags dropped and spaces collapsed, as a reader sees them."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


# --- <title> ---------------------------------------------------------------------------------------


def test_each_tenant_page_has_its_own_title_naming_the_page_and_the_tenant(world, client_as):
    client = client_as(world.alice)
    key, provider = world.objects["key"], world.objects["provider"]
    expected = {
        url("tenant-overview"): "Overview · Acme Corp · LLM Gateway",
        url("keys"): "Virtual keys · Acme Corp · LLM Gateway",
        url("key-detail", key_id=key.id): "acme-service · Virtual keys · Acme Corp · LLM Gateway",
        url("providers"): "Providers · Acme Corp · LLM Gateway",
        url("provider-detail", provider_id=provider.id): "mock · Providers · Acme Corp · LLM Gateway",
        url("models"): "Models · Acme Corp · LLM Gateway",
        url("model-detail", name="gpt-4o-mini"): "gpt-4o-mini · Models · Acme Corp · LLM Gateway",
        url("routing-health"): "Deployment health · Models · Acme Corp · LLM Gateway",
        url("route-rules"): "Routing rules · Acme Corp · LLM Gateway",
        url("routing-simulate"): "Simulate a request · Routing rules · Acme Corp · LLM Gateway",
        url("policies"): "Data policies · Acme Corp · LLM Gateway",
        url("budgets"): "Budgets · Acme Corp · LLM Gateway",
        url("limits"): "Rate limits · Acme Corp · LLM Gateway",
        url("spend"): "Spend · Acme Corp · LLM Gateway",
        url("dashboard"): "Dashboard · Acme Corp · LLM Gateway",
        url("logs-live"): "Live calls · Acme Corp · LLM Gateway",
        url("log-explorer"): "Log explorer · Acme Corp · LLM Gateway",
        url("playground"): "Playground · Acme Corp · LLM Gateway",
        url("members"): "Members · Acme Corp · LLM Gateway",
        url("tokens"): "API tokens · Acme Corp · LLM Gateway",
        url("audit"): "Audit log · Acme Corp · LLM Gateway",
        url("tenant-settings"): "Settings · Acme Corp · LLM Gateway",
    }
    found = {path: title(client.get(path)) for path in expected}
    assert found == expected


def test_pages_outside_a_tenant_name_themselves(world, client_as):
    # Frank belongs to no tenant yet, so the home page lists tenants instead of opening one.
    client = client_as(make_user("frank@example.test"))
    assert title(client.get(reverse("home"))) == "Your tenants · LLM Gateway"
    assert title(client.get(reverse("tenant-new"))) == "New tenant · LLM Gateway"


def test_bob_sees_his_own_tenant_in_the_title_and_none_of_acme(world, client_as):
    client = client_as(world.bob)
    assert title(client.get(url("models", slug="globex"))) == "Models · Globex · LLM Gateway"
    assert client.get(url("models")).status_code == 404


# --- Counts ----------------------------------------------------------------------------------------


def test_the_overview_counts_one_model_and_two_models(world, client_as):
    # globex has one of each; acme has two models and two keys (acme-service, erin-notebook).
    globex = text(client_as(world.bob).get(url("tenant-overview", slug="globex")))
    assert "1 model " in globex and "1 provider " in globex and "1 active key " in globex
    assert "1 models" not in globex and "1 providers" not in globex and "1 active keys" not in globex
    acme = text(client_as(world.alice).get(url("tenant-overview")))
    assert "2 models " in acme and "2 active keys " in acme and "0 calls in 24 h" in acme


class _OneModel(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = json.dumps({"data": [{"id": "gpt-4o-mini"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def one_model_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OneModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_the_provider_test_says_it_works_once_and_counts_one_model(world, client_as, one_model_server):
    client = client_as(world.alice)
    form = {"name": "local", "kind": "openai-compatible", "base_url": one_model_server, "api_key": "sk-local-1234567"}
    client.post(url("providers"), form)
    provider = ProviderCredential.objects.get(tenant=world.acme, name="local")
    said = text(client.post(url("provider-test", provider_id=provider.id), **HTMX))
    assert "Connection works. The credentials can use 1 model." in said
    assert "Connected" not in said


# --- One word for one thing ------------------------------------------------------------------------


def test_the_model_page_calls_the_box_remove_as_the_box_does(world, client_as):
    page = client_as(world.alice).get(url("model-detail", name="gpt-4o-mini")).content.decode()
    assert "Tick “Remove” on a row" in page
    assert "“Delete”" not in page
    assert '<label for="id_dep-0-DELETE">Remove</label>' in page


def test_the_ab_split_says_requests_without_a_user_are_bucketed_per_key(world, client_as):
    page = text(client_as(world.alice).get(url("model-detail", name="gpt-4o-mini")))
    assert "requests without a “user” are bucketed per key" in page


def _calls(tenant, key, users: list[str]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        {
            "created_at": now - timedelta(minutes=i + 1),
            "tenant_id": tenant.id,
            "virtual_key_id": key.id,
            "request_id": f"req-{tenant.slug}-{i}",
            "endpoint": "chat.completions",
            "requested_model": "gpt-4o-mini",
            "status_code": 200,
            "latency_ms": 100.0,
            "ttfb_ms": 40.0,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "cost_picodollars": 0,
            "end_user": user,
            "tags": [],
        }
        for i, user in enumerate(users)
    ]
    CallLog.objects.bulk_create([CallLog(**r) for r in records])
    after_write(records)  # the rollups the dashboard reads


def test_by_end_user_says_no_call_carried_a_user_rather_than_no_calls(world, client_as):
    _calls(world.acme, world.objects["key"], ["", ""])
    page = client_as(world.alice).get(url("dashboard")).content.decode()
    assert "No calls in this range carried a <code>user</code>." in page
    assert "No calls in this range carried tags." in page


def test_by_end_user_says_no_calls_when_there_are_none(world, client_as):
    page = text(client_as(world.alice).get(url("dashboard")))
    assert "carried a" not in page and "No calls in this range." in page


@pytest.mark.django_db
def test_the_403_page_is_styled_and_says_why(world, client_as):
    """Charlie (viewer) opening an admin-only form gets the styled error page with the reason."""
    from django.urls import reverse

    response = client_as(world.charlie).post(reverse("budget-outage-mode", kwargs={"slug": "acme"}), {"mode": "open"})
    assert response.status_code == 403
    page = response.content.decode()
    assert "console.css" in page and "<h1>Not allowed</h1>" in page
    assert "Your role (viewer) does not allow this; ask an owner or admin of Acme Corp." in page
