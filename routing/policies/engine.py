"""The PII engine: what personal data and secrets may leave for a provider, and how it comes back.

`compile_policy(spec)` turns a normalized `pii:` policy (routing.policies.spec checks and normalizes it;
the engine does not check it again) into a `PiiPolicy`: the built-in detectors and the term list as a
`Scanner` (routing.policies.detectors), the tenant's own regexes compiled with the `regex` module so
that each scan runs under a time bound. A `PiiSession` applies the actions to every string of one
request's payload (every message role and position, content parts, tool-call arguments, tool results,
the `input` of embeddings, a completions `prompt`, the end-user id) and keeps the request's pseudonyms,
which restore answers (routing.policies.restore). The proxy runs it as a pipeline step
(proxy.steps.pii). Values never appear in errors or logs: only detector names, actions, counts and
positions do.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import orjson
import regex

from routing.policies.detectors import Finding, Scanner, resolve
from routing.policies.restore import Restorer, json_escaped
from routing.policies.spec import DEFAULT_ACTION, DETECTORS, TERMS

# Time every custom regex of one request may take together, before the request is refused. A simple
# pattern scans 100 KB in about a millisecond; the `regex` module notices a timeout late (measured: a
# 0.05 s bound stops a catastrophic pattern after about 0.18 s), so the bound is kept small.
CUSTOM_SCAN_BUDGET_S = 0.05


# Request fields whose strings are identifiers or enums a provider must get verbatim, never text a
# person wrote: not scanned, wherever they occur. Everything else is.
NEVER_SCANNED = frozenset(
    {
        "model",
        "role",
        "type",
        "id",
        "tool_call_id",
        "object",
        "detail",
        "format",
        "voice",
        "encoding_format",
        "service_tier",
        "reasoning_effort",
        "verbosity",
        "modalities",
        "tool_choice",
        "function_call",
        "previous_response_id",
        "truncation",
        "include",
        "$ref",
        "$schema",
    }
)
# Inline file and audio bytes (base64): not text. Their names and the rest of the part are scanned.
BASE64_FIELDS = frozenset({"data", "file_data"})
# Objects nothing of a person's is in (the provider-specific knobs): skipped whole.
OPAQUE_OBJECTS = frozenset({"logit_bias", "stream_options"})
# Keys whose object is a function (its "name" an identifier): tools[].function, tool_calls[].function,
# a forced tool_choice's function, the legacy function_call.
FUNCTION_KEYS = frozenset({"function", "function_call"})


class PiiScanError(Exception):
    """The scan could not complete: the request must not be forwarded."""


class ScanTimeout(PiiScanError):
    def __init__(self, detector: str) -> None:
        super().__init__(f"the custom pattern {detector!r} took too long on this text")
        self.detector = detector

    def __reduce__(self) -> tuple:  # raised in a scanner process, re-raised in the gateway's
        return (ScanTimeout, (self.detector,))


class PiiBlocked(Exception):
    def __init__(self, detector: str, where: str) -> None:
        super().__init__(detector)
        self.detector = detector
        self.where = where

    def __reduce__(self) -> tuple:
        return (PiiBlocked, (self.detector, self.where))


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


# Invisible characters people paste (or hide values with): zero-width spaces and joiners, word joiners,
# soft hyphens, bidi marks, the BOM. Dropped before detection.
_INVISIBLE = re.compile(r"[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
# Spaces other than the ASCII one (no-break, thin, ideographic, ...): read as " ".
_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def pasted_form(text: str) -> tuple[str, list[int] | None]:
    """The text the detectors read: NFKC (fullwidth digits and the fullwidth at sign fold to ASCII),
    invisible characters dropped, every space a plain one; and for each of its characters, the index
    of the original character it came from (None when nothing changed). A finding in this form maps back
    to the original span, so the value is replaced as it was sent, hidden characters and all."""
    if unicodedata.is_normalized("NFKC", text) and not _INVISIBLE.search(text) and not _SPACES.search(text):
        return text, None
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            out.append(ch)
            index.append(i)
            continue
        if _INVISIBLE.match(ch):
            continue
        folded = " " if _SPACES.match(ch) else unicodedata.normalize("NFKC", ch)
        for piece in folded:
            out.append(piece)
            index.append(i)
    return "".join(out), index


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
        """Non-overlapping findings in text order (the longer one wins where two overlap), found in the
        text as people paste it (see pasted_form) and given as spans of the original text."""
        if text.isascii():
            return self._find(text, budget)
        seen, index = pasted_form(text)
        hits = self._find(seen, budget)
        if index is None or not hits:
            return hits
        return [(index[start], index[end - 1] + 1, detector) for start, end, detector in hits]

    def _find(self, text: str, budget: TimeBudget) -> list[Finding]:
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
    """A policy from a normalized `pii:` policy (routing.policies.spec.normalize_pii). Keys left out
    take their defaults; nothing is checked here."""
    actions: dict[str, str] = dict(spec.get("detectors") or {})
    custom: list[CustomDetector] = []
    for entry in spec.get("custom") or ():
        actions[entry["name"]] = entry.get("action", DEFAULT_ACTION)
        custom.append(CustomDetector(entry["name"], regex.compile(entry["pattern"])))
    terms = spec.get("terms") or {}
    words = list(terms.get("words") or ())
    if words:
        actions[TERMS] = terms.get("action", DEFAULT_ACTION)
    return PiiPolicy(
        mode=spec.get("mode", "enforce"),
        actions=actions,
        scanner=Scanner([d for d in DETECTORS if d in actions], words),
        custom=tuple(custom),
        scan_responses=bool(spec.get("scan_responses", False)),
        labels={name: _label(name) for name in actions},
    )


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

    def conceal(self, value: Any) -> Any:
        """A decoded JSON value with this request's pseudonymized values put back as their placeholders:
        what the provider saw, for keeping (a stored response never holds what the policy hid)."""
        if not self.values:
            return value
        text = orjson.dumps(value).decode()
        for placeholder, original in sorted(self.values.items(), key=lambda pv: len(pv[1]), reverse=True):
            text = text.replace(json_escaped(original), placeholder)
        return orjson.loads(text)

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
        """Every string of the request a provider would read, in place: the whole payload is walked,
        whatever its shape (chat, completions, embeddings, and what the other front ends translate
        to), and every string is scanned but the identifiers and enums in NEVER_SCANNED, function
        names and inline base64 data. A list of what is skipped, rather than of what is scanned: a
        field the gateway does not know yet is scanned too."""
        self._walk(payload, "")

    def _walk(self, node: dict[str, Any], where: str) -> None:
        function_like = "parameters" in node or "arguments" in node
        for key, value in node.items():
            if isinstance(value, str):
                if key in NEVER_SCANNED or (key == "name" and function_like) or key in BASE64_FIELDS:
                    continue
                if key == "url" and value.startswith("data:"):
                    continue  # an inline image: base64 bytes, not text
                node[key] = self.apply(value, f"{where}{key}")
            elif isinstance(value, dict):
                if key in OPAQUE_OBJECTS:
                    continue
                if key in FUNCTION_KEYS:
                    self._function(value, f"{where}{key}.")
                else:
                    self._walk(value, f"{where}{key}.")
            elif isinstance(value, list):
                self._walk_list(value, f"{where}{key}", key)

    def _walk_list(self, items: list[Any], where: str, key: str) -> None:
        for j, item in enumerate(items):
            if isinstance(item, str):
                if key not in NEVER_SCANNED:
                    items[j] = self.apply(item, f"{where}[{j}]")
            elif isinstance(item, dict):
                if key == "functions":
                    self._function(item, f"{where}[{j}].")
                else:
                    self._walk(item, f"{where}[{j}].")
            elif isinstance(item, list):
                self._walk_list(item, f"{where}[{j}]", key)

    def _function(self, node: dict[str, Any], where: str) -> None:
        """A function (a tool's, a tool call's, a forced tool choice): its name is an identifier."""
        for key, value in node.items():
            if key == "name":
                continue
            if isinstance(value, str):
                node[key] = self.apply(value, f"{where}{key}")
            elif isinstance(value, dict):
                self._walk(value, f"{where}{key}.")
            elif isinstance(value, list):
                self._walk_list(value, f"{where}{key}", key)

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
