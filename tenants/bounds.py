"""Size and shape limits on the free text tenants and their clients set, shared by every app's services.

Names end up in call logs, audit rows, YAML exports and /metrics labels: each is bounded in length, and
a name is printable text (no control characters, line breaks, tabs or other invisible separators), so
that it can neither forge a log line or a metric label nor grow a row without bound. Services check
here, so the console, the API and `gateway apply` refuse the same values with the same words.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

# The longest name of a tenant, key, token, model or upstream model (their columns hold 200).
MAX_NAME_CHARS = 200
# A tag as the proxy keeps it (proxy.inbound.openai.MAX_TAG_LENGTH truncates x-gateway-tags values to
# this): a longer tag in a rule or budget could never match a call.
MAX_TAG_CHARS = 100
# Secrets (API keys, AWS credentials, extra header values): AWS session tokens run to a few KB.
MAX_SECRET_CHARS = 8192
# An email address (RFC 5321 path limit; Django's EmailField column).
MAX_EMAIL_CHARS = 254


def _a(what: str) -> str:
    return f"{'An' if what[:1].lower() in 'aeiou' else 'A'} {what}"


def text_problem(value: object, *, max_chars: int, what: str = "name") -> str:
    """Why `value` is not a usable name of at most `max_chars` characters, or "" when it is."""
    if not isinstance(value, str):
        return f"{_a(what)} must be text."
    if len(value) > max_chars:
        return f"{_a(what)} may have at most {max_chars:,} characters (this has {len(value):,})."
    if not value.isprintable():
        return f"{_a(what)} must be printable text: no control characters, line breaks or tabs."
    return ""


def check_text(value: object, field: str, *, max_chars: int = MAX_NAME_CHARS, what: str = "name") -> str:
    """`value` when it is a usable name; else ValidationError({field: why}), naming the limit."""
    problem = text_problem(value, max_chars=max_chars, what=what)
    if problem:
        raise ValidationError({field: problem})
    assert isinstance(value, str)
    return value


def check_length(value: str, field: str, *, max_chars: int, what: str) -> str:
    """Only the length: for secrets and other values that may hold any character a header allows."""
    if len(value) > max_chars:
        raise ValidationError(
            {field: f"{_a(what)} may have at most {max_chars:,} characters (this has {len(value):,})."}
        )
    return value
