"""TOTP secrets are encrypted at rest: a database dump alone must not pass Alice's second factor."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret, hotp_value

from gateway_project.common import crypto

pytestmark = pytest.mark.django_db


def _code(secret: str) -> str:
    return f"{hotp_value(secret, int(time.time()) // 30):06d}"


def test_alices_totp_secret_is_not_stored_in_clear(alice):
    secret = generate_totp_secret()
    TOTP.activate(alice, secret)
    stored = Authenticator.objects.get(user=alice, type=Authenticator.Type.TOTP).data["secret"]
    assert secret not in stored
    assert crypto.decrypt(stored) == secret


def test_alice_still_signs_in_with_her_code(alice):
    secret = generate_totp_secret()
    totp = TOTP.activate(alice, secret)
    assert totp.validate_code(_code(secret))


def test_a_secret_stored_before_encryption_still_works(alice):
    secret = generate_totp_secret()
    row = Authenticator.objects.create(user=alice, type=Authenticator.Type.TOTP, data={"secret": secret})
    assert TOTP(row).validate_code(_code(secret))
