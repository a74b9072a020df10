"""Budget scopes, prices and alert addresses are bounded: a clear 400 or config error names the limit."""

from __future__ import annotations

import json

import pytest
import yaml
from django.core.exceptions import ValidationError

from billing.services import MAX_ALERT_EMAILS, billing_settings_set
from tenants.audit import Actor
from tenants.config import ConfigError, apply_config

pytestmark = pytest.mark.usefixtures("console_defaults")


def test_a_tag_budget_longer_than_any_tag_the_proxy_keeps_is_a_400(world, api_as):
    client = api_as("admin")
    body = {"scope": "tag:" + "t" * 101, "limit_usd": "5"}
    response = client.post("/api/v1/budgets/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == (
        "scope: A budget's tag may have at most 100 characters (this has 101)."
    )
    body = {"scope": "user:bob\r\nBcc: x@evil.example", "limit_usd": "5"}
    response = client.post("/api/v1/budgets/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "printable" in response.json()["error"]["message"]


def test_alert_addresses_are_bounded_in_number_in_the_yaml_and_the_service(world):
    emails = [f"ops{i}@acme.example" for i in range(MAX_ALERT_EMAILS + 1)]
    with pytest.raises(ConfigError) as exc:
        apply_config(yaml.safe_dump({"tenant": "acme", "alert_emails": emails}))
    assert f"alert_emails: at most {MAX_ALERT_EMAILS} addresses (this lists 21)" in str(exc.value)
    with pytest.raises(ValidationError) as verr:
        billing_settings_set(world.acme, timezone_name="UTC", alert_emails=emails, actor=Actor.cli())
    assert "alert_emails" in verr.value.message_dict
    with pytest.raises(ValidationError) as verr:
        billing_settings_set(world.acme, timezone_name="UTC", alert_emails=["not an address"], actor=Actor.cli())
    assert verr.value.message_dict == {"alert_emails[0]": ["'not an address' is not an email address."]}


def test_a_price_for_a_model_name_with_control_characters_is_refused(world):
    doc = {"tenant": "acme", "prices": [{"model": "gpt\x1b[0m", "input": 1, "output": 2}]}
    with pytest.raises(ConfigError) as exc:
        apply_config(yaml.safe_dump(doc))
    assert "prices[0].model: A model name must be printable text" in str(exc.value)
