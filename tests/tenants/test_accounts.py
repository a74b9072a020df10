"""Accounts: sign-up with email verification, a first tenant, logins in the audit log, rate limits,
password reset, TOTP, single sign-on settings, invitations and tenant switching."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tenants.audit import Actor
from tenants.models import AuditLog, Invitation, Membership, Role
from tenants.services import invitation_create
from tests.helpers.people import PASSWORD, make_user

pytestmark = pytest.mark.usefixtures("console_defaults")

ROOT = Path(__file__).resolve().parents[2]


def sign_up(client: Client, email: str, *, next_url: str = "") -> str:
    """Sign up and type the emailed verification code. Returns the final page's path."""
    mail.outbox.clear()
    url = reverse("account_signup") + (f"?next={next_url}" if next_url else "")
    response = client.post(url, {"email": email, "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [email]
    code = re.search(r"^\s*([A-Z0-9]{3,}(?:-[A-Z0-9]{3,})*)\s*$", mail.outbox[0].body, re.M).group(1)
    response = client.post(response["Location"], {"code": code}, follow=True)
    return response.request["PATH_INFO"]


def test_signing_up_verifies_the_email_and_creates_a_first_tenant(db):
    client = Client()
    landed = sign_up(client, "grace@hopper.example")
    user = get_user_model().objects.get(email="grace@hopper.example")
    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER
    assert membership.tenant.slug == "grace" and membership.tenant.name == "grace's workspace"
    assert landed == reverse("tenant-overview", kwargs={"slug": "grace"})
    assert EmailAddress.objects.get(user=user).verified
    assert AuditLog.objects.filter(tenant=membership.tenant, action="tenant.create", actor=user).exists()


def test_a_second_grace_gets_a_different_slug(db):
    sign_up(Client(), "grace@hopper.example")
    sign_up(Client(), "grace@other.example")
    slugs = sorted(m.tenant.slug for m in Membership.objects.all())
    assert slugs[0] == "grace" and slugs[1].startswith("grace-")


def test_without_verification_the_console_is_out_of_reach(db):
    client = Client()
    client.post(reverse("account_signup"), {"email": "lazy@x.example", "password1": PASSWORD, "password2": PASSWORD})
    response = client.get(reverse("home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))


def test_login_is_recorded_with_the_ip_address(world):
    client = Client(REMOTE_ADDR="203.0.113.7")
    response = client.post(reverse("account_login"), {"login": "dave@acme.example", "password": PASSWORD})
    assert response.status_code == 302
    entry = AuditLog.objects.get(action="user.login", actor=world.dave)
    assert entry.ip_address == "203.0.113.7" and entry.tenant is None
    # Acme's admins see it in acme's audit log; globex's owner does not.
    alice = Client()
    alice.force_login(world.alice)
    # Sign-ins are out of the default view: shown on request.
    assert "dave@acme.example" in alice.get(reverse("audit", kwargs={"slug": "acme"}) + "?sign_ins=on").content.decode()
    bob = Client()
    bob.force_login(world.bob)
    globex_page = bob.get(reverse("audit", kwargs={"slug": "globex"}) + "?sign_ins=on").content.decode()
    assert "203.0.113.7" not in globex_page


def test_login_is_rate_limited_after_repeated_failures(world):
    client = Client()
    email = "charlie@acme.example"
    for _ in range(5):
        response = client.post(reverse("account_login"), {"login": email, "password": "wrong"})
        assert "Too many failed login attempts" not in response.content.decode()
    response = client.post(reverse("account_login"), {"login": email, "password": PASSWORD})
    assert response.status_code in (200, 429)
    assert "Too many failed login attempts" in response.content.decode()
    assert not AuditLog.objects.filter(action="user.login", actor=world.charlie).exists()


def test_password_reset_sends_an_email_with_a_link(world):
    mail.outbox.clear()
    response = Client().post(reverse("account_reset_password"), {"email": "erin@acme.example"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert "/accounts/password/reset/key/" in mail.outbox[0].body


def test_totp_is_asked_for_after_the_password(world):
    secret = generate_totp_secret()
    TOTP.activate(world.dave, secret)
    client = Client()
    response = client.post(reverse("account_login"), {"login": "dave@acme.example", "password": PASSWORD})
    assert response["Location"] == reverse("mfa_authenticate")
    assert client.get(reverse("home")).status_code == 302  # not logged in yet
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    response = client.post(reverse("mfa_authenticate"), {"code": code})
    assert response.status_code == 302
    assert client.get(reverse("keys", kwargs={"slug": "acme"})).status_code == 200
    assert AuditLog.objects.filter(action="user.login", actor=world.dave).count() == 1


def test_the_account_pages_use_the_console_layout(world, client_as):
    body = client_as(world.alice).get(reverse("mfa_index")).content.decode()
    assert "Two-factor" in body and 'class="sidenav"' in body and "htmx.min.js" in body


def _settings_in_subprocess(env: dict) -> subprocess.CompletedProcess:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(getattr(settings, 'SOCIALACCOUNT_PROVIDERS', None)))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_oidc_single_sign_on_is_configured_from_the_environment():
    result = _settings_in_subprocess(
        {
            "OIDC_CLIENT_ID": "gateway",
            "OIDC_CLIENT_SECRET": "s3cret",
            "OIDC_SERVER_URL": "https://sso.example.com/realms/acme",
            "OIDC_PROVIDER_NAME": "Acme SSO",
        }
    )
    assert result.returncode == 0, result.stderr
    app = json.loads(result.stdout)["openid_connect"]["APPS"][0]
    assert app["client_id"] == "gateway" and app["name"] == "Acme SSO"
    assert app["settings"]["server_url"] == "https://sso.example.com/realms/acme"


def test_without_oidc_variables_there_is_no_sso():
    result = _settings_in_subprocess({})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is None


def test_oidc_without_a_server_url_fails_loudly():
    result = _settings_in_subprocess({"OIDC_CLIENT_ID": "gateway"})
    assert result.returncode != 0 and "OIDC_SERVER_URL" in result.stderr


def test_the_login_page_offers_sso_when_configured(db, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "sso",
                    "name": "Acme SSO",
                    "client_id": "gateway",
                    "secret": "x",
                    "settings": {"server_url": "https://sso.example.com"},
                }
            ]
        }
    }
    body = Client().get(reverse("account_login")).content.decode()
    assert "Continue with Acme SSO" in body


def test_signup_can_be_closed_but_invitees_still_get_in(world, settings, django_capture_on_commit_callbacks):
    settings.ACCOUNT_ALLOW_SIGNUPS = False
    client = Client()
    assert "Sign Up Closed" in client.get(reverse("account_signup")).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        _inv, token = invitation_create(
            world.acme, email="frank@acme.example", role=Role.ADMIN, actor=Actor(user=world.alice)
        )
    client.get(reverse("invitation-accept", kwargs={"token": token}))
    assert "Sign Up Closed" not in client.get(reverse("account_signup")).content.decode()


# --- Invitations -----------------------------------------------------------------------------------


def test_an_invited_newcomer_signs_up_and_joins(world, client_as, django_capture_on_commit_callbacks):
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client_as(world.alice).post(
            reverse("members", kwargs={"slug": "acme"}), {"email": "frank@acme.example", "role": Role.ADMIN}
        )
    assert response.status_code == 302
    link = re.search(r"(http\S+/invitations/\S+/)", mail.outbox[0].body).group(1)
    path = link.split("testserver", 1)[-1] if "testserver" in link else "/" + link.split("/", 3)[3]
    frank = Client()
    page = frank.get(path).content.decode()
    assert "Join Acme Corp" in page and "frank@acme.example" in page
    # The invitation went to this address: signing up from its link joins acme at once, no code.
    mail.outbox.clear()
    response = frank.post(
        reverse("account_signup") + f"?next={path}",
        {"email": "frank@acme.example", "password1": PASSWORD, "password2": PASSWORD},
        follow=True,
    )
    assert not mail.outbox
    assert response.request["PATH_INFO"] == reverse("tenant-overview", kwargs={"slug": "acme"})
    response = frank.post(path)
    assert response["Location"] == reverse("tenant-overview", kwargs={"slug": "acme"})
    user = get_user_model().objects.get(email="frank@acme.example")
    assert Membership.objects.get(user=user, tenant=world.acme).role == Role.ADMIN
    # Frank signed up to join acme: no personal workspace next to it.
    assert Membership.objects.filter(user=user).count() == 1
    assert Client().post(path).status_code == 404  # used up


def test_an_invitation_for_someone_else_cannot_be_accepted(world, client_as):
    _inv, token = invitation_create(
        world.acme, email="frank@acme.example", role=Role.OWNER, actor=Actor(user=world.alice)
    )
    response = client_as(world.bob).post(reverse("invitation-accept", kwargs={"token": token}))
    assert response.status_code == 200
    assert "This invitation is for frank@acme.example" in response.content.decode()
    assert not Membership.objects.filter(user=world.bob, tenant=world.acme).exists()


def test_an_expired_invitation_is_refused(world, client_as):
    invitation, token = invitation_create(
        world.acme, email="bob@globex.example", role=Role.OWNER, actor=Actor(user=world.alice)
    )
    Invitation.objects.filter(id=invitation.id).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client_as(world.bob).post(reverse("invitation-accept", kwargs={"token": token}))
    assert response.status_code == 404
    assert not Membership.objects.filter(user=world.bob, tenant=world.acme).exists()


def test_an_unknown_invitation_token_is_404(db):
    assert Client().get(reverse("invitation-accept", kwargs={"token": "nope"})).status_code == 404


def test_the_tenant_switcher_lists_every_tenant_of_the_user(world, client_as):
    Membership.objects.create(user=world.bob, tenant=world.acme, role=Role.VIEWER)
    body = client_as(world.bob).get(reverse("tenant-overview", kwargs={"slug": "globex"})).content.decode()
    switcher = body.split('id="tenant-switcher"')[1].split("</details>")[0]
    assert "Acme Corp" in switcher and "Globex" in switcher
    assert client_as(world.bob).get(reverse("home")).status_code == 200  # a chooser when there are several


def test_home_goes_straight_to_the_only_tenant(world, client_as):
    response = client_as(world.erin).get(reverse("home"))
    assert response["Location"] == reverse("tenant-overview", kwargs={"slug": "acme"})


def test_anyone_can_create_another_tenant(world, client_as):
    response = client_as(world.charlie).post(reverse("tenant-new"), {"name": "Charlie Labs", "slug": ""})
    assert response["Location"] == reverse("tenant-overview", kwargs={"slug": "charlie-labs"})
    assert Membership.objects.get(user=world.charlie, tenant__slug="charlie-labs").role == Role.OWNER


def test_a_taken_slug_is_refused_in_the_form(world, client_as):
    response = client_as(world.charlie).post(reverse("tenant-new"), {"name": "Mine", "slug": "globex"})
    assert "The slug &#x27;globex&#x27; is taken." in response.content.decode()


def test_make_user_helper_is_verified(db):
    assert EmailAddress.objects.get(user=make_user("z@z.example")).verified


def test_dave_can_sign_in_while_redis_is_down(world, settings):
    # allauth's sign-in rate limit uses the cache: with Redis away it must act as a cold cache, not a 500.
    from tests.helpers import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "gateway_project.common.cache.ResilientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    client = Client(REMOTE_ADDR="203.0.113.8")
    response = client.post(reverse("account_login"), {"login": "dave@acme.example", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/", follow=True).status_code == 200
