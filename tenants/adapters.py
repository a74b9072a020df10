"""allauth hooks: who may sign up."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.http import HttpRequest

INVITATION_SESSION_KEY = "invitation_token"


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # With sign-up closed, someone holding an invitation link may still create their account.
        return settings.ACCOUNT_ALLOW_SIGNUPS or bool(request.session.get(INVITATION_SESSION_KEY))
