"""The PII policy as a pipeline step: the engine (routing.policies.engine) applied to each call.

`pii_step(spec)` compiles a stored policy (Tenant.pii_policy, VirtualKey.pii_policy) once, at config
load; a policy that no longer passes the grammar refuses every request. Per request, `PiiStep` applies
the policy to the payload and restores answers, whole or streamed. Fails closed: a scan that raises or
runs out of time refuses the request; nothing unscanned is forwarded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings

from gateway_project.common.crypto import user_pseudonym
from proxy.errors import ProxyError
from proxy.sse import event_data
from proxy.steps.scanpool import scan_off_loop, too_large
from routing.policies.engine import PiiBlocked, PiiPolicy, PiiScanError, PiiSession, compile_policy
from routing.policies.spec import PolicyError, normalize_pii

if TYPE_CHECKING:
    from proxy.call import Call

logger = logging.getLogger("gateway.pii")

# Streamed answers scanned for new PII (scan_responses) hold back this many characters, so that a
# value split across events is seen whole before any of it is sent.
RESPONSE_WINDOW = 96


class PiiStreamFilter:
    """Restores (and with scan_responses, scans) streamed answers while they stream.

    Each choice's content and each tool call's arguments is a channel; a channel holds back at most
    the longest placeholder (or the response window when answers are scanned). Held text is flushed
    in its own chunk before the choice's finish event, a usage chunk, [DONE] or an error event.
    Events without a placeholder delimiter pass through as bytes while nothing is held."""

    __slots__ = ("call", "envelope", "held", "restorer", "scan", "session", "usage_key")

    def __init__(self, session: PiiSession, call: Call | None = None) -> None:
        self.session = session
        self.call = call
        self.restorer = session.get_restorer()
        self.scan = session.policy.scan_responses
        self.held: dict[tuple[int, int], str] = {}  # (choice index, -1 for content or tool index) -> text
        self.envelope: dict[str, Any] = {}
        self.usage_key = False

    def __call__(self, event: bytes) -> bytes | list[bytes] | None:
        if not self.held and not self.scan and b"<" not in event and b"\\u003c" not in event.lower():
            return event
        data = event_data(event)
        try:
            chunk = orjson.loads(data) if data.startswith(b"{") else None
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict) or "error" in chunk or not isinstance(chunk.get("choices"), list):
            if self.scan and self.call is not None:
                scrub_logged_answer(self.call, self.session.policy)  # [DONE] or an error: the stream is over
            return [*self._flush(None), event]  # [DONE], an error event, something unknown
        self.envelope = {
            k: chunk[k]
            for k in ("id", "object", "created", "model", "service_tier", "system_fingerprint")
            if k in chunk
        }
        self.usage_key = "usage" in chunk
        choices = chunk["choices"]
        if not choices:
            return [*self._flush(None), event]  # the usage chunk
        before: list[bytes] = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            final = choice.get("finish_reason") is not None
            delta = choice.get("delta")
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    delta["content"] = self._feed((index, -1), delta["content"], final)
                for tool_call in delta.get("tool_calls") or ():
                    function = tool_call.get("function") if isinstance(tool_call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        key = (index, tool_call.get("index", 0))
                        function["arguments"] = self._feed(key, function["arguments"], final)
            if final:
                before += self._flush(index)
        return [*before, b"data: " + orjson.dumps(chunk) + b"\n\n"]

    def _feed(self, key: tuple[int, int], text: str, final: bool) -> str:
        held = self.held.pop(key, "")
        json_text = key[1] >= 0
        if self.scan:
            out, rest = self._scan_feed(held + text, final, json_text)
        elif self.restorer is not None:
            out, rest = self.restorer.feed(held, text, json_text)
            if final:
                out, rest = out + rest, ""
        else:
            out, rest = held + text, ""
        if rest:
            self.held[key] = rest
        return out

    def _scan_feed(self, buf: str, final: bool, json_text: bool) -> tuple[str, str]:
        session = self.session
        cut = len(buf) if final else max(len(buf) - RESPONSE_WINDOW, 0)
        if 0 < cut < len(buf):
            # Never cut through a value (or a placeholder): send up to its start, hold the rest.
            for start, end, _detector in session.policy.find(buf, session.budget):
                if start < cut < end:
                    cut = start
                    break
            if self.restorer is not None:
                for m in self.restorer.pattern.finditer(buf, max(cut - self.restorer.max_len, 0)):
                    if m.start() < cut < m.end():
                        cut = m.start()
                        break
        if cut == 0:
            return "", buf
        return session.answer_text(buf[:cut], json_text), buf[cut:]

    def _flush(self, index: int | None) -> list[bytes]:
        """Chunks carrying what is held for one choice (or all), in the stream's own envelope."""
        out = []
        for key in [k for k in self.held if index is None or k[0] == index]:
            text = self.held.pop(key)
            if self.scan:
                text = self.session.answer_text(text, key[1] >= 0)
            if not text:
                continue
            if key[1] < 0:
                delta: dict[str, Any] = {"content": text}
            else:
                delta = {"tool_calls": [{"index": key[1], "function": {"arguments": text}}]}
            chunk: dict[str, Any] = {
                **self.envelope,
                "choices": [{"index": key[0], "delta": delta, "logprobs": None, "finish_reason": None}],
            }
            if self.usage_key:
                chunk["usage"] = None
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        return out


