"""Every operation of the management API refuses a field it does not know, in the body or the query, with a
400 naming it: a misspelt field must never look applied while it was dropped."""

from __future__ import annotations

import json
from datetime import date

import pytest
from django.urls import reverse

from billing.models import Budget, Invoice
from routing.models import ModelDeployment, ModelRoute, ProviderCredential
from tenants.models import AuditLog, Invitation, Membership, Role, Tenant, VirtualKey

pytestmark = pytest.mark.usefixtures("console_defaults")

BOGUS = {"bogus": 1}
DEPLOYMENT = {"provider": "mock", "model": "mock-chat"}


def _invoice(world) -> int:
    invoice, _ = Invoice.objects.get_or_create(
        tenant=world.acme,
        month=date(2026, 10, 1),
        defaults={
            "status": "finalized",
            "number": 1,
            "period_start": date(2026, 10, 1),
            "period_end": date(2026, 10, 31),
        },
    )
    return invoice.id


def _budget(world) -> int:
    budget, _ = Budget.objects.get_or_create(
        tenant=world.acme, scope="tenant", period="month", defaults={"limit_usd": 10}
    )
    return budget.id


KEY = lambda w: {"key_id": w.objects["key"].id}  # noqa: E731
CHARLIE = lambda w: {"membership_id": w.objects["memberships"]["charlie"].id}  # noqa: E731
PROVIDER = lambda w: {"provider_id": w.objects["provider"].id}  # noqa: E731
MODEL = lambda w: {"name": "gpt-4o-mini"}  # noqa: E731
NONE = lambda w: {}  # noqa: E731

# (url name, url kwargs, method, a body that would be accepted without the extra field). Every write
# operation of the API; the routing simulator (proxy.console.apis) is a read, tested below.
WRITES = [
    ("api-keys", NONE, "POST", {"name": "new-key"}),
    ("api-key-detail", KEY, "PATCH", {"name": "renamed"}),
    ("api-key-revoke", KEY, "POST", {}),
    ("api-key-rotate", KEY, "POST", {}),
    ("api-members", NONE, "POST", {"email": "frank@acme.example", "role": "member"}),
    ("api-member-detail", CHARLIE, "PATCH", {"role": "member"}),
    ("api-member-detail", CHARLIE, "DELETE", {}),
    ("api-invitation-detail", lambda w: {"invitation_id": w.objects["invitation"].id}, "DELETE", {}),
    ("api-providers", NONE, "POST", {"name": "second", "kind": "mock"}),
    ("api-provider-detail", PROVIDER, "PATCH", {"base_url": ""}),
    ("api-provider-detail", PROVIDER, "DELETE", {}),
    ("api-provider-test", PROVIDER, "POST", {}),
    ("api-models", NONE, "POST", {"name": "new-model", "deployments": [DEPLOYMENT]}),
    ("api-model-detail", MODEL, "PUT", {"deployments": [DEPLOYMENT], "retries": 3}),
    ("api-model-detail", MODEL, "DELETE", {}),
    ("api-budgets", NONE, "POST", {"scope": "tenant", "limit_usd": "5"}),
    ("api-budget-detail", lambda w: {"budget_id": _budget(w)}, "DELETE", {}),
    ("api-invoice-void", lambda w: {"invoice_id": _invoice(w)}, "POST", {}),
    ("api-invoice-finalize", lambda w: {"invoice_id": _invoice(w)}, "POST", {}),
    ("api-policy-pii", NONE, "PUT", {"pii": {"detectors": {"email": "redact"}}}),
    ("api-policy-cache", NONE, "PUT", {"cache": {"enabled": True, "ttl_s": 60}}),
    ("api-policy-guardrails", NONE, "PUT", {"guardrails": [{"name": "kw", "check": "keywords", "words": ["x"]}]}),
]

# Unknown fields inside nested objects are refused too, named where they are.
NESTED = [
    ("api-models", NONE, "POST", {"name": "new-model", "deployments": [{**DEPLOYMENT, **BOGUS}]}),
    (
        "api-models",
        NONE,
        "POST",
        {
            "name": "new-model",
            "deployments": [DEPLOYMENT],
            "split": {"model": "acme-secret-model", "percent": 10, **BOGUS},
        },
    ),
    ("api-model-detail", MODEL, "PUT", {"deployments": [DEPLOYMENT], "cooldown": {"failures": 2, **BOGUS}}),
]

