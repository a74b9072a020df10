"""Tiny in-process counters for events that must not pass silently (a refused call log row, ...).

Per process, reset on restart: enough for tests and logs to read. /metrics shows them summed over
processes as `gateway_internal_events_total{event=...}` (observability.exposition pushes what they
gained with each flushed batch).
"""

from __future__ import annotations

import threading
from collections import Counter

_counts: Counter[str] = Counter()
_lock = threading.Lock()  # the log flusher runs in worker threads


def incr(name: str, amount: int = 1) -> None:
    with _lock:
        _counts[name] += amount


def value(name: str) -> int:
    return _counts[name]


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)
