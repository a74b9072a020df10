"""Encryption at rest for provider API keys and TOTP secrets.

GATEWAY_ENCRYPTION_KEY holds one or more Fernet keys separated by commas. The first one encrypts;
all of them decrypt, so rotating means: prepend a new key, run `gateway rotate-encryption`, then
drop the old key. Without the variable (the embedded default) a key is derived from SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    pass


@cache
def _fernet() -> MultiFernet:
    raw = settings.GATEWAY_ENCRYPTION_KEY
    if raw:
        keys = [k.strip() for k in raw.split(",") if k.strip()]
    else:
        digest = hashlib.sha256(b"gateway-encryption:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "GATEWAY_ENCRYPTION_KEY must be comma-separated Fernet keys (32 url-safe base64-encoded bytes)"
        ) from None


def reset_cache() -> None:
    _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("provider key cannot be decrypted with GATEWAY_ENCRYPTION_KEY") from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the primary key."""
    if not token:
        return ""
    return _fernet().rotate(token.encode()).decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()


@cache
def _pseudonym_key() -> bytes:
    return hashlib.sha256(b"gateway-user-pseudonym:" + settings.SECRET_KEY.encode()).digest()


def user_pseudonym(tenant_id: int, user: str) -> str:
    """A stable stand-in for an end-user id that holds personal data (an email address, a phone
    number): the same id gives the same pseudonym in one tenant, so per-user figures and budgets
    still add up, and it reveals nothing of the id (keyed with a secret of this installation)."""
    import hmac

    digest = hmac.new(_pseudonym_key(), f"{tenant_id}:{user}".encode(), hashlib.sha256).hexdigest()
    return f"user-{digest[:20]}"
