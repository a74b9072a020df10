"""Making strings from requests and upstreams storable in PostgreSQL.

PostgreSQL refuses a NUL character in text and in jsonb ("\\u0000"), and psycopg cannot encode a lone
surrogate as UTF-8. Either would make the database refuse the whole call log row, and the spend
ledger written with it. Both are replaced by U+FFFD; the common case costs two C-level scans.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(value: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATE.sub("\ufffd", value)
    return value


def storable_deep(value: Any) -> Any:
    """storable() on every string (keys too) inside JSON-like data."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_deep(k): storable_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_deep(v) for v in value]
    return value
