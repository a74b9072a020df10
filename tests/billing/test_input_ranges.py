"""Numbers beyond what a column stores, and budgets on keys that do not exist, are refused in the
console and the management API with a clear error; nothing is written and nothing crashes."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from billing.models import Budget, RateLimit
from tenants.models import VirtualKey

pytestmark = pytest.mark.usefixtures("console_defaults")


def post(client, url: str, data: dict | str):
    body = data if isinstance(data, str) else json.dumps(data)
    return client.generic("POST", url, data=body, content_type="application/json")


# --- Console ---------------------------------------------------------------------------------------


def test_alice_cannot_set_a_tenant_tpm_beyond_the_column(world, client_as):
    response = client_as(world.alice).post(reverse("limits", args=["acme"]), {"rpm": "100", "tpm": "10000000000"})
    assert response.status_code == 200
    assert "less than or equal to 2147483647" in response.content.decode()
    assert not RateLimit.objects.filter(tenant=world.acme).exists()


def test_alice_cannot_set_a_key_rpm_beyond_the_column(world, client_as):
    key = world.objects["key"]
    response = client_as(world.alice).post(
        reverse("key-limits", args=["acme", key.id]), {"rpm": "2147483648", "max_parallel": "99999999999"}, follow=True
    )
    assert response.status_code == 200
    assert "less than or equal to 2147483647" in response.content.decode()
    assert not RateLimit.objects.filter(tenant=world.acme).exists()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"limit_usd": "10000000000000"}, "no more than 12 digits before the decimal point"),
        ({"limit_usd": "5", "alert_at": "50, 99999999999"}, "between 1 and 1000"),
        ({"scope": "key:ghost"}, "There is no key named &#x27;ghost&#x27; in acme"),
    ],
)
def test_alice_gets_a_form_error_for_an_impossible_budget(world, client_as, form, message):
    data = {"scope": "tenant", "limit_usd": "5", "period": "month", "mode": "hard", **form}
    response = client_as(world.alice).post(reverse("budgets", args=["acme"]), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Budget.objects.filter(tenant=world.acme).exists()


def test_alice_can_budget_an_existing_key(world, client_as):
    data = {"scope": "key:acme-service", "limit_usd": "5", "period": "month", "mode": "hard"}
    response = client_as(world.alice).post(reverse("budgets", args=["acme"]), data)
    assert response.status_code == 302
    assert Budget.objects.filter(tenant=world.acme, scope="key:acme-service").exists()


def test_key_metadata_with_an_infinite_number_is_a_form_error(world, client_as):
    response = client_as(world.erin).post(
        reverse("keys", args=["acme"]), {"name": "notebook-2", "metadata": '{"weight": 1e400}'}
    )
    assert response.status_code == 200
    assert "must be finite" in response.content.decode()
    assert not VirtualKey.objects.filter(name="notebook-2").exists()


# --- Management API --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"limit_usd": "10000000000000"}, "limit_usd", "no more than 12 digits before the decimal point"),
        ({"alert_at": [50, 99999999999]}, "alert_at", "less than or equal to 1000"),
        ({"scope": "key:ghost"}, "scope", "There is no key named 'ghost' in acme"),
    ],
)
def test_the_api_answers_400_for_an_impossible_budget(world, api_as, body, field, message):
    response = post(api_as("admin"), "/api/v1/budgets/", {"scope": "tenant", "limit_usd": "5", **body})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"] and message in error["message"]
    assert not Budget.objects.filter(tenant=world.acme).exists()


def test_the_api_budgets_an_existing_key(world, api_as):
    response = post(api_as("admin"), "/api/v1/budgets/", {"scope": "key:acme-service", "limit_usd": "5"})
    assert response.status_code == 201, response.content


def test_the_api_refuses_key_metadata_with_an_infinite_number(world, api_as):
    response = post(api_as("member"), "/api/v1/keys/", '{"name": "x", "metadata": {"weight": 1e400}}')
    assert response.status_code == 400, response.content
    assert "must be finite" in response.json()["error"]["message"]
    assert not VirtualKey.objects.filter(name="x").exists()


def test_the_audit_cursor_beyond_any_id_is_a_400(world, api_as):
    response = api_as("admin").get("/api/v1/audit/?before=99999999999999999999")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["before"]


def test_an_id_beyond_any_column_is_a_json_404(world, api_as):
    response = api_as("admin").get("/api/v1/keys/99999999999999999999/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
