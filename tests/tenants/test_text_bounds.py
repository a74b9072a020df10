"""Every free-text field a tenant admin or an API client sets is bounded: a clear 400 (or config error)
names the field and the limit, and names are printable text (no control characters)."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from tenants.audit import Actor
from tenants.config import ConfigError, apply_config
from tenants.models import Invitation, ManagementToken, Role, VirtualKey
from tenants.services import MAX_KEY_MODELS, invitation_create, management_token_create, tenant_rename

pytestmark = pytest.mark.usefixtures("console_defaults")


def post(client, url: str, data: dict, method: str = "POST"):
    return client.generic(method, url, data=json.dumps(data), content_type="application/json")


def test_a_key_name_with_control_characters_is_a_400_naming_the_field(world, api_as):
    response = post(api_as(Role.ADMIN), "/api/v1/keys/", {"name": "ci\x1b[31m\nforged log line"})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "name" in error["fields"] and "printable" in error["message"]
    assert not VirtualKey.objects.filter(name__startswith="ci\x1b").exists()


def test_renaming_a_key_to_a_name_with_a_line_break_is_refused(world, api_as):
    key = world.objects["key"]
    response = post(api_as(Role.ADMIN), f"/api/v1/keys/{key.id}/", {"name": "a\u2028b"}, method="PATCH")
    assert response.status_code == 400, response.content
    assert "printable" in response.json()["error"]["message"]


def test_a_key_names_at_most_so_many_models(world, api_as):
    models = [f"model-{i}" for i in range(MAX_KEY_MODELS + 1)]
    response = post(api_as(Role.ADMIN), "/api/v1/keys/", {"name": "wide", "models": models})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["message"] == f"models: A key may name at most {MAX_KEY_MODELS} models (this names 201)."
    ok = post(api_as(Role.ADMIN), "/api/v1/keys/", {"name": "wide", "models": models[:MAX_KEY_MODELS]})
    assert ok.status_code == 201


def test_a_token_name_too_long_is_refused_not_cut(world):
    with pytest.raises(ValidationError) as exc:
        management_token_create(world.acme, name="t" * 201, role=Role.VIEWER, actor=Actor(user=world.alice))
    assert exc.value.message_dict == {"name": ["A token name may have at most 200 characters (this has 201)."]}
    assert not ManagementToken.objects.filter(name__startswith="ttt").exists()


def test_a_tenant_name_too_long_is_refused_not_cut(world):
    with pytest.raises(ValidationError) as exc:
        tenant_rename(world.acme, name="n" * 300, actor=Actor(user=world.alice))
    assert exc.value.message_dict["name"] == ["A tenant name may have at most 200 characters (this has 300)."]


def test_an_invitation_to_an_address_longer_than_the_column_is_a_400(world, api_as):
    # Valid by the email grammar (labels under 64 characters) but longer than the 254 the column holds.
    email = "a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".example"
    response = post(api_as(Role.OWNER), "/api/v1/members/", {"email": email, "role": "member"})
    assert response.status_code == 400, response.content
    assert "email" in response.json()["error"]["fields"]
    with pytest.raises(ValidationError) as exc:
        invitation_create(world.acme, email=email, role=Role.MEMBER, actor=Actor(user=world.alice))
    assert exc.value.message_dict == {"email": ["An email address has at most 254 characters."]}
    assert not Invitation.objects.filter(email__startswith="aaaa").exists()


@pytest.mark.django_db
def test_the_yaml_names_the_line_and_the_limit_of_a_tenant_name():
    with pytest.raises(ConfigError) as exc:
        apply_config(f"tenant: acme\nname: {'n' * 201}\n")
    assert str(exc.value) == "line 2, name: A tenant name may have at most 200 characters (this has 201)."
    with pytest.raises(ConfigError) as exc:
        apply_config('tenant: acme\nname: "Acme\\tCorp"\n')
    assert "line 2, name: A tenant name must be printable text" in str(exc.value)
