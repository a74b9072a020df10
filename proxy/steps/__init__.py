"""Policy steps: what rewrites or observes a call between the client and the provider.

A tenant's policies are compiled into a tuple of objects with these hooks, stored on
`TenantEntry.steps` at load time: PII redaction and restore (pii.py, the engine being
routing.policies), body logging (bodylog.py) and the exact prompt cache (cache.py). A tenant without
policies has an empty tuple, and the pipeline then does no work for steps at all.

Requests pass the steps in order, answers in reverse order (`on_response`, `stream_filter`): the last
step to see the request is the first to see the answer. So the prompt cache, last, keys on the redacted
request and stores the upstream's unrestored answer, and its hits are restored by the PII step like any
upstream answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from proxy.call import Call

# Sees each relayed stream event (bytes of one SSE event); returns the event to send (rewritten or
# not), None to hold it back, or a list of events (e.g. text a filter held back, flushed in its own
# event before a finish event).
StreamFilter = Callable[[bytes], bytes | list[bytes] | None]
# A filter that ends the stream (its last event an error) sets call.step_state[STREAM_END]: the relay then
# stops reading the upstream (proxy.relay).
STREAM_END = "end_stream"


def apply_filters(filters: list[StreamFilter], event: bytes) -> list[bytes]:
    """The events to send for one relayed event, each filter seeing what the previous one returned."""
    events = [event]
    for stream_filter in filters:
        out: list[bytes] = []
        for item in events:
            result = stream_filter(item)
            if result is None:
                continue
            if isinstance(result, list):
                out.extend(result)
            else:
                out.append(result)
        events = out
        if not events:
            break
    return events


class Step(Protocol):
    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        """Rewrite the request body before routing (payload is this call's own copy), or answer now
        with a complete JSON body (a cache hit, a block): no provider is called then."""
        ...

    def on_response(self, call: Call, body: bytes) -> bytes:
        """Rewrite or observe a complete (non-streamed) successful answer."""
        ...

    def stream_filter(self, call: Call) -> StreamFilter | None:
        """A filter for this call's stream events, or None when the step need not see them (the relay
        then stays a byte copy)."""
        ...
