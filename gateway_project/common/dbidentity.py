"""Which deployment this process belongs to, for names in stores that several deployments may share."""

from __future__ import annotations

from django.conf import settings


def database_identity() -> str:
    """The default database's host, port and name. Redis may be shared by gateways of different
    databases (a staging copy, a test run next to a leftover server): names derived from this keep
    their call-log streams and prompt-cache entries apart, since tenant ids restart in every database.
    Read each time, not at import: tests point the settings at their own database after start-up."""
    db = settings.DATABASES["default"]
    return f"{db.get('HOST') or ''}:{db.get('PORT') or ''}/{db.get('NAME') or ''}"
