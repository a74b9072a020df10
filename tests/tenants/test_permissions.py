"""Every console URL and every API endpoint, as every role, and as someone from another tenant.

The tables below must name every tenant-scoped URL: a new page without a row here fails
test_every_console_url_is_walked, so nobody can add a page that skips the permission walk.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tenants.models import Role
from tests.helpers.people import World, build_world

pytestmark = pytest.mark.usefixtures("console_defaults")


@pytest.fixture(scope="module")
def _world_once(django_db_setup, django_db_blocker):
    """The two tenants, built once for this module's several hundred cases instead of once per case.

    They live in a transaction that stays open for the module; each case runs in its own savepoint
    inside it (the `db` fixture), so what a POST revokes or deletes is back for the next case, and the
    module's rollback leaves the database as it found it. pytest tears this down before a test of any
    other module runs, so no other test ever sees these rows or waits on this transaction.
    """
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield build_world()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture
def world(_world_once: World, db) -> World:
    return _world_once


# Who: the four acme roles by name.
ROLE_OF = {"alice": Role.OWNER, "dave": Role.ADMIN, "erin": Role.MEMBER, "charlie": Role.VIEWER}
RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}

# url name -> (kwargs builder, {method: minimum role}, visibility rule)
# visibility "own-key": members only see keys they created (others' are 404, not 403).
KEY = ("key", lambda o: {"key_id": o["key"].id})  # created by Alice
ERIN_KEY = ("erin_key", lambda o: {"key_id": o["erin_key"].id})


def _budget(o: dict, scope: str) -> int:
    from billing.models import Budget

    budget, _ = Budget.objects.get_or_create(
        tenant=o["key"].tenant, scope=scope, period="month", defaults={"limit_usd": 10, "alert_at": [50, 80, 100]}
    )
    return budget.id


TENANT_BUDGET = ("tenant_budget", lambda o: {"budget_id": _budget(o, "tenant")})


def _invoice(o: dict) -> int:
    from datetime import date

    from billing.models import Invoice

    invoice, _ = Invoice.objects.get_or_create(
        tenant=o["key"].tenant,
        month=date(2026, 10, 1),
        defaults={
            "status": "finalized",
            "number": 1,
            "period_start": date(2026, 10, 1),
            "period_end": date(2026, 10, 31),
        },
    )
    return invoice.id


def _log(o: dict):
    from observability.models import CallLog

    log, _ = CallLog.objects.get_or_create(
        tenant=o["key"].tenant,
        request_id="req_permission_walk",
        defaults={"virtual_key": o["key"], "endpoint": "chat/completions", "status_code": 200, "latency_ms": 1.0},
    )
    return log


def _mcp_server(o: dict) -> int:
    from routing.models import McpServer

    # Nothing listens on port 9: a test connection fails at once, without leaving loopback.
    server, _ = McpServer.objects.get_or_create(tenant=o["key"].tenant, name="tracker", url="http://127.0.0.1:9/mcp")
    return server.id


MCP_SERVER = ("mcp-server", lambda o: {"server_id": _mcp_server(o)})


def _guardrail(o: dict) -> str:
    from routing.policies.services import tenant_guardrails_set
    from tenants.audit import Actor

    check = {"name": "pi", "check": "prompt_injection"}
    tenant_guardrails_set(o["key"].tenant, guardrails=[check], actor=Actor.cli())
    return check["name"]


GUARDRAIL = ("guardrail", lambda o: {"name": _guardrail(o)})


def _evaluator(o: dict) -> str:
    from observability.evaluators import evaluators_set
    from tenants.audit import Actor

    rule = {"name": "valid-json", "kind": "json_valid", "score": "json_ok", "model": "", "prompt": "", "params": {}}
    filters = {"models": [], "variants": [], "keys": [], "tags": [], "sample": 1.0}
    evaluators_set(o["key"].tenant, [{**rule, **filters}], actor=Actor.cli())
    return rule["name"]


EVALUATOR = ("evaluator", lambda o: {"name": _evaluator(o)})


def _evaluator_run(o: dict) -> dict:
    from observability.backfills import BackfillProgress, _save

    name, at = _evaluator(o), "2026-01-01T00:00:00+00:00"
    _save(o["key"].tenant_id, "run-1", BackfillProgress(name, at, at, "done", 0, 0, 0))
    return {"name": name, "run": "run-1"}


EVALUATOR_RUN = ("evaluator", _evaluator_run)

# A call made with Alice's key: like the key itself, Erin (member) must not learn it exists.
KEY_LOG = ("key", lambda o: {"log_id": _log(o).id})
KEY_LOG_BY_REQUEST = ("key", lambda o: {"request_id": _log(o).request_id})

# Invoices are the owners' (billing.manage), every other role gets 403.
INVOICE = ("invoice", lambda o: {"invoice_id": _invoice(o)})


def _call(o: dict) -> int:
    """A call of Alice's key (the member token of the fixture is Alice's, so it sees it)."""
    from observability.logbuffer import DatabaseSink
    from observability.models import CallLog
    from tests.helpers.billing import record

    DatabaseSink().write([record(o["key"].tenant, o["key"], cost=1)])
    return CallLog.objects.filter(virtual_key=o["key"]).latest("id").id


CALL = ("key", lambda o: {"call_id": _call(o)})
STRIPE_OFF = ("stripe-off", lambda o: {})
# A budget on Alice's key: like the key itself, Erin (member) must not even learn it exists.
KEY_BUDGET = ("key", lambda o: {"budget_id": _budget(o, f"key:{o['key'].name}")})
ERIN_KEY_BUDGET = ("erin_key_budget", lambda o: {"budget_id": _budget(o, f"key:{o['erin_key'].name}")})

CONSOLE = [
    ("tenant-overview", {}, {"GET": Role.VIEWER}),
    ("keys", {}, {"GET": Role.VIEWER, "POST": Role.MEMBER}),
    ("key-detail", KEY, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("key-detail", ERIN_KEY, {"GET": Role.VIEWER, "POST": Role.MEMBER}),
    ("key-revoke", KEY, {"POST": Role.ADMIN}),
    ("key-revoke", ERIN_KEY, {"POST": Role.MEMBER}),
    ("key-rotate", KEY, {"POST": Role.ADMIN}),
    ("key-rotate", ERIN_KEY, {"POST": Role.MEMBER}),
    # The key page's usage panel (served by observability): whoever sees the key sees its usage.
    ("key-usage", KEY, {"GET": Role.VIEWER}),
    ("key-usage", ERIN_KEY, {"GET": Role.VIEWER}),
    ("members", {}, {"GET": Role.VIEWER, "POST": Role.OWNER}),
    ("member-role", ("charlie", lambda o: {"membership_id": o["memberships"]["charlie"].id}), {"POST": Role.OWNER}),
    ("member-remove", ("charlie", lambda o: {"membership_id": o["memberships"]["charlie"].id}), {"POST": Role.OWNER}),
    ("invitation-revoke", ("invitation", lambda o: {"invitation_id": o["invitation"].id}), {"POST": Role.OWNER}),
    ("tokens", {}, {"GET": Role.ADMIN, "POST": Role.ADMIN}),
    ("token-revoke", ("token", lambda o: {"token_id": o["token"].id}), {"POST": Role.ADMIN}),
    ("tenant-settings", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("tenant-delete", {}, {"POST": Role.OWNER}),
    ("tenant-export", {}, {"GET": Role.ADMIN}),
    ("audit", {}, {"GET": Role.ADMIN}),
    ("providers", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("starter", {}, {"POST": Role.ADMIN}),
    (
        "provider-detail",
        ("provider", lambda o: {"provider_id": o["provider"].id}),
        {"GET": Role.VIEWER, "POST": Role.ADMIN},
    ),
    ("provider-delete", ("provider", lambda o: {"provider_id": o["provider"].id}), {"POST": Role.ADMIN}),
    ("provider-test", ("provider", lambda o: {"provider_id": o["provider"].id}), {"POST": Role.VIEWER}),
    ("mcp-servers", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("mcp-server-detail", MCP_SERVER, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("mcp-server-delete", MCP_SERVER, {"POST": Role.ADMIN}),
    # Like a provider's: it shows the server's tools, never its secrets.
    ("mcp-server-test", MCP_SERVER, {"POST": Role.VIEWER}),
    ("models", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("model-detail", ("model", lambda o: {"name": "acme-secret-model"}), {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("model-delete", ("model", lambda o: {"name": "acme-secret-model"}), {"POST": Role.ADMIN}),
    ("model-route", ("model", lambda o: {"name": "acme-secret-model"}), {"POST": Role.ADMIN}),
    ("route-rules", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("policies", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("policy-cache", {}, {"POST": Role.ADMIN}),
    # The preview stores nothing and calls no provider.
    ("policy-preview", {}, {"POST": Role.VIEWER}),
    # A key's own PII policy can switch the tenant's off: admins only (Erin on her own key: test_policies_console).
    ("key-policy", KEY, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("guardrails", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("guardrail-edit", GUARDRAIL, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("guardrail-delete", GUARDRAIL, {"POST": Role.ADMIN}),
    # Like the PII preview: it stores nothing and calls no provider.
    ("guardrail-preview", {}, {"POST": Role.VIEWER}),
    ("evaluators", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("evaluator-edit", EVALUATOR, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("evaluator-delete", EVALUATOR, {"POST": Role.ADMIN}),
    # Previewing a judge calls (and bills) a model; back-fills score many calls: admins.
    ("evaluator-preview", {}, {"POST": Role.ADMIN}),
    ("evaluator-backfill", {}, {"POST": Role.ADMIN}),
    ("evaluator-backfill-progress", EVALUATOR_RUN, {"GET": Role.VIEWER}),
    ("routing-health", {}, {"GET": Role.VIEWER}),
    ("routing-ab", {}, {"GET": Role.VIEWER}),
    # Simulating reads routing config every member can see and calls no provider.
    ("routing-simulate", {}, {"GET": Role.VIEWER, "POST": Role.VIEWER}),
    ("budgets", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("budget-detail", TENANT_BUDGET, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("budget-detail", KEY_BUDGET, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("budget-detail", ERIN_KEY_BUDGET, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("budget-outage-mode", {}, {"POST": Role.ADMIN}),
    ("budget-delete", TENANT_BUDGET, {"POST": Role.ADMIN}),
    ("budget-delete", KEY_BUDGET, {"POST": Role.ADMIN}),
    ("limits", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    # Limits are the admins' to set, even on a member's own key.
    ("key-limits", KEY, {"POST": Role.ADMIN}),
    ("key-limits", ERIN_KEY, {"POST": Role.ADMIN}),
    ("spend", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("dashboard", {}, {"GET": Role.VIEWER}),
    ("log-explorer", {}, {"GET": Role.VIEWER}),
    ("logs-live", {}, {"GET": Role.VIEWER}),
    ("log-export", {}, {"GET": Role.VIEWER}),
    ("log-detail", KEY_LOG, {"GET": Role.VIEWER}),
    ("log-by-request", KEY_LOG_BY_REQUEST, {"GET": Role.VIEWER}),
    ("playground", {}, {"GET": Role.VIEWER}),
    # The playground sends with a short-lived key of the user's own: whoever may create keys. (The empty
    # POST of this walk is a form error: no key is made and no model called.)
    ("playground-send", {}, {"POST": Role.MEMBER}),
    # A playground answer's cost: a call the person may not see reads as "not logged yet", like an unknown
    # id, so every role gets an answer (no label: nothing of acme's is named in the URL).
    ("playground-cost", ("", lambda o: {"request_id": _log(o).request_id}), {"GET": Role.VIEWER}),
    ("spend-usage", {}, {"GET": Role.VIEWER}),
    ("billing", {}, {"GET": Role.OWNER, "POST": Role.OWNER}),
    ("billing-invoice-csv", INVOICE, {"GET": Role.OWNER}),
    ("billing-invoice-pdf", INVOICE, {"GET": Role.OWNER}),
    ("billing-invoice-void", INVOICE, {"POST": Role.OWNER}),
    ("billing-invoice-finalize", INVOICE, {"POST": Role.OWNER}),
    # Stripe is off in these tests: owners pass the permission check, then get 404 (no portal to open).
    ("billing-stripe-portal", STRIPE_OFF, {"GET": Role.OWNER}),
]


def _cases():
    for name, target, methods in CONSOLE:
        label, build = target if isinstance(target, tuple) else ("", lambda o: {})
        for method, minimum in methods.items():
            yield pytest.param(
                name, label, build, method, minimum, id=f"{method} {name}{'[' + label + ']' if label else ''}"
            )


def _expected(person: str, label: str, minimum: str) -> int | None:
    """The status this acme person must get, or None for "allowed" (any 2xx/3xx)."""
    role = ROLE_OF[person]
    if label == "key" and role == Role.MEMBER:
        return 404  # Erin does not see Alice's key at all
    if label == "stripe-off" and RANK[role] >= RANK[minimum]:
        return 404  # allowed, but there is no Stripe to send the owner to
    return None if RANK[role] >= RANK[minimum] else 403


def _tenant_urls(resolver=None, prefix: str = "") -> set[str]:
    names = set()
    for p in (resolver or get_resolver()).url_patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            names |= _tenant_urls(p, route)
        elif isinstance(p, URLPattern) and route.startswith("t/<slug:slug>/") and p.name:
            names.add(p.name)
    return names


def test_every_console_url_is_walked():
    assert _tenant_urls() == {name for name, _t, _m in CONSOLE}


@pytest.mark.parametrize("person", list(ROLE_OF))
@pytest.mark.parametrize(("name", "label", "build", "method", "minimum"), list(_cases()))
def test_acme_roles(world, client_as, person, name, label, build, method, minimum):
    url = reverse(name, kwargs={"slug": "acme", **build(world.objects)})
    client = client_as(world.user(person))
    response = client.get(url) if method == "GET" else client.post(url, {})
    expected = _expected(person, label, minimum)
    if expected is None:
        assert response.status_code < 400, f"{person} ({ROLE_OF[person]}) should be allowed {method} {url}"
    else:
        assert response.status_code == expected, f"{person} ({ROLE_OF[person]}) {method} {url}"


@pytest.mark.parametrize(("name", "label", "build", "method", "minimum"), list(_cases()))
def test_bob_from_globex_gets_404_for_acme(world, client_as, name, label, build, method, minimum):
    client = client_as(world.bob)
    # Acme's URLs: Bob is no member, so acme does not exist for him.
    url = reverse(name, kwargs={"slug": "acme", **build(world.objects)})
    response = client.get(url) if method == "GET" else client.post(url, {})
    assert response.status_code == 404
    # Acme's objects under Bob's own tenant, where he is owner: still 404, never acme's data.
    if label:
        url = reverse(name, kwargs={"slug": "globex", **build(world.objects)})
        response = client.get(url) if method == "GET" else client.post(url, {})
        assert response.status_code == 404, f"Bob reached an acme object through globex: {method} {url}"


@pytest.mark.parametrize(("name", "label", "build", "method", "minimum"), list(_cases()))
def test_anonymous_is_sent_to_login(world, client_as, name, label, build, method, minimum):
    url = reverse(name, kwargs={"slug": "acme", **build(world.objects)})
    client = client_as(None)
    response = client.get(url) if method == "GET" else client.post(url, {})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


# --- The management API --------------------------------------------------------------------------

API = [
    ("api-keys", {}, {"GET": Role.VIEWER, "POST": Role.MEMBER}),
    ("api-key-detail", KEY, {"GET": Role.VIEWER, "PATCH": Role.ADMIN}),
    ("api-key-revoke", KEY, {"POST": Role.ADMIN}),
    ("api-key-rotate", KEY, {"POST": Role.ADMIN}),
    ("api-members", {}, {"GET": Role.VIEWER, "POST": Role.OWNER}),
    (
        "api-member-detail",
        ("charlie", lambda o: {"membership_id": o["memberships"]["charlie"].id}),
        {"PATCH": Role.OWNER, "DELETE": Role.OWNER},
    ),
    ("api-invitations", {}, {"GET": Role.VIEWER}),
    ("api-invitation-detail", ("invitation", lambda o: {"invitation_id": o["invitation"].id}), {"DELETE": Role.OWNER}),
    ("api-audit", {}, {"GET": Role.ADMIN}),
    ("api-calls", {}, {"GET": Role.VIEWER}),
    ("api-scores", {}, {"GET": Role.VIEWER}),
    ("api-call-detail", CALL, {"GET": Role.VIEWER}),
    ("api-providers", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    (
        "api-provider-detail",
        ("provider", lambda o: {"provider_id": o["provider"].id}),
        {"GET": Role.VIEWER, "PATCH": Role.ADMIN, "DELETE": Role.ADMIN},
    ),
    ("api-provider-test", ("provider", lambda o: {"provider_id": o["provider"].id}), {"POST": Role.VIEWER}),
    ("api-models", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    (
        "api-model-detail",
        ("model", lambda o: {"name": "acme-secret-model"}),
        {"GET": Role.VIEWER, "PUT": Role.ADMIN, "DELETE": Role.ADMIN},
    ),
    ("api-budgets", {}, {"GET": Role.VIEWER, "POST": Role.ADMIN}),
    ("api-budget-detail", TENANT_BUDGET, {"DELETE": Role.ADMIN}),
    ("api-spend", {}, {"GET": Role.VIEWER}),
    ("api-invoices", {}, {"GET": Role.OWNER}),
    ("api-invoice-detail", INVOICE, {"GET": Role.OWNER}),
    ("api-invoice-pdf", INVOICE, {"GET": Role.OWNER}),
    ("api-invoice-csv", INVOICE, {"GET": Role.OWNER}),
    ("api-invoice-void", INVOICE, {"POST": Role.OWNER}),
    ("api-invoice-finalize", INVOICE, {"POST": Role.OWNER}),
    ("api-routing-simulate", {}, {"POST": Role.VIEWER}),
    ("api-routing-ab", {}, {"GET": Role.VIEWER}),
    ("api-policy-pii", {}, {"GET": Role.VIEWER, "PUT": Role.ADMIN}),
    ("api-policy-cache", {}, {"GET": Role.VIEWER, "PUT": Role.ADMIN}),
    ("api-policy-guardrails", {}, {"GET": Role.VIEWER, "PUT": Role.ADMIN}),
    ("api-guardrail-stats", {}, {"GET": Role.VIEWER}),
]


def _api_cases(objects_only: bool = False):
    for name, target, methods in API:
        label, build = target if isinstance(target, tuple) else ("", lambda o: {})
        if objects_only and not label:
            continue
        for method, minimum in methods.items():
            yield pytest.param(name, label, build, method, minimum, id=f"{method} {name}")


def _api_call(client, method: str, url: str):
    if method == "GET":
        return client.get(url)
    return client.generic(method, url, data="{}", content_type="application/json")


def test_every_api_url_is_walked():
    api_names = set()
    for p in get_resolver().url_patterns:
        if isinstance(p, URLResolver) and str(p.pattern) == "api/v1/":
            api_names |= {q.name for q in p.url_patterns}
    assert api_names == {name for name, _t, _m in API}


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER])
@pytest.mark.parametrize(("name", "label", "build", "method", "minimum"), list(_api_cases()))
def test_api_roles(world, api_as, role, name, label, build, method, minimum):
    url = reverse(name, kwargs=build(world.objects))
    response = _api_call(api_as(role), method, url)
    if role == Role.MEMBER and label == "key":
        # The member token was minted by Alice (the fixture), so Alice's key is its own: allowed.
        minimum = Role.MEMBER
    if RANK[role] >= RANK[minimum]:
        assert response.status_code < 500 and response.status_code not in (401, 403, 404), response.content
    else:
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "permission_denied"


# Collection endpoints (/keys/, /models/...) are scoped to the token's tenant: see test_api.py.
@pytest.mark.parametrize(("name", "label", "build", "method", "minimum"), list(_api_cases(objects_only=True)))
def test_api_token_from_globex_never_reaches_acme(world, api_as, name, label, build, method, minimum):
    url = reverse(name, kwargs=build(world.objects))
    response = _api_call(api_as(Role.OWNER, world.globex), method, url)
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("name", "label", "build", "method", "minimum"), list(_api_cases()))
def test_api_without_token_is_401(world, client, name, label, build, method, minimum):
    response = _api_call(client, method, reverse(name, kwargs=build(world.objects)))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
