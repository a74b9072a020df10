"""Body logging as a policy step: the request and the answer of a call, kept for its log row.

Only tenants with `log_bodies` on get this step (TenantEntry.steps), so other tenants pay nothing. It
sits right after the PII step: it sees the request as PII redaction left it, and (answers pass the
steps in reverse) the answer before PII restore puts the original values back, so what is stored is
redacted both ways. Text beyond the stored cap is not even kept in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from observability.models import BODY_MAX_CHARS

if TYPE_CHECKING:
    from proxy.call import Call
    from proxy.steps import StreamFilter


class BodyLogStep:
    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        call.bodies = {"request_body": orjson.dumps(payload).decode()[: BODY_MAX_CHARS + 1]}
        return None

    def on_response(self, call: Call, body: bytes) -> bytes:
        if call.bodies is not None:
            call.bodies["response_body"] = body[: BODY_MAX_CHARS * 4].decode("utf-8", "replace")
        return body

    def stream_filter(self, call: Call) -> StreamFilter | None:
        if call.bodies is None:
            return None
        parts: list[str] = []
        call.bodies["response_body"] = parts  # joined by the log writer
        size = [0]

        def keep(event: bytes) -> bytes:
            # The text of each content delta; the raw SSE framing is not worth its bytes.
            if size[0] <= BODY_MAX_CHARS:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                        continue
                    try:
                        chunk = orjson.loads(line[5:])
                        text = chunk["choices"][0]["delta"].get("content") or ""
                    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                        continue
                    if isinstance(text, str) and text:
                        parts.append(text)
                        size[0] += len(text)
            return event

        return keep


BODY_LOG = BodyLogStep()
