"""Keys the gateway's own console or workers send calls with (the playground's per-person key, the LLM
judges' per-tenant key): a row holding the key and its secret, encrypted like provider keys, reused
while it is usable and replaced by a freshly minted one otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway_project.common.crypto import DecryptionError, decrypt, encrypt
from tenants.models import VirtualKey


def held_key(
    slot: Any, *, usable: Callable[[VirtualKey], bool], mint: Callable[[], tuple[VirtualKey, str]]
) -> tuple[VirtualKey, str]:
    """The key `slot` (a PlaygroundKey or JudgeKey row, locked by the caller with select_for_update inside
    its transaction) holds and its secret while `usable(key)`, else a new one from `mint()`, stored."""
    if slot.key is not None and slot.secret and usable(slot.key):
        try:
            return slot.key, decrypt(slot.secret)
        except DecryptionError:
            pass  # encrypted under a key since rotated away (GATEWAY_ENCRYPTION_KEY): mint another
    key, secret = mint()
    slot.key, slot.secret = key, encrypt(secret)
    slot.save()
    return key, secret