READS = [
    ("api-keys", NONE),
    ("api-key-detail", KEY),
    ("api-members", NONE),
    ("api-invitations", NONE),
    ("api-audit", NONE),
    ("api-calls", NONE),
    ("api-providers", NONE),
    ("api-provider-detail", PROVIDER),
    ("api-models", NONE),
    ("api-model-detail", MODEL),
    ("api-budgets", NONE),
    ("api-spend", NONE),
    ("api-invoices", NONE),
    ("api-invoice-detail", lambda w: {"invoice_id": _invoice(w)}),
    ("api-invoice-pdf", lambda w: {"invoice_id": _invoice(w)}),
    ("api-invoice-csv", lambda w: {"invoice_id": _invoice(w)}),
    ("api-policy-pii", NONE),
    ("api-policy-cache", NONE),
    ("api-policy-guardrails", NONE),
    ("api-guardrail-stats", NONE),
]


def _state(world) -> tuple:
    """Everything a write through the API could change in either tenant."""
    tenants = (world.acme.id, world.globex.id)
    return (
        AuditLog.objects.count(),
        sorted(VirtualKey.objects.values_list("id", "name", "key_hash", "revoked")),
        sorted(Membership.objects.values_list("id", "role")),
        Invitation.objects.count(),
        sorted(ProviderCredential.objects.values_list("id", "name", "base_url", "kind")),
        sorted(ModelDeployment.objects.values_list("id", "model_name", "upstream_model", "weight", "priority")),
        ModelRoute.objects.count(),
        sorted(Budget.objects.values_list("id", "scope", "limit_usd")),
        sorted(Invoice.objects.values_list("id", "status", "number")),
        sorted(
            (t.id, json.dumps(t.pii_policy), json.dumps(t.cache_policy)) for t in Tenant.objects.filter(id__in=tenants)
        ),
    )


def _send(client, method: str, url: str, body: dict):
    return client.generic(method, url, data=json.dumps(body), content_type="application/json")


def _names_bogus(response) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "bogus" in json.dumps(error["fields"]) and "Unknown field" in json.dumps(error["fields"])


@pytest.mark.parametrize(
    ("name", "kwargs", "method", "body"), [pytest.param(*case, id=f"{case[2]} {case[0]}") for case in WRITES]
)
def test_every_write_refuses_an_unknown_field_and_changes_nothing(world, api_as, name, kwargs, method, body):
    client, url = api_as(Role.OWNER), reverse(name, kwargs=kwargs(world))
    before = _state(world)
    response = _send(client, method, url, {**body, **BOGUS})
    _names_bogus(response)
    assert response.json()["error"]["message"].startswith("bogus: Unknown field.")
    assert _state(world) == before


@pytest.mark.parametrize(
    ("name", "kwargs", "method", "body"), [pytest.param(*c, id=f"{c[2]} {c[0]} {i}") for i, c in enumerate(NESTED)]
)
def test_nested_objects_refuse_unknown_fields_too(world, api_as, name, kwargs, method, body):
    client, url = api_as(Role.OWNER), reverse(name, kwargs=kwargs(world))
    before = _state(world)
    _names_bogus(_send(client, method, url, body))
    assert _state(world) == before


@pytest.mark.parametrize(("name", "kwargs"), [pytest.param(*case, id=case[0]) for case in READS])
def test_every_read_refuses_an_unknown_query_parameter(world, api_as, name, kwargs):
    response = api_as(Role.OWNER).get(reverse(name, kwargs=kwargs(world)), {"bogus": "1"})
    _names_bogus(response)


def test_a_misspelt_filter_is_refused_and_the_right_one_still_works(world, api_as):
    client = api_as(Role.OWNER)
    response = client.get("/api/v1/audit/", {"limt": "5"})
    assert response.status_code == 400 and "limt" in response.json()["error"]["fields"]
    assert "before, limit" in response.json()["error"]["fields"]["limt"][0]
    assert client.get("/api/v1/audit/", {"limit": "5"}).status_code == 200
    assert client.get("/api/v1/spend/", {"since": "2026-01-01"}).status_code == 200
    assert client.get("/api/v1/keys/").status_code == 200


def test_an_operation_without_a_body_still_takes_an_empty_or_non_json_one(world, api_as):
    client = api_as(Role.OWNER)
    key = world.objects["key"]
    assert client.post(f"/api/v1/keys/{key.id}/rotate/").status_code == 200  # a bare POST, no JSON
    assert _send(client, "POST", f"/api/v1/keys/{key.id}/revoke/", {}).status_code == 200