def scrub_logged_answer(call: Call, policy: PiiPolicy) -> None:
    """With scan_responses, the answer kept for the body log (proxy.steps.bodylog, which sees answers before
    this step, so that it stores placeholders rather than restored values) loses new PII too."""
    bodies = getattr(call, "bodies", None)
    if not isinstance(bodies, dict):
        return
    kept = bodies.get("response_body")
    if not kept:
        return
    # A session of its own: what the log keeps is not what the client got, so it is not counted twice.
    scrubber = PiiSession(policy)
    try:
        if isinstance(kept, str):
            bodies["response_body"] = scrubber.apply(kept, "answer", response=True)
        elif isinstance(kept, list):  # a stream's content deltas
            kept[:] = [scrubber.apply("".join(t for t in kept if isinstance(t, str)), "answer", response=True)]
    except Exception:
        logger.exception("pii scan of a logged answer failed; the answer is not logged")
        bodies["response_body"] = "[not logged: the data policy scan failed]"


class PiiStep:
    """The PII policy as a pipeline step (proxy.steps.Step). First in `TenantEntry.steps`, so that
    every later step (the prompt cache) sees only the redacted request and the unrestored answer."""

    __slots__ = ("policy", "spec_json")

    def __init__(self, policy: PiiPolicy, spec_json: bytes = b"") -> None:
        self.policy = policy
        self.spec_json = spec_json  # the normalized policy, for scanner processes (proxy.steps.scanpool)

    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        session = PiiSession(self.policy)
        call.step_state["pii"] = session
        call.pii_actions = session.counts
        size = call.prompt_estimate * 3  # the request body's size (pipeline: len(body) // 3 + 1)
        if size > settings.GATEWAY_PII_SCAN_MAX_BYTES:
            raise too_large(
                f"The request is too large for the data policy to scan ({size:,} bytes; the limit is "
                f"{settings.GATEWAY_PII_SCAN_MAX_BYTES:,}, GATEWAY_PII_SCAN_MAX_BYTES); it was not sent."
            )
        raw_user = payload.get("user")
        try:
            if size > settings.GATEWAY_PII_INLINE_BYTES and self.spec_json and call.key is not None:
                # Large: in a scanner process, so that the event loop keeps serving everyone else.
                await scan_off_loop(session, self.spec_json, payload, call.key.tenant_id)
            else:
                session.apply_payload(payload)
        except ProxyError:
            raise
        except PiiBlocked as exc:
            raise ProxyError(
                400,
                f"The request was blocked by the data policy: the {exc.detector!r} detector found a value "
                f"that may not be sent to a provider (in {exc.where}).",
                param=exc.where,
                code="pii_blocked",
            ) from None
        except PiiScanError as exc:
            raise ProxyError(
                400,
                f"The data policy could not scan this request ({exc}); it was not sent. "
                "Shorten the text or ask an admin to simplify the pattern.",
                code="pii_scan_failed",
            ) from None
        except Exception:
            # Fail closed: never forward a request that was not fully scanned. The traceback names
            # code, not the text being scanned.
            logger.exception("pii scan failed")
            raise ProxyError(
                500,
                "The data policy scan failed; the request was not sent. Retry, or contact the gateway admin.",
                type="server_error",
                code="pii_scan_failed",
            ) from None
        if isinstance(raw_user, str) and payload.get("user") != raw_user and call.key is not None:
            # The end-user id held personal data: upstream and in every record (call log, ledger,
            # rollups, the live feed, exports) it becomes a stable pseudonym, so per-user figures
            # still add up. Rules and budgets keep matching the id the client sent (call.user).
            payload["user"] = call.logged_user = user_pseudonym(call.key.tenant_id, raw_user)
        return None

    def on_response(self, call: Call, body: bytes) -> bytes:
        session = call.step_state.get("pii")
        if session is None or call.endpoint == "embeddings":
            return body  # vectors: nothing to restore or scan
        if self.policy.scan_responses:
            scrub_logged_answer(call, self.policy)
        return session.restore_body(body)

    def stream_filter(self, call: Call) -> PiiStreamFilter | None:
        session = call.step_state.get("pii")
        if session is None or (not session.values and not self.policy.scan_responses):
            return None
        return PiiStreamFilter(session, call)


class BrokenPolicyStep:
    """A stored policy that no longer compiles: refuse every request rather than send it unscanned."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        raise ProxyError(
            500,
            f"The data policy of this tenant or key is invalid ({self.reason}); the request was not sent. "
            "Ask an admin to fix the pii policy.",
            type="server_error",
            code="pii_policy_invalid",
        )

    def on_response(self, call: Call, body: bytes) -> bytes:
        return body

    def stream_filter(self, call: Call) -> None:
        return None


def pii_step(spec: dict | None) -> PiiStep | BrokenPolicyStep | None:
    """The step for a stored policy (None when there is none or it does nothing)."""
    if spec is None:
        return None
    try:
        normalized = normalize_pii(spec)
        policy = compile_policy(normalized)
    except PolicyError as exc:
        return BrokenPolicyStep(str(exc))
    if not policy.actions:
        return None
    return PiiStep(policy, orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS))


def with_key_policy(steps: tuple, key_step: PiiStep | BrokenPolicyStep | None) -> tuple:
    """The tenant's steps with the key's own policy in place of the tenant's (first, by contract)."""
    rest = tuple(s for s in steps if not isinstance(s, (PiiStep, BrokenPolicyStep)))
    return (key_step, *rest) if key_step is not None else rest
