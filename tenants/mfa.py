"""Two-factor secrets at rest: allauth stores TOTP keys and recovery-code seeds in the database, in
clear unless its adapter encrypts them. A database dump must not be enough to pass a second factor,
so they are encrypted like provider keys (gateway_project.common.crypto, rotated with the same command).
"""

from __future__ import annotations

from allauth.mfa.adapter import DefaultMFAAdapter

from gateway_project.common import crypto

# Fernet tokens always start with this (version byte 0x80, base64): anything else was stored before
# encryption was turned on and is read as it is.
_FERNET_PREFIX = "gAAAAA"


class MFAAdapter(DefaultMFAAdapter):
    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        if not encrypted_text.startswith(_FERNET_PREFIX):
            return encrypted_text
        return crypto.decrypt(encrypted_text)
