"""The admin signs in through allauth (rate limits, TOTP); someone invited signs up straight into the
inviting tenant, with the invited address filled in; the verification page says where e-mail goes."""

from __future__ import annotations

import io
import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse

from tenants.audit import Actor
from tenants.models import Invitation, Membership, Role
from tenants.services import invitation_create, invitation_revoke
from tests.helpers.people import PASSWORD

pytestmark = pytest.mark.usefixtures("console_defaults")

PRINTED = re.compile(r"prints e-mail to the server(?:'|&#x27;)s terminal")
CONSOLE_MAIL = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend", "OPTIONS": {}}}


def make_superuser(email: str = "root@acme.example"):
    # As `createsuperuser` does: its address is verified on creation (tenants.signals), no code asked.
    return get_user_model().objects.create_superuser(username="root", email=email, password=PASSWORD)


def in_admin(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


# --- The admin -------------------------------------------------------------------------------------


def test_thirty_wrong_admin_passwords_then_the_right_one_do_not_log_in(world):
    make_superuser()
    client = Client()
    for _ in range(30):
        client.post("/admin/login/", {"username": "root", "password": "wrong", "next": "/admin/"})
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))
    assert not in_admin(client)


def test_the_admin_login_sends_to_allauth_and_its_rate_limit_applies(world):
    make_superuser()
    client = Client()
    response = client.get("/admin/")
    response = client.get(response["Location"])
    assert response["Location"] == reverse("account_login") + "?next=%2Fadmin%2F"
    for _ in range(30):
        client.post(reverse("account_login"), {"login": "root@acme.example", "password": "wrong"})
    response = client.post(
        reverse("account_login") + "?next=/admin/", {"login": "root@acme.example", "password": PASSWORD}
    )
    # allauth refuses: its failed-login limit per account, or its login limit per IP (a bare 429).
    assert response.status_code == 429 or "Too many failed login attempts" in response.content.decode()
    assert not in_admin(client)


def test_a_superuser_signs_in_through_allauth_and_reaches_the_admin(world):
    make_superuser()
    client = Client()
    response = client.post(
        reverse("account_login") + "?next=/admin/", {"login": "root@acme.example", "password": PASSWORD}
    )
    assert response["Location"] == "/admin/"
    assert in_admin(client)
    # Already signed in: the admin's login URL goes straight on.
    assert client.get("/admin/login/?next=/admin/auth/user/")["Location"] == "/admin/auth/user/"


def test_createsuperuser_makes_an_operator_who_signs_in_without_an_emailed_code(world):
    from django.core.management import call_command

    call_command("createsuperuser", "--noinput", username="ops", email="ops@acme.example", stdout=io.StringIO())
    user = get_user_model().objects.get(username="ops")
    user.set_password(PASSWORD)
    user.save()
    assert EmailAddress.objects.get(user=user).verified
    client = Client()
    mail.outbox.clear()
    response = client.post(
        reverse("account_login") + "?next=/admin/", {"login": "ops@acme.example", "password": PASSWORD}
    )
    assert response["Location"] == "/admin/" and not mail.outbox
    assert in_admin(client)


def test_the_admin_login_does_not_redirect_off_site(world):
    response = Client().get("/admin/login/?next=https://evil.example/")
    assert response["Location"] == reverse("account_login") + "?next=%2Fadmin%2F"


def test_a_signed_in_non_staff_user_gets_403_not_a_redirect_loop(world, client_as):
    assert client_as(world.alice).get("/admin/login/?next=/admin/").status_code == 403
    assert not in_admin(client_as(world.alice))


# --- Signing up through an invitation --------------------------------------------------------------


def _invite(world, email: str = "frank@acme.example", role: str = Role.ADMIN) -> str:
    _inv, token = invitation_create(world.acme, email=email, role=role, actor=Actor(user=world.alice))
    return reverse("invitation-accept", kwargs={"token": token})


def _verify(client: Client, response) -> str:
    code = re.search(r"^\s*([A-Z0-9]{3,}(?:-[A-Z0-9]{3,})*)\s*$", mail.outbox[-1].body, re.M).group(1)
    return client.post(response["Location"], {"code": code}, follow=True).request["PATH_INFO"]


