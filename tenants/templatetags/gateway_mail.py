"""Tells account pages whether e-mail really leaves this server."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def mail_is_printed() -> bool:
    """True when the console e-mail backend is in use (the embedded default): messages, and so the
    verification codes, only appear in the terminal that runs the server."""
    mailers = getattr(settings, "MAILERS", None) or {}
    backend = (mailers.get("default") or {}).get("BACKEND") or getattr(settings, "EMAIL_BACKEND", "")
    return backend == "django.core.mail.backends.console.EmailBackend"
