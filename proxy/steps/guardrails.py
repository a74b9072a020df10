"""Guardrails as a pipeline step (the checks and their grammar: routing.policies.guardrails).

Input checks run on the request before routing: prompt injection on user turns and, as indirect
injection, on tool results; denied topics and keywords on the same texts; the token limits. Output
checks run on the answer: on a complete answer before the client has any of it, on a stream over a
sliding window of the text as it streams (nothing is held back, so the first token is not delayed), and
the JSON schema the request asked for once the answer is whole.

A block answers 400 `guardrail_blocked` (input) or 502 `guardrail_blocked` / `output_schema_invalid`
(output) in the caller's format, naming the check, never the text; on a stream it ends the stream with
the error event. `flag` and `log-only` only record. A check that fails refuses the call when its `fail`
is closed and is recorded as an error when open. Every verdict, score and time goes to the call log
(`guardrails`), counts only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import ProxyError
from proxy.sse import event_data
from proxy.steps import STREAM_END
from proxy.steps.pii import BrokenPolicyStep, PiiStep
from proxy.tokens import estimate_prompt_tokens
from routing.policies.guardrails import Check, Guardrails, Verdict, compile_guardrails, text_check, timed

if TYPE_CHECKING:
    from proxy.call import Call

logger = logging.getLogger("gateway.guardrails")

# A streamed answer is checked over its last WINDOW characters and each new piece, so that a phrase split
# across events is still seen whole.
WINDOW = 256
MAX_SCHEMA_ERRORS = 5


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def input_texts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, source) of what a person or a tool put in the request: user turns ("user") and tool
    results ("tool", where indirect injection hides); the system prompt is the application's own."""
    out = []
    for message in payload.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("user", "tool", "function"):
            text = _text(message.get("content"))
            if text:
                out.append((text, "user" if role == "user" else "tool"))
    for field in ("prompt", "input"):  # completions and embeddings payloads
        value = payload.get(field)
        if isinstance(value, str) and value:
            out.append((value, "user"))
    return out


