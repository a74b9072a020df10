"""Links in e-mails point at PUBLIC_URL, never at the Host header a client sent.

Mallory asks for a password reset for Alice's address with `Host: evil.example`. By default the
gateway refuses that host (400, no mail). If the operator allows any host, the mail still goes out,
but its link leads to PUBLIC_URL, not to Mallory's server.
"""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from tenants.audit import Actor
from tenants.services import invitation_create
from tests.helpers.people import PASSWORD, make_user

pytestmark = pytest.mark.usefixtures("console_defaults")

PUBLIC_URL = "https://gateway.acme.example"
EVIL = "evil.example"


@pytest.fixture
def alice(db, settings):
    settings.PUBLIC_URL = PUBLIC_URL
    return make_user("alice@acme.example")


def _links(body: str) -> list[str]:
    return re.findall(r"https?://[^\s\"'<>]+", body)


def test_a_forged_host_is_refused_by_default(alice, settings):
    # The default ALLOWED_HOSTS: PUBLIC_URL's host plus loopback (and Django's test host).
    assert EVIL not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS
    response = Client().post(reverse("account_reset_password"), {"email": alice.email}, HTTP_HOST=EVIL)
    assert response.status_code == 400
    assert mail.outbox == []


def test_password_reset_link_uses_public_url_whatever_the_host(alice, settings):
    settings.ALLOWED_HOSTS = ["*"]  # an operator who allowed every host
    response = Client().post(reverse("account_reset_password"), {"email": alice.email}, HTTP_HOST=EVIL)
    assert response.status_code == 302
    (message,) = mail.outbox
    links = _links(message.body)
    assert any("/accounts/password/reset/key/" in link for link in links), message.body
    assert all(link.startswith(PUBLIC_URL + "/") for link in links), links
    assert EVIL not in message.body


def test_a_reset_for_an_unknown_address_links_to_public_url(db, settings):
    settings.PUBLIC_URL = PUBLIC_URL
    settings.ALLOWED_HOSTS = ["*"]
    Client().post(reverse("account_reset_password"), {"email": "nobody@acme.example"}, HTTP_HOST=EVIL)
    (message,) = mail.outbox
    assert any("/accounts/signup/" in link for link in _links(message.body)), message.body
    assert all(link.startswith(PUBLIC_URL + "/") for link in _links(message.body))
    assert EVIL not in message.body


def test_the_verification_mail_names_public_url_not_the_host(db, settings):
    settings.PUBLIC_URL = PUBLIC_URL
    settings.ALLOWED_HOSTS = ["*"]
    data = {"email": "grace@hopper.example", "password1": PASSWORD, "password2": PASSWORD}
    response = Client().post(reverse("account_signup"), data, HTTP_HOST=EVIL)
    assert response.status_code == 302
    (message,) = mail.outbox
    assert EVIL not in message.body
    assert "gateway.acme.example" in message.body


def test_the_invitation_link_uses_public_url(alice, settings, django_capture_on_commit_callbacks):
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="acme", name="Acme")
    with django_capture_on_commit_callbacks(execute=True):
        invitation_create(tenant, email="bob@globex.example", role="member", actor=Actor.cli())
    (message,) = mail.outbox
    links = _links(message.body)
    assert links and all(link.startswith(PUBLIC_URL + "/invitations/") for link in links), message.body
