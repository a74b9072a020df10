"""allauth hooks: who may sign up, and where the links in its e-mails point."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

INVITATION_SESSION_KEY = "invitation_token"


def public_url(path: str) -> str:
    """An absolute link on the operator's PUBLIC_URL, whatever Host header the request carried."""
    return settings.PUBLIC_URL + path


def _rebase(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return url
    return public_url(
        parts.path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    )


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # With sign-up closed, someone holding an invitation link may still create their account.
        return settings.ACCOUNT_ALLOW_SIGNUPS or bool(request.session.get(INVITATION_SESSION_KEY))

    # allauth builds its links from the request's Host header, which the client chooses: a forged Host
    # on "forgot password" would mail the victim a reset link to the attacker's server. Every link
    # in every allauth mail is therefore built from PUBLIC_URL.

    def get_reset_password_from_key_url(self, key: str) -> str:
        path = reverse("account_reset_password_from_key", kwargs={"uidb36": "UID", "key": "KEY"})
        return public_url(path.replace("UID-KEY", quote(key)))

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        # Every other link allauth puts in a mail's context (verification, and the sign-up and reset
        # links of the "account already exists" and "unknown account" mails) and the greeting's site
        # name follow PUBLIC_URL too.
        context = {key: _rebase(value) if isinstance(value, str) else value for key, value in context.items()}
        host = urlsplit(settings.PUBLIC_URL).netloc
        context["current_site"] = SimpleNamespace(domain=host, name=host)
        super().send_mail(template_prefix, email, context)
