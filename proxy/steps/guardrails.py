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

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import ProxyError
from proxy.sse import event_data
from proxy.steps import STREAM_END
from proxy.steps.guardcalls import injection_by_embeddings, moderation
from proxy.steps.pii import BrokenPolicyStep, PiiStep
from proxy.tokens import estimate_prompt_tokens
from routing.policies.guardrails import Check, Guardrails, Verdict, compile_guardrails, text_check, timed

if TYPE_CHECKING:
    from proxy.call import Call
    from proxy.snapshot import KeyEntry, TenantEntry

logger = logging.getLogger("gateway.guardrails")

# A streamed answer is checked over its last WINDOW characters and each new piece, so that a phrase split
# across events is still seen whole.
WINDOW = 256
MAX_SCHEMA_ERRORS = 5
# A streamed answer is sent to a model-calling check (moderation) in pieces of at least this many new
# characters, one piece in flight per check, each with the WINDOW before it.
MODEL_PIECE = 1000
# call.step_state: the model-calling checks that run beside the upstream call (flag, log-only), and an
# output block found before the answer reached the steps' answer side.
PENDING = "guardrail_pending"
HELD = "guardrail_block"


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


def answer_texts(body: bytes) -> list[str]:
    """The text of each choice of a complete chat answer."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(answer, dict):
        return []
    return [
        _text((choice.get("message") or {}).get("content"))
        for choice in (answer.get("choices") or ())
        if isinstance(choice, dict)
    ]


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
            if check.check == "moderation":
                await self._model_check(call, check, "input", texts)
                continue
            if check.check == "max_input_tokens":
                messages = payload.get("messages") or [{"role": "user", "content": t} for t, _ in texts]
                tokens = estimate_prompt_tokens(messages)
                verdict = timed(check, "input", lambda t=tokens, c=check: (t > c.limit, min(t / c.limit, 1.0)))
            else:
                verdict = timed(check, "input", lambda c=check: _first_hit(c, texts))
            self._decide(call, check, verdict)
            if check.embedding_model and verdict.outcome == "pass":
                await self._model_check(call, check, "input", texts)  # the classifier, where the rules saw nothing
        for check in self._checks(call, "output"):
            if check.check == "max_output_tokens":
                self._cap_output(call, check, payload)
        return None

    async def _model_check(self, call: Call, check: Check, side: str, texts: list[tuple[str, str]]) -> None:
        """A check that calls a model: before the upstream call when it may block, beside it otherwise
        (settled by `after_upstream`, before the answer leaves)."""
        if check.action == "block":
            self._decide(call, check, await self.model_verdict(call, check, side, [t for t, _ in texts]))
            return
        pending = call.step_state.setdefault(PENDING, [])
        pending.append(asyncio.create_task(self.model_verdict(call, check, side, [t for t, _ in texts])))

    async def model_verdict(self, call: Call, check: Check, side: str, texts: list[str]) -> Verdict:
        """The verdict of a model-calling check, within its time budget; its failure or timeout is `error`."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout_s):
                if check.check == "moderation":
                    hit, score = await moderation(call, check, texts)
                else:
                    hit, score = await injection_by_embeddings(call, check, texts)
        except Exception as exc:
            logger.warning("guardrail %s (%s) could not run: %s", check.name, check.check, exc)
            outcome, score = "error", 0.0
        else:
            outcome = check.outcome(hit)
        return Verdict(check.name, check.check, side, outcome, score, (time.perf_counter() - started) * 1000)

    async def after_upstream(self, call: Call, body: bytes | None) -> None:
        """Between the upstream's answer and the steps' answer side: the checks that ran beside the upstream
        call are settled (recorded; a flag or log-only check never refuses), and on a complete answer
        (`body`) the model-calling output checks run; a block is held for on_response to answer."""
        pending = call.step_state.pop(PENDING, None)
        if pending:
            for verdict in await asyncio.gather(*pending):
                self._record(call, verdict)
        if body is None:
            return
        checks = [c for c in self._checks(call, "output") if c.calls_model]
        if not checks or call.endpoint == "embeddings":
            return
        texts = answer_texts(body)
        for check in checks:
            verdict = await self.model_verdict(call, check, "output", texts)
            try:
                self._decide(call, check, verdict)
            except ProxyError as exc:
                call.step_state[HELD] = exc
                return

    def check_tool_result(self, call: Call, text: str) -> None:
        """An MCP tool's result on its way back to the agent (proxy.mcp): the input-side text checks
        (prompt injection, topics, keywords) read it as a tool result, where indirect injection hides.
        Raises ProxyError on a block, as on_request does; verdicts go to the call log."""
        if not text:
            return
        texts = [(text, "tool")]
        for check in self._checks(call, "input"):
            if check.check in ("max_input_tokens", "output_schema", "moderation"):
                continue  # a tool result is checked inline, on the MCP hot path: no model calls
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
        held = call.step_state.pop(HELD, None)
        if held is not None:
            raise held
        checks = [c for c in self._checks(call, "output") if c.check != "max_output_tokens" and c.check != "moderation"]
        if not checks or call.endpoint == "embeddings":
            return body
        texts = answer_texts(body)
        for check in checks:
            if check.check == "output_schema":
                self._check_schema(call, check, texts)
                continue
            verdict = timed(check, "output", lambda c=check: _first_hit(c, [(t, "model") for t in texts]))
            self._decide(call, check, verdict)
        return body

    def schema_retry(self, call: Call, body: bytes) -> dict[str, Any] | None:
        """The request to send once more when a complete answer does not follow the JSON schema the request
        asked for (an output_schema check that blocks applies): the answer and its validation errors
        appended, so the model can correct itself. None when there is nothing to retry, or it was retried."""
        if call.step_state.get("schema_retried") or call.payload is None:
            return None
        checks = [c for c in self._checks(call, "output") if c.check == "output_schema" and c.action == "block"]
        schema = requested_schema(call.payload) if checks else None
        if schema is None:
            return None
        texts = answer_texts(body)
        try:
            problems = [e for t in texts for e in schema_errors(schema, t)]
        except Exception:
            return None
        if not problems or not texts:
            return None
        call.step_state["schema_retried"] = True
        messages = list(call.payload.get("messages") or ())
        messages += [
            {"role": "assistant", "content": texts[0]},
            {
                "role": "user",
                "content": "Your answer does not follow the required JSON schema: "
                + "; ".join(problems)
                + ". Answer again with only JSON that follows the schema.",
            },
        ]
        return {**call.payload, "messages": messages}

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
    characters before it; the schema once the answer is whole (at its finish). Events pass at once.

    A check that calls a model (moderation) reads the text in pieces of MODEL_PIECE characters, one piece
    in flight at a time, beside the stream: its verdict applies at the next event. The stream's last event
    (`[DONE]`) is held until the rest of the text is checked (`tail`, awaited by the relay), so a block
    found at the very end still ends the stream with the error event instead of a clean finish."""

    __slots__ = ("call", "checked", "checks", "done", "held", "model_checks", "running", "schema", "step", "text")

    def __init__(self, step: GuardrailStep, call: Call, checks: list[Check]) -> None:
        self.step = step
        self.call = call
        self.checks = [c for c in checks if c.check != "output_schema" and not c.calls_model]
        self.model_checks = [c for c in checks if c.calls_model]
        schema_checks = [c for c in checks if c.check == "output_schema"]
        self.schema = schema_checks[0] if schema_checks and requested_schema(call.payload or {}) else None
        self.text = ""
        self.done = False
        self.checked = 0  # characters of text sent to the model checks so far
        self.running: list[asyncio.Task[list[Verdict]]] = []
        self.held: bytes | None = None

    def _launch(self) -> None:
        start = max(self.checked - WINDOW, 0)
        piece, self.checked = self.text[start:], len(self.text)
        step, call, checks = self.step, self.call, self.model_checks

        async def run() -> list[Verdict]:
            return list(await asyncio.gather(*(step.model_verdict(call, c, "output", [piece]) for c in checks)))

        self.running.append(asyncio.create_task(run()))

    def _settle(self, verdicts: list[Verdict]) -> list[bytes] | None:
        for check, verdict in zip(self.model_checks, verdicts, strict=True):
            try:
                self.step._decide(self.call, check, verdict)
            except ProxyError as exc:
                return self._end(exc)
        return None

    def _model_turn(self) -> list[bytes] | None:
        """Apply the verdicts that came back; start the next piece when one is due and none is in flight."""
        while self.running and self.running[0].done():
            ended = self._settle(self.running.pop(0).result())
            if ended is not None:
                return ended
        if not self.running and len(self.text) - self.checked >= MODEL_PIECE:
            self._launch()
        return None

    def _model_event(self, event: bytes) -> list[bytes] | None:
        """Before an event is read: `[DONE]` is held (an empty list), and a block that came back ends the
        stream (its events); None lets the event through."""
        if event.startswith(b"data: [DONE]"):
            self.held = event
            return []
        return self._model_turn()

    async def tail(self) -> list[bytes]:
        """The stream's end: the text not yet checked is, every verdict is awaited, and then either the held
        `[DONE]` goes out or the error event does."""
        if self.done or not self.model_checks:
            return [self.held] if self.held is not None and not self.done else []
        if len(self.text) > self.checked:
            self._launch()
        for task in self.running:
            ended = self._settle(await task)
            if ended is not None:
                self.running.clear()
                return ended
        self.running.clear()
        return [self.held] if self.held is not None else []

    def _end(self, error: ProxyError) -> list[bytes]:
        self.done = True
        for task in self.running:
            task.cancel()
        self.running.clear()
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
        if self.model_checks and (done := self._model_event(event)) is not None:
            return done or None
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


def guard_for(key: KeyEntry, tenant: TenantEntry) -> GuardrailStep | None:
    """The guardrails that apply to a key's calls: its own when it has them (None: it runs none), else its
    tenant's. Both are compiled at load, so a request only picks one."""
    return key.guardrail_step if key.guardrails_override else tenant.guardrails
