"""The PII policy: what personal data and secrets may leave for a provider, and how it comes back.

`compile_policy(spec)` turns the normalized `pii:` section (Tenant.pii_policy, VirtualKey.pii_policy)
into a `PiiPolicy` once, at config load: the built-in detectors and the term list as a `Scanner`
(proxy.policies.detectors), the tenant's own regexes compiled with the `regex` module so that each
scan runs under a time bound. Per request, a `PiiSession` applies the actions to every string of the
payload (every message role and position, content parts, tool-call arguments, tool results, the
`input` of embeddings, a completions `prompt`, the end-user id) and keeps the pseudonyms of this request, which
`PiiStep` uses to restore answers, whole or streamed. Fails closed: a scan that raises or runs out of
time refuses the request; nothing unscanned is forwarded. Values never appear in errors or logs:
only detector names, actions, counts and positions do.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import regex

from proxy.errors import ProxyError
from proxy.policies.detectors import DETECTORS, NER_AVAILABLE, NER_DETECTOR, Finding, Scanner, resolve
from proxy.policies.restore import Restorer
from proxy.sse import event_data

if TYPE_CHECKING:
    from proxy.call import Call

logger = logging.getLogger("gateway.pii")

__all__ = ["ACTIONS", "DETECTORS", "MODES", "PiiPolicy", "PiiStep", "compile_policy"]

ACTIONS = ("redact", "mask", "pseudonymize", "block", "log-only")
MODES = ("enforce", "log-only")
TERMS = "terms"  # the detector name the term list reports as
# Time every custom regex of one request may take together, before the request is refused. A simple
# pattern scans 100 KB in about a millisecond; the `regex` module notices a timeout late (measured: a
# 0.05 s bound stops a catastrophic pattern after about 0.18 s), so the bound is kept small.
CUSTOM_SCAN_BUDGET_S = 0.05
# Streamed answers scanned for new PII (scan_responses) hold back this many characters, so that a
# value split across events is seen whole before any of it is sent.
RESPONSE_WINDOW = 96
_NAME = re.compile(r"[a-z][a-z0-9_]{0,49}")
_SPEC_KEYS = {"mode", "detectors", "custom", "terms", "scan_responses"}


class PiiScanError(Exception):
    """The scan could not complete: the request must not be forwarded."""


class ScanTimeout(PiiScanError):
    def __init__(self, detector: str) -> None:
        super().__init__(f"the custom pattern {detector!r} took too long on this text")
        self.detector = detector


class PiiBlocked(Exception):
    def __init__(self, detector: str, where: str) -> None:
        super().__init__(detector)
        self.detector = detector
        self.where = where


@dataclass(frozen=True, slots=True)
class CustomDetector:
    name: str
    pattern: Any  # regex.Pattern


def _label(detector: str) -> str:
    return "TERM" if detector == TERMS else re.sub(r"[^A-Z0-9_]", "_", detector.upper())


def mask(value: str) -> str:
    """All but the last 4 letters and digits become '*'; separators stay, so the shape is kept."""
    out = []
    seen = 0
    for ch in reversed(value):
        if ch.isalnum():
            seen += 1
            out.append(ch if seen <= 4 else "*")
        else:
            out.append(ch)
    return "".join(reversed(out))


class TimeBudget:
    """What the tenant's own regexes may still spend on one request (the built-in detectors are ours
    and linear, so they do not count against it)."""

    __slots__ = ("left",)

    def __init__(self, seconds: float) -> None:
        self.left = seconds


@dataclass(slots=True)
class PiiPolicy:
    mode: str
    actions: dict[str, str]  # detector (built-in, custom name, "terms") -> action
    scanner: Scanner
    custom: tuple[CustomDetector, ...] = ()
    scan_responses: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def enforce(self) -> bool:
        return self.mode == "enforce"

    def find(self, text: str, budget: TimeBudget) -> list[Finding]:
        """Non-overlapping findings in text order (the longer one wins where two overlap)."""
        hits = self.scanner.scan(text)
        for detector in self.custom:
            if budget.left <= 0:
                raise ScanTimeout(detector.name)
            started = time.perf_counter()
            try:
                hits.extend(
                    (m.start(), m.end(), detector.name)
                    for m in detector.pattern.finditer(text, timeout=budget.left)
                    if m.end() > m.start()
                )
            except TimeoutError:
                raise ScanTimeout(detector.name) from None
            finally:
                budget.left -= time.perf_counter() - started
        return resolve(hits) if self.custom else hits

    def preview(self, text: str, answer: str | None = None) -> dict:
        """What the upstream would receive for `text`, what the client would see of `answer` (or of
        the text sent, as if echoed back), and the findings, without their values.

        A blocked text gives `sent` and `restored` empty and `blocked` naming the detector."""
        session = PiiSession(self)
        findings: list[dict] = []
        try:
            sent = session.apply(text, "text", findings=findings)
        except PiiBlocked as exc:
            return {"sent": "", "restored": "", "findings": findings, "blocked": exc.detector}
        except ScanTimeout as exc:
            raise ValueError(str(exc)) from None
        back = sent if answer is None else answer
        try:
            restored = session.answer_text(back)
        except ScanTimeout as exc:
            raise ValueError(str(exc)) from None
        return {"sent": sent, "restored": restored, "findings": findings, "blocked": None}


def compile_policy(spec: dict) -> PiiPolicy:
    """A policy from the normalized `pii:` section; ValueError with a clear message if it is invalid."""
    if not isinstance(spec, dict):
        raise ValueError("the pii policy must be a mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown pii setting(s): {', '.join(sorted(map(str, unknown)))}")
    mode = spec.get("mode", "enforce")
    if mode not in MODES:
        raise ValueError(f"pii mode must be one of {', '.join(MODES)}, not {mode!r}")
    actions: dict[str, str] = {}
    detectors = spec.get("detectors") or {}
    if not isinstance(detectors, dict):
        raise ValueError("pii detectors must be a mapping of detector name to action")
    for name, action in detectors.items():
        if name == NER_DETECTOR and not NER_AVAILABLE:
            raise ValueError(f"the {name!r} detector needs Presidio (presidio-analyzer), which is not installed")
        if name not in DETECTORS:
            raise ValueError(f"unknown pii detector {name!r}; use one of {', '.join(DETECTORS)}")
        actions[name] = _action(action, f"detector {name!r}")
    custom: list[CustomDetector] = []
    for i, entry in enumerate(spec.get("custom") or ()):
        if not isinstance(entry, dict):
            raise ValueError(f"custom[{i}] must be a mapping with name, pattern and action")
        name, pattern = entry.get("name"), entry.get("pattern")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"custom[{i}].name must be lowercase letters, digits and '_', starting with a letter")
        if name in DETECTORS or name in (TERMS, NER_DETECTOR) or name in actions:
            raise ValueError(f"custom[{i}].name {name!r} is already used by another detector")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"custom[{i}].pattern ({name}) must be a non-empty regular expression")
        try:
            compiled = regex.compile(pattern)
        except regex.error as exc:
            raise ValueError(f"custom[{i}].pattern ({name}) does not compile: {exc}") from None
        if compiled.fullmatch("") is not None:
            raise ValueError(f"custom[{i}].pattern ({name}) matches empty text; it must match at least one character")
        actions[name] = _action(entry.get("action"), f"custom detector {name!r}")
        custom.append(CustomDetector(name, compiled))
    words: list[str] = []
    terms = spec.get("terms")
    if terms:
        if not isinstance(terms, dict) or not isinstance(terms.get("words"), list):
            raise ValueError("pii terms must be a mapping with words (a list) and action")
        words = [w for w in terms["words"] if isinstance(w, str) and w.strip()]
        if len(words) != len(terms["words"]):
            raise ValueError("pii terms.words must be non-empty strings")
        if words:
            actions[TERMS] = _action(terms.get("action"), "terms")
    scan_responses = spec.get("scan_responses", False)
    if not isinstance(scan_responses, bool):
        raise ValueError("pii scan_responses must be true or false")
    return PiiPolicy(
        mode=mode,
        actions=actions,
        scanner=Scanner([d for d in DETECTORS if d in actions], words),
        custom=tuple(custom),
        scan_responses=scan_responses,
        labels={name: _label(name) for name in actions},
    )


def _action(value: Any, what: str) -> str:
    if value not in ACTIONS:
        raise ValueError(f"the action of {what} must be one of {', '.join(ACTIONS)}, not {value!r}")
    return value


class PiiSession:
    """One request's application of a policy: its pseudonyms (per distinct value) and its counts."""

    __slots__ = ("budget", "counters", "counts", "placeholders", "policy", "restorer", "values")

    def __init__(self, policy: PiiPolicy) -> None:
        self.policy = policy
        self.budget = TimeBudget(CUSTOM_SCAN_BUDGET_S)
        self.counts: dict[str, dict[str, int]] = {}
        self.placeholders: dict[tuple[str, str], str] = {}  # (label, value) -> placeholder
        self.values: dict[str, str] = {}  # placeholder -> value
        self.counters: dict[str, int] = {}
        self.restorer: Restorer | None = None

    def _count(self, detector: str, action: str) -> None:
        per = self.counts.setdefault(detector, {})
        per[action] = per.get(action, 0) + 1

    def _pseudonym(self, detector: str, value: str) -> str:
        label = self.policy.labels[detector]
        placeholder = self.placeholders.get((label, value))
        if placeholder is None:
            n = self.counters.get(label, 0) + 1
            self.counters[label] = n
            placeholder = f"<{label}_{n}>"
            self.placeholders[(label, value)] = placeholder
            self.values[placeholder] = value
            self.restorer = None  # rebuilt with the new placeholder when needed
        return placeholder

    def apply(self, text: str, where: str, *, response: bool = False, findings: list | None = None) -> str:
        """The text with the policy's actions applied. Raises PiiBlocked (after counting) when a
        blocking detector matched in enforce mode. In an answer (`response`), values are removed
        rather than pseudonymized or refused: there is nothing to restore and the answer exists."""
        policy = self.policy
        hits = policy.find(text, self.budget)
        if not hits:
            return text
        enforce = policy.enforce
        blocked = ""
        out: list[str] = []
        pos = 0
        for start, end, detector in hits:
            action = policy.actions[detector]
            if findings is not None:
                findings.append({"detector": detector, "action": action, "start": start, "end": end})
            if not enforce:
                self._count(detector, action if action == "log-only" else f"would-{action}")
                continue
            self._count(detector, action)
            if action == "log-only":
                continue
            if action == "block" and not response:
                blocked = blocked or detector
                continue
            value = text[start:end]
            if action == "mask":
                replacement = mask(value)
            elif action == "pseudonymize" and not response:
                replacement = self._pseudonym(detector, value)
            else:
                replacement = f"[{policy.labels[detector]}]"
            out.append(text[pos:start])
            out.append(replacement)
            pos = end
        if blocked:
            raise PiiBlocked(blocked, where)
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def get_restorer(self) -> Restorer | None:
        if self.restorer is None and self.values:
            self.restorer = Restorer(self.values)
        return self.restorer

    def answer_text(self, text: str, json_text: bool = False) -> str:
        """An answer's string as the client sees it: new PII removed (scan_responses), pseudonyms restored."""
        if self.policy.scan_responses:
            text = self.apply(text, "answer", response=True)
        restorer = self.get_restorer()
        return restorer.restore(text, json_text) if restorer is not None else text

    # -- the request ----------------------------------------------------------------------------------

    def apply_payload(self, payload: dict[str, Any]) -> None:
        """Every string of the request a provider would read, in place."""
        messages = payload.get("messages")
        if isinstance(messages, list):
            for i, message in enumerate(messages):
                if isinstance(message, dict):
                    self._apply_message(message, f"messages[{i}]")
        user = payload.get("user")
        if isinstance(user, str):
            # The end-user id goes to the provider too. The call keeps the client's own (call.user) for
            # per-user rules and budgets.
            payload["user"] = self.apply(user, "user")
        for name in ("input", "prompt"):  # embeddings' input, a completions prompt
            value = payload.get(name)
            if isinstance(value, str):
                payload[name] = self.apply(value, name)
            elif isinstance(value, list):
                for j, item in enumerate(value):
                    if isinstance(item, str):
                        value[j] = self.apply(item, f"{name}[{j}]")

    def _apply_message(self, message: dict, where: str) -> None:
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = self.apply(content, f"{where}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = self.apply(part["text"], f"{where}.content[{j}].text")
                elif isinstance(part, str):
                    content[j] = self.apply(part, f"{where}.content[{j}]")
        for k, tool_call in enumerate(message.get("tool_calls") or ()):
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = self.apply(function["arguments"], f"{where}.tool_calls[{k}].function.arguments")
        function_call = message.get("function_call")  # the legacy single-function form
        if isinstance(function_call, dict) and isinstance(function_call.get("arguments"), str):
            function_call["arguments"] = self.apply(function_call["arguments"], f"{where}.function_call.arguments")
        refusal = message.get("refusal")
        if isinstance(refusal, str):
            message["refusal"] = self.apply(refusal, f"{where}.refusal")

    # -- the answer -----------------------------------------------------------------------------------

    def restore_body(self, body: bytes) -> bytes:
        """A complete JSON answer (chat completion, completion) with placeholders restored and, with
        scan_responses, new PII removed. Decoded only when there is something to do."""
        restorer = self.get_restorer()
        if not self.policy.scan_responses:
            if restorer is None or (b"<" not in body and b"\\u003c" not in body.lower()):
                return body
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list):
            return body
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("text"), str):
                choice["text"] = self.answer_text(choice["text"])
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            for name in ("content", "refusal"):
                if isinstance(message.get(name), str):
                    message[name] = self.answer_text(message[name])
            for tool_call in message.get("tool_calls") or ():
                function = tool_call.get("function") if isinstance(tool_call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    function["arguments"] = self.answer_text(function["arguments"], json_text=True)
        return orjson.dumps(answer)


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
    """With scan_responses, the answer kept for the body log (proxy.bodylog, which sees answers before
    this step, so that it stores placeholders rather than restored values) loses new PII too."""
    bodies = getattr(call, "bodies", None)
    kept = bodies.get("response_body") if isinstance(bodies, dict) else None
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

    __slots__ = ("policy",)

    def __init__(self, policy: PiiPolicy) -> None:
        self.policy = policy

    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        session = PiiSession(self.policy)
        call.step_state["pii"] = session
        call.pii_actions = session.counts
        try:
            session.apply_payload(payload)
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
        policy = compile_policy(spec)
    except ValueError as exc:
        return BrokenPolicyStep(str(exc))
    if not policy.actions:
        return None
    return PiiStep(policy)


def with_key_policy(steps: tuple, key_step: PiiStep | BrokenPolicyStep | None) -> tuple:
    """The tenant's steps with the key's own policy in place of the tenant's (first, by contract)."""
    rest = tuple(s for s in steps if not isinstance(s, (PiiStep, BrokenPolicyStep)))
    return (key_step, *rest) if key_step is not None else rest
