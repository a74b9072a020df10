"""Ids that carry their creation time: `<prefix>_` + milliseconds since the epoch (12 hex digits) + random
hex. A record written a flush or two after its id was handed out (a stored response, a call's log row)
can then be waited for while the id is young, and an unknown or old id refused at once."""

from __future__ import annotations

import os
import time


def timed_id(prefix: str, random_bytes: int) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(random_bytes).hex()}"


def id_age_s(value: str, prefix: str) -> float | None:
    """Seconds since a timed_id(prefix) was made, or None for a value that is not one."""
    start = len(prefix) + 1
    stamp = value[start : start + 12]
    if not value.startswith(f"{prefix}_") or len(stamp) != 12:
        return None
    try:
        return time.time() - int(stamp, 16) / 1000
    except ValueError:
        return None
