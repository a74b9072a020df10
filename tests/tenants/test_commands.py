"""`gateway add-member`, `gateway mint-token`, and `gateway export` round-tripping through `apply`."""

from __future__ import annotations

from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from routing.models import ProviderCredential
from tenants.config import apply_config
from tenants.models import AuditLog, ManagementToken, Membership, Role, hash_secret
from tests.helpers.people import PASSWORD

pytestmark = pytest.mark.usefixtures("console_defaults")


def gateway(*args: str) -> str:
    out = StringIO()
    call_command("gateway", *args, stdout=out)
    return out.getvalue()


def test_add_member_creates_the_user_and_the_membership(world):
    out = gateway(
        "add-member", "--tenant", "acme", "--email", "Frank@Acme.example", "--role", "admin", "--password", PASSWORD
    )
    assert out.splitlines() == ["+ user frank@acme.example", "+ member frank@acme.example in acme as admin"]
    user = get_user_model().objects.get(email="frank@acme.example")
    assert Membership.objects.get(user=user, tenant=world.acme).role == Role.ADMIN
    assert EmailAddress.objects.get(user=user).verified  # the operator vouches for the address
    client = Client()
    assert client.post("/accounts/login/", {"login": "frank@acme.example", "password": PASSWORD}).status_code == 302
    assert AuditLog.objects.filter(tenant=world.acme, action="member.add", actor_label="cli").exists()


def test_add_member_reuses_an_existing_user_and_changes_the_role(world):
    out = gateway("add-member", "--tenant", "globex", "--email", "erin@acme.example", "--role", "viewer")
    assert out.splitlines() == ["+ member erin@acme.example in globex as viewer"]
    out = gateway("add-member", "--tenant", "globex", "--email", "erin@acme.example", "--role", "member")
    assert out.splitlines() == ["~ member erin@acme.example in globex as member"]
    assert get_user_model().objects.filter(email="erin@acme.example").count() == 1
    out = gateway("add-member", "--tenant", "globex", "--email", "erin@acme.example", "--role", "member")
    assert "no changes" in out


def test_add_member_without_password_leaves_the_password_unusable(world):
    gateway("add-member", "--tenant", "acme", "--email", "nopass@acme.example", "--role", "viewer")
    assert not get_user_model().objects.get(email="nopass@acme.example").has_usable_password()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "nope", "--email", "a@b.example", "--role", "admin"], "no tenant with slug 'nope'"),
        (["--tenant", "acme", "--email", "not-an-email", "--role", "admin"], "is not a valid email address"),
    ],
)
def test_add_member_errors(world, args, message):
    with pytest.raises(CommandError, match=message):
        gateway("add-member", *args)


def test_add_member_refuses_an_unknown_role(world):
    with pytest.raises(CommandError):
        gateway("add-member", "--tenant", "acme", "--email", "a@b.example", "--role", "god")


def test_mint_token_prints_only_the_token(world, client):
    out = gateway("mint-token", "--tenant", "acme", "--name", "terraform", "--role", "admin")
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gwm-")
    token = ManagementToken.objects.get(token_hash=hash_secret(lines[0]))
    assert token.tenant == world.acme and token.role == Role.ADMIN and token.name == "terraform"
    response = client.get("/api/v1/keys/", headers={"Authorization": f"Bearer {lines[0]}"})
    assert response.status_code == 200


EXAMPLE = """\
tenant: roundtrip
name: Round Trip Inc
providers:
  - name: main
    kind: openai-compatible
    base_url: https://llm.example.com/v1
    api_key: env:ROUNDTRIP_KEY
  - name: mock
    kind: mock
models:
  - name: fast
    deployments:
      - provider: main
        model: small-1
      - provider: mock
        model: mock-chat
  - name: team/embed
    deployments:
      - provider: main
        model: embed-2
"""


def test_export_applies_back_unchanged(db, monkeypatch):
    monkeypatch.setenv("ROUNDTRIP_KEY", "sk-upstream-abcdefghijkl")
    # Public name resolution is not wanted in a test: llm.example.com is checked again at connect time.
    monkeypatch.setattr("routing.services.validate_base_url", lambda url: None)
    apply_config(EXAMPLE)
    exported = gateway("export", "--tenant", "roundtrip")
    assert "sk-upstream" not in exported
    _tenant, changes = apply_config(exported)
    assert changes == []
    assert gateway("export", "--tenant", "roundtrip") == exported


def test_export_never_prints_a_literal_key(world):
    provider = ProviderCredential.objects.get(tenant=world.acme, name="mock")
    from routing.services import provider_upsert
    from tenants.audit import Actor

    provider_upsert(world.acme, name="openai", kind="openai", api_key="sk-literal-0123456789", actor=Actor.cli())
    exported = gateway("export", "--tenant", "acme")
    assert "sk-literal" not in exported
    assert "env:ACME_OPENAI_API_KEY" in exported
    assert provider.name in exported