def _sign_up_from(client: Client, invitation_path: str, email: str):
    page = client.get(invitation_path).content.decode()
    link = re.search(r'href="(/accounts/signup/[^"]+)"', page).group(1).replace("&amp;", "&")
    mail.outbox.clear()
    return client.post(link, {"email": email, "password1": PASSWORD, "password2": PASSWORD})


def test_the_signup_form_from_an_invitation_shows_the_invited_address(world):
    client = Client()
    page = client.get(_invite(world)).content.decode()
    link = re.search(r'href="(/accounts/signup/[^"]+)"', page).group(1).replace("&amp;", "&")
    form = client.get(link).content.decode()
    assert re.search(r'<input[^>]*name="email"[^>]*value="frank@acme.example"', form), form


def test_an_invited_newcomer_joins_the_inviting_tenant_without_a_code_and_gets_no_workspace(world):
    path = _invite(world)
    frank = Client()
    response = _sign_up_from(frank, path, "frank@acme.example")
    user = get_user_model().objects.get(email="frank@acme.example")
    # The invitation went to this address: no code to type, no second e-mail; he is in, and signed in.
    assert not mail.outbox
    assert EmailAddress.objects.get(user=user).verified
    landed = frank.get(response["Location"], follow=True).request["PATH_INFO"]
    assert landed == reverse("tenant-overview", kwargs={"slug": "acme"})
    memberships = list(Membership.objects.filter(user=user).values_list("tenant__slug", "role"))
    assert memberships == [("acme", Role.ADMIN)]
    assert Invitation.objects.get(email="frank@acme.example").accepted_at is not None
    # The link is used up: someone else who opens it learns nothing more.
    assert Client().get(path).status_code == 404


def test_signing_up_with_another_address_than_invited_gives_the_usual_workspace(world):
    path = _invite(world)
    grace = Client()
    response = _sign_up_from(grace, path, "grace@hopper.example")
    _verify(grace, response)
    user = get_user_model().objects.get(email="grace@hopper.example")
    assert list(Membership.objects.filter(user=user).values_list("tenant__slug", flat=True)) == ["grace"]
    assert Invitation.objects.get(email="frank@acme.example").accepted_at is None


def test_an_invitation_cancelled_before_sign_up_falls_back_to_a_workspace_and_a_code(world):
    path = _invite(world)
    frank = Client()
    page = frank.get(path).content.decode()  # the link is opened, then the invitation is cancelled
    invitation_revoke(
        world.acme, invitation=Invitation.objects.get(email="frank@acme.example"), actor=Actor(user=world.alice)
    )
    link = re.search(r'href="(/accounts/signup/[^"]+)"', page).group(1).replace("&amp;", "&")
    mail.outbox.clear()
    response = frank.post(link, {"email": "frank@acme.example", "password1": PASSWORD, "password2": PASSWORD})
    _verify(frank, response)  # nothing proves the address any more: the usual code
    user = get_user_model().objects.get(email="frank@acme.example")
    assert list(Membership.objects.filter(user=user).values_list("tenant__slug", "role")) == [("frank", Role.OWNER)]


# --- Where the e-mail goes -------------------------------------------------------------------------


def test_the_verification_page_says_the_code_is_in_the_terminal_with_the_console_backend(db, settings):
    client = Client()
    response = client.post(
        reverse("account_signup"), {"email": "grace@hopper.example", "password1": PASSWORD, "password2": PASSWORD}
    )
    page = response["Location"]
    assert not PRINTED.search(client.get(page).content.decode())
    settings.MAILERS = CONSOLE_MAIL
    assert PRINTED.search(client.get(page).content.decode())


def test_the_password_reset_page_says_the_link_is_in_the_terminal_with_the_console_backend(world, settings):
    settings.MAILERS = CONSOLE_MAIL
    response = Client().post(reverse("account_reset_password"), {"email": "erin@acme.example"}, follow=True)
    assert PRINTED.search(response.content.decode())
