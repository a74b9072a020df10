"""Keeping a deployment's own secrets out of what the gateway relays and stores.

A provider that refuses a credential often quotes it back ("Incorrect API key provided: sk-..."),
in full or masked ("sk-abc***xyz"). That text must reach neither the virtual key's holder nor the call
log. Only error paths call this: a successful answer is relayed untouched.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
# Header values the gateway adds that are not secrets.
_PLAIN_HEADERS = frozenset(
    {"content-type", "accept", "accept-encoding", "user-agent", "x-request-id", "anthropic-version", "anthropic-beta"}
)
# Credentials an adapter may carry besides api_key (read with getattr: not every deployment has them).
_SECRET_ATTRS = ("api_key", "aws_secret_access_key", "aws_session_token", "aws_access_key_id")
MIN_SECRET = 8  # shorter "secrets" would redact ordinary words
MIN_PIECE = 10  # an unmasked prefix or suffix of a secret this long is redacted
MIN_MASKED_PIECE = 3  # a masked key ("sk-abc***xyz") is redacted when a visible piece starts or ends a secret

# Runs of characters that keys are made of, plus the masks providers print in place of the middle.
_TOKEN = re.compile(r"[A-Za-z0-9_\-+/=.*\u2026]{6,}")
_MASK = re.compile(r"\*+|\.{2,}|\u2026")


def secrets_of(deployment: Any) -> list[str]:
    found: list[str] = []
    for attr in _SECRET_ATTRS:
        value = getattr(deployment, attr, None)
        if isinstance(value, str) and len(value) >= MIN_SECRET:
            found.append(value)
    # The adapter's own headers, then the operator's `headers:` (values may hold tokens: scrub them all).
    for name, value in [
        *(getattr(deployment, "headers", None) or {}).items(),
        *(getattr(deployment, "extra_headers", None) or {}).items(),
    ]:
        if name.lower() in _PLAIN_HEADERS or not isinstance(value, str):
            continue
        found.append(value)
        _scheme, _, credential = value.partition(" ")
        if credential:
            found.append(credential)
    # Longest first, so that "Bearer sk-..." goes before "sk-..." leaves a dangling "Bearer".
    return sorted({s for s in found if len(s) >= MIN_SECRET}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    if not text or not secrets:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)

    def partial(match: re.Match[str]) -> str:
        token = match.group(0)
        core = token.rstrip(".")
        end = token[len(core) :]  # a sentence's full stop is not part of the key
        pieces = [p for p in _MASK.split(token) if p]
        if len(pieces) > 1 or (pieces and len(pieces[0]) < len(core)):
            # A masked form: its visible pieces are the secret's beginning and/or end.
            for piece in pieces:
                piece = piece.rstrip(".")
                if len(piece) >= MIN_MASKED_PIECE and any(s.startswith(piece) or s.endswith(piece) for s in secrets):
                    return REDACTED + end
            return token
        core = core.lstrip(".")
        if len(core) >= MIN_PIECE and any(core in s for s in secrets):
            return token.replace(core, REDACTED)
        return token

    return _TOKEN.sub(partial, text)


def redact_bytes(body: bytes, secrets: list[str]) -> bytes:
    if not body or not secrets:
        return body
    text = body.decode("utf-8", "replace")
    cleaned = redact(text, secrets)
    return body if cleaned == text else cleaned.encode()