def requested_schema(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the request asked the answer to follow (response_format; the Responses API's
    text.format and Anthropic's output_format arrive here translated), or None."""
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            return spec["schema"]
    return None


def schema_errors(schema: dict[str, Any], text: str) -> list[str]:
    """Why `text` is not a JSON value that follows `schema` (empty: it is)."""
    import jsonschema

    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [f"not JSON: {exc}"[:200]]
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    return [f"{'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}"[:300] for e in errors[:MAX_SCHEMA_ERRORS]]


def blocked(check: Check, side: str) -> ProxyError:
    where = "request" if side == "input" else "answer"
    return ProxyError(
        400 if side == "input" else 502,
        f"The {where} was blocked by the guardrail {check.name!r} ({check.check}).",
        type="invalid_request_error" if side == "input" else "server_error",
        code="guardrail_blocked",
    )


def failed(check: Check, side: str) -> ProxyError:
    return ProxyError(
        503 if side == "input" else 502,
        f"The guardrail {check.name!r} ({check.check}) could not check this call and fails closed; nothing "
        "was sent on. Retry, or ask an admin to set fail: open on it.",
        type="server_error",
        code="guardrail_failed",
    )


def _first_hit(check: Check, texts: list[tuple[str, str]]) -> tuple[bool, float]:
    """(hit, score) of a text check over (text, source) pairs: the first hit, else the highest score."""
    best = 0.0
    for text, source in texts:
        hit, score = text_check(check, text, source)
        if hit:
            return True, score
        best = max(best, score)
    return False, best


class GuardrailStep:
    __slots__ = ("rails",)

    def __init__(self, rails: Guardrails) -> None:
        self.rails = rails

    def _checks(self, call: Call, side: str) -> list[Check]:
        key = call.key.name if call.key is not None else ""
        return [c for c in self.rails.for_call(call.model, key, call.tags) if c.on_side(side)]

    def _record(self, call: Call, verdict: Verdict) -> None:
        if call.guardrails is None:
            call.guardrails = {}
        earlier = call.guardrails.get(verdict.name)
        if earlier is not None and verdict.outcome == "pass":
            # A check on both sides (or on each streamed piece) keeps what it found: a later pass on the
            # answer does not erase a flag on the request. Its time adds up.
            earlier["ms"] = round(earlier["ms"] + verdict.ms, 3)
            earlier["score"] = max(earlier["score"], round(verdict.score, 3))
            return
        call.guardrails[verdict.name] = verdict.as_dict()

    def _decide(self, call: Call, check: Check, verdict: Verdict) -> None:
        self._record(call, verdict)
        if verdict.outcome == "block":
            raise blocked(check, verdict.side)
        if verdict.outcome == "error":
            logger.warning("guardrail %s (%s) failed", check.name, check.check)
            if check.fail == "closed":
                raise failed(check, verdict.side)

    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        checks = self._checks(call, "input")
        if not checks:
            return None
        texts = input_texts(payload)
        for check in checks:
            if check.check == "max_input_tokens":
                messages = payload.get("messages") or [{"role": "user", "content": t} for t, _ in texts]
                tokens = estimate_prompt_tokens(messages)
                verdict = timed(check, "input", lambda t=tokens, c=check: (t > c.limit, min(t / c.limit, 1.0)))
            else:
                verdict = timed(check, "input", lambda c=check: _first_hit(c, texts))
            self._decide(call, check, verdict)
        for check in self._checks(call, "output"):
            if check.check == "max_output_tokens":
                self._cap_output(call, check, payload)
        return None

    def check_tool_result(self, call: Call, text: str) -> None:
        """An MCP tool's result on its way back to the agent (proxy.mcp): the input-side text checks
        (prompt injection, topics, keywords) read it as a tool result, where indirect injection hides.
        Raises ProxyError on a block, as on_request does; verdicts go to the call log."""
        if not text:
            return
        texts = [(text, "tool")]
        for check in self._checks(call, "input"):
            if check.check in ("max_input_tokens", "output_schema"):
                continue
            self._decide(call, check, timed(check, "input", lambda c=check: _first_hit(c, texts)))

    def _cap_output(self, call: Call, check: Check, payload: dict[str, Any]) -> None:
        """max_output_tokens: a request asking for more is refused (block) or recorded; one asking for
        nothing gets the cap."""
        asked = payload.get("max_completion_tokens", payload.get("max_tokens"))
        over = isinstance(asked, int) and not isinstance(asked, bool) and asked > check.limit
        verdict = timed(check, "input", lambda: (over, 1.0 if over else 0.0))
        if verdict.outcome == "block":
            self._record(call, verdict)
            raise ProxyError(
                400,
                f"The request asks for up to {asked} output tokens; the guardrail {check.name!r} allows at most "
                f"{check.limit} for this key and model.",
                param="max_tokens",
                code="guardrail_blocked",
            )
        self._record(call, verdict)
        if asked is None:
            payload["max_tokens"] = check.limit

    def on_response(self, call: Call, body: bytes) -> bytes:
        checks = [c for c in self._checks(call, "output") if c.check != "max_output_tokens"]
        if not checks or call.endpoint == "embeddings":
            return body
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        texts = (
            [
                _text((choice.get("message") or {}).get("content"))
                for choice in (answer.get("choices") or ())
                if isinstance(choice, dict)
            ]
            if isinstance(answer, dict)
            else []
        )
        for check in checks:
            if check.check == "output_schema":
                self._check_schema(call, check, texts)
                continue
            verdict = timed(check, "output", lambda c=check: _first_hit(c, [(t, "model") for t in texts]))
            self._decide(call, check, verdict)
        return body

    def _check_schema(self, call: Call, check: Check, texts: list[str]) -> None:
        schema = requested_schema(call.payload or {})
        if schema is None:
            return
        problems: list[str] = []

        def run() -> tuple[bool, float]:
            problems.extend(e for t in texts for e in schema_errors(schema, t))
            return bool(problems), 1.0 if problems else 0.0

        verdict = timed(check, "output", run)
        self._record(call, verdict)
        if verdict.outcome == "block":
            raise ProxyError(
                502,
                f"The answer does not follow the JSON schema the request asked for (guardrail {check.name!r}): "
                + "; ".join(problems),
                type="server_error",
                code="output_schema_invalid",
            )
        if verdict.outcome == "error" and check.fail == "closed":
            raise failed(check, "output")

    def stream_filter(self, call: Call) -> Any:
        checks = [c for c in self._checks(call, "output") if c.check != "max_output_tokens"]
        if not checks or call.endpoint == "embeddings":
            return None
        return GuardrailStreamFilter(self, call, checks)


class GuardrailStreamFilter:
    """Output checks over a streamed answer: each new piece of text is checked with the last WINDOW
    characters before it; the schema once the answer is whole (at its finish). Events pass at once."""

    __slots__ = ("call", "checks", "done", "schema", "step", "text")

    def __init__(self, step: GuardrailStep, call: Call, checks: list[Check]) -> None:
        self.step = step
        self.call = call
        self.checks = [c for c in checks if c.check != "output_schema"]
        schema_checks = [c for c in checks if c.check == "output_schema"]
        self.schema = schema_checks[0] if schema_checks and requested_schema(call.payload or {}) else None
        self.text = ""
        self.done = False

    def _end(self, error: ProxyError) -> list[bytes]:
        self.done = True
        call = self.call
        call.status, call.error_type, call.error_message = error.status, error.code or "", error.message
        call.step_state[STREAM_END] = True
        return [
            b"data: "
            + orjson.dumps({"error": {"message": error.message, "type": error.type, "param": None, "code": error.code}})
            + b"\n\n"
        ]

    def __call__(self, event: bytes) -> bytes | list[bytes] | None:
        if self.done:
            return None
        if b'"content"' not in event and b'"finish_reason":"' not in event and b'"finish_reason": "' not in event:
            return event
        try:
            chunk = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        piece, finished = "", False
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                delta = choice.get("delta") or {}
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    piece += delta["content"]
                finished = finished or choice.get("finish_reason") is not None
        if piece:
            window = self.text[-WINDOW:] + piece
            self.text += piece
            for check in self.checks:
                verdict = timed(check, "output", lambda c=check: text_check(c, window, "model"))
                try:
                    self.step._decide(self.call, check, verdict)
                except ProxyError as exc:
                    return self._end(exc)
        if finished and self.schema is not None:
            try:
                self.step._check_schema(self.call, self.schema, [self.text])
            except ProxyError as exc:
                return self._end(exc)
        return event


def guardrail_step(stored: list[dict[str, Any]] | None) -> GuardrailStep | None:
    """The step for a tenant's stored checks (None when there are none)."""
    if not stored:
        return None
    return GuardrailStep(compile_guardrails(stored))


def with_key_guardrails(steps: tuple, key_step: GuardrailStep | None) -> tuple:
    """The tenant's steps with the key's own guardrails in place of the tenant's (None: the key runs none).
    They sit where the tenant's would: right after the PII step, so they read the request as it is sent."""
    rest = [s for s in steps if not isinstance(s, GuardrailStep)]
    if key_step is None:
        return tuple(rest)
    at = 1 if rest and isinstance(rest[0], (PiiStep, BrokenPolicyStep)) else 0
    return (*rest[:at], key_step, *rest[at:])
