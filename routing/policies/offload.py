"""The PII scan of one payload in a scanner process (proxy.steps.scanpool): a pure function of the
normalized policy and the payload, importing nothing of Django's settings, so that a scanner process
starts in a fraction of a second. Compiled policies are kept per process, by their JSON."""

from __future__ import annotations

import functools
from typing import Any

import orjson

from routing.policies.engine import PiiPolicy, PiiSession, compile_policy


@functools.lru_cache(maxsize=64)
def _policy(spec_json: bytes) -> PiiPolicy:
    return compile_policy(orjson.loads(spec_json))


def scan_payload(spec_json: bytes, payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload as the provider may receive it, and the session's state (counts and pseudonyms) for
    the parent to restore answers with. Raises what PiiSession.apply raises (PiiBlocked, ScanTimeout)."""
    session = PiiSession(_policy(spec_json))
    session.apply_payload(payload)
    return payload, {
        "counts": session.counts,
        "placeholders": session.placeholders,
        "values": session.values,
        "counters": session.counters,
    }
