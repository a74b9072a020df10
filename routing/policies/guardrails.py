"""Guardrails: checks on what goes to a model and what comes back, run as a pipeline step next to the PII
step (proxy.steps.guardrails). This module is the grammar (the `guardrails:` YAML section and the API)
and the engine (which check applies to a call, and its verdict on a text); it knows nothing of HTTP.

Checks: `prompt_injection` (routing.policies.injection's pattern pack, on user turns and, as indirect
injection, on tool results; with `embedding_model`, also a nearest-neighbour classifier over that model's
sentence embeddings, routing.policies.injection_knn), `moderation` (a judge model of the tenant's own asked
which of the configured `categories` a text falls in, or with `api: moderations` an OpenAI-format
moderation endpoint behind one of the tenant's models), `denied_topics` and `keywords` (whole words and
phrases, after the PII scan's normalization: NFKC, invisible characters dropped), `output_schema` (the
answer against the JSON schema the request asked for), `max_input_tokens` and `max_output_tokens`. Each
has `on` (input, output or both), `action` (block, flag, log-only), `fail` (closed or open: what happens
when the check itself fails or runs out of time), `timeout_s` and `applies_to` (models, keys, tags; each
empty = any). Checks that call a model are `MODEL_CHECKS` (Check.calls_model): the proxy runs them as
calls of their own, logged and billed with the tag `guardrail`. Verdicts name the check and never carry
the matched text. `preview` runs the text checks on one pasted text for the console, with the step's own
functions, so what it shows is what the step would decide.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from routing.policies.detectors import lower, term_pattern
from routing.policies.engine import pasted_form
from routing.policies.injection import injection_score

TEXT_CHECKS = ("prompt_injection", "denied_topics", "keywords")
CHECKS = (
    "prompt_injection",
    "moderation",
    "denied_topics",
    "keywords",
    "output_schema",
    "max_input_tokens",
    "max_output_tokens",
)
# The categories a moderation check may name: OpenAI's moderation taxonomy, which judges are asked in too.
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
MODERATION_APIS = ("chat", "moderations")
SIDES = ("input", "output", "both")
ACTIONS = ("block", "flag", "log-only")
FAILS = ("closed", "open")
# Where each check can look (and its default).
CHECK_SIDES = {
    "prompt_injection": ("input", {"input"}),
    "moderation": ("both", {"input", "output", "both"}),
    "denied_topics": ("both", {"input", "output", "both"}),
    "keywords": ("both", {"input", "output", "both"}),
    "output_schema": ("output", {"output"}),
    "max_input_tokens": ("input", {"input"}),
    "max_output_tokens": ("output", {"output"}),
}
FIELDS = {
    "name",
    "check",
    "on",
    "action",
    "fail",
    "timeout_s",
    "threshold",
    "words",
    "topics",
    "max",
    "model",
    "api",
    "categories",
    "embedding_model",
    "applies_to",
}
APPLIES_TO = {"models", "keys", "tags"}
MAX_CHECKS = 50
MAX_WORDS = 1000
MAX_NAME = 64


class GuardrailSpecError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _strings(value: Any, path: str, *, limit: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GuardrailSpecError(path, "a list of non-empty strings")
    if len(value) > limit:
        raise GuardrailSpecError(path, f"at most {limit} entries")
    if any(len(v) > 200 or not v.isprintable() for v in value):
        raise GuardrailSpecError(path, "entries are printable text of at most 200 characters")
    return [v.strip() for v in value]


MODEL_TIMEOUT = 5.0


def _model_name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or not value.isprintable():
        raise GuardrailSpecError(path, "the name of one of this tenant's models")
    return value.strip()


def _model_fields(item: dict[str, Any], check: str, p: str) -> dict[str, Any]:
    """moderation's model, api and categories; prompt_injection's embedding_model. Which models exist is
    the tenant config's to check (tenants.config), once its models are known."""
    out: dict[str, Any] = {}
    if check == "moderation":
        if item.get("model") is None:
            raise GuardrailSpecError(
                f"{p}.model", "moderation needs its model (a judge, or with api: moderations, a moderation model)"
            )
        out["model"] = _model_name(item["model"], f"{p}.model")
        api = item.get("api", "chat")
        if api not in MODERATION_APIS:
            raise GuardrailSpecError(
                f"{p}.api", "chat (a judge model) or moderations (an OpenAI-format moderation endpoint)"
            )
        out["api"] = api
        categories = item.get("categories")
        if categories is None:
            raise GuardrailSpecError(
                f"{p}.categories", f"moderation needs its categories, from {', '.join(MODERATION_CATEGORIES)}"
            )
        names = _strings(categories, f"{p}.categories", limit=len(MODERATION_CATEGORIES))
        unknown = [c for c in names if c not in MODERATION_CATEGORIES]
        if unknown:
            raise GuardrailSpecError(
                f"{p}.categories", f"{unknown[0]!r} is not one of {', '.join(MODERATION_CATEGORIES)}"
            )
        out["categories"] = list(dict.fromkeys(names))
    else:
        for name in ("model", "api", "categories"):
            if item.get(name) is not None:
                raise GuardrailSpecError(f"{p}.{name}", f"not a field of {check}")
    if item.get("embedding_model") is not None:
        if check != "prompt_injection":
            raise GuardrailSpecError(f"{p}.embedding_model", "only prompt_injection has an embedding_model")
        out["embedding_model"] = _model_name(item["embedding_model"], f"{p}.embedding_model")
    return out


def normalize_guardrails(value: Any, path: str = "guardrails") -> list[dict[str, Any]]:  # noqa: C901
    """The checks as stored: every field given, defaults filled in. Raises GuardrailSpecError naming the
    field for anything it cannot run."""
    if not isinstance(value, list):
        raise GuardrailSpecError(path, "a list of checks")
    if len(value) > MAX_CHECKS:
        raise GuardrailSpecError(path, f"at most {MAX_CHECKS} checks")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise GuardrailSpecError(p, "a mapping {name, check, ...}")
        unknown = sorted(set(item) - FIELDS)
        if unknown:
            raise GuardrailSpecError(f"{p}.{unknown[0]}", "unknown field")
        name = item.get("name")
        if (
            not isinstance(name, str)
            or not name
            or len(name) > MAX_NAME
            or not name.replace("-", "").replace("_", "").isalnum()
        ):
            raise GuardrailSpecError(
                f"{p}.name", f"a name of letters, digits, '-' and '_', at most {MAX_NAME} characters"
            )
        if name in seen:
            raise GuardrailSpecError(f"{p}.name", f"the name {name!r} is used twice")
        seen.add(name)
        check = item.get("check")
        if check not in CHECKS:
            raise GuardrailSpecError(f"{p}.check", f"one of {', '.join(CHECKS)}")
        default_side, sides = CHECK_SIDES[check]
        on = item.get("on", default_side)
        if on not in sides:
            raise GuardrailSpecError(f"{p}.on", f"{check} runs on {' or '.join(sorted(sides))}")
        action = item.get("action", "block")
        if action not in ACTIONS:
            raise GuardrailSpecError(f"{p}.action", f"one of {', '.join(ACTIONS)}")
        fail = item.get("fail", "closed")
        if fail not in FAILS:
            raise GuardrailSpecError(f"{p}.fail", "closed or open")
        timeout = item.get("timeout_s", MODEL_TIMEOUT if check == "moderation" else 1.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
            raise GuardrailSpecError(f"{p}.timeout_s", "more than 0 and at most 60 seconds")
        row: dict[str, Any] = {"name": name, "check": check, "on": on, "action": action, "fail": fail}
        row["timeout_s"] = float(timeout)
        threshold = item.get("threshold")
        if threshold is not None:
            if check != "prompt_injection":
                raise GuardrailSpecError(f"{p}.threshold", "only prompt_injection has a threshold")
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
                raise GuardrailSpecError(f"{p}.threshold", "more than 0 and at most 1")
        if check == "prompt_injection":
            row["threshold"] = float(threshold if threshold is not None else 0.5)
        row.update(_model_fields(item, check, p))
        words_field = "topics" if check == "denied_topics" else "words"
        for other in ("words", "topics"):
            if item.get(other) is not None and (check not in ("denied_topics", "keywords") or other != words_field):
                raise GuardrailSpecError(f"{p}.{other}", f"not a field of {check}")
        if check in ("denied_topics", "keywords"):
            if item.get(words_field) is None:
                raise GuardrailSpecError(f"{p}.{words_field}", f"{check} needs its {words_field}")
            row["words"] = _strings(item[words_field], f"{p}.{words_field}", limit=MAX_WORDS)
        if check in ("max_input_tokens", "max_output_tokens"):
            limit = item.get("max")
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000_000:
                raise GuardrailSpecError(f"{p}.max", "a whole number of tokens, at least 1")
            row["max"] = limit
        elif item.get("max") is not None:
            raise GuardrailSpecError(f"{p}.max", f"not a field of {check}")
        applies = item.get("applies_to") or {}
        if not isinstance(applies, dict):
            raise GuardrailSpecError(f"{p}.applies_to", "a mapping {models, keys, tags}")
        unknown = sorted(set(applies) - APPLIES_TO)
        if unknown:
            raise GuardrailSpecError(f"{p}.applies_to.{unknown[0]}", "unknown field")
        row["applies_to"] = {
            k: _strings(applies[k], f"{p}.applies_to.{k}", limit=MAX_WORDS)
            for k in sorted(APPLIES_TO)
            if applies.get(k)
        }
        out.append(row)
    return out


def export_guardrails(stored: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The stored checks as YAML writes them (defaults left out)."""
    if not stored:
        return None
    out = []
    for row in stored:
        default_side = CHECK_SIDES[row["check"]][0]
        item: dict[str, Any] = {"name": row["name"], "check": row["check"]}
        if row["on"] != default_side:
            item["on"] = row["on"]
        if row["action"] != "block":
            item["action"] = row["action"]
        if row["fail"] != "closed":
            item["fail"] = row["fail"]
        if row["timeout_s"] != (MODEL_TIMEOUT if row["check"] == "moderation" else 1.0):
            item["timeout_s"] = row["timeout_s"]
        if row["check"] == "prompt_injection" and row["threshold"] != 0.5:
            item["threshold"] = row["threshold"]
        if "words" in row:
            item["topics" if row["check"] == "denied_topics" else "words"] = list(row["words"])
        if "max" in row:
            item["max"] = row["max"]
        for name in ("model", "embedding_model"):
            if row.get(name):
                item[name] = row[name]
        if row.get("api", "chat") != "chat":
            item["api"] = row["api"]
        if row.get("categories"):
            item["categories"] = list(row["categories"])
        if row.get("applies_to"):
            item["applies_to"] = {k: list(v) for k, v in row["applies_to"].items()}
        out.append(item)
    return out


# --- the engine -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's finding on one call: what it decided, its score (0..1) and its time; never the text."""

    name: str
    check: str
    side: str  # "input" | "output"
    outcome: str  # "pass" | "block" | "flag" | "log" | "error"
    score: float = 0.0
    ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "side": self.side,
            "outcome": self.outcome,
            "score": round(self.score, 3),
            "ms": round(self.ms, 3),
        }


@dataclass(slots=True)
class Check:
    name: str
    check: str
    on: str
    action: str
    fail: str
    timeout_s: float
    threshold: float = 0.5
    limit: int = 0
    pattern: re.Pattern[str] | None = None
    model: str = ""  # moderation's judge or moderation model
    api: str = "chat"
    categories: tuple[str, ...] = ()
    embedding_model: str = ""  # prompt_injection's classifier
    models: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def applies(self, model: str, key: str, tags: list[str]) -> bool:
        return (
            (not self.models or model in self.models)
            and (not self.keys or key in self.keys)
            and (not self.tags or any(t in self.tags for t in tags))
        )

    @property
    def calls_model(self) -> bool:
        """Whether the check calls one of the tenant's models (a call of its own, awaited)."""
        return bool(self.model or self.embedding_model)

    def on_side(self, side: str) -> bool:
        return self.on == side or self.on == "both"

    def outcome(self, hit: bool) -> str:
        if not hit:
            return "pass"
        return {"block": "block", "flag": "flag", "log-only": "log"}[self.action]


def _words_hit(pattern: re.Pattern[str], text: str) -> bool:
    """A whole word or phrase of the list, in the text as people paste it (the PII scan's normalization)."""
    seen = pasted_form(text)[0] if not text.isascii() else text
    lowered = lower(seen)
    for m in pattern.finditer(lowered):
        start = m.start()
        if start == 0 or not (lowered[start - 1].isalnum() or lowered[start - 1] == "_"):
            return True
    return False


def text_check(check: Check, text: str, source: str = "user") -> tuple[bool, float]:
    """(hit, score) of a text check on one text."""
    if check.check == "prompt_injection":
        verdict = injection_score(text, source=source)
        return verdict.score >= check.threshold, verdict.score
    if check.pattern is not None:
        hit = _words_hit(check.pattern, text)
        return hit, 1.0 if hit else 0.0
    return False, 0.0


def timed(check: Check, side: str, run: Any) -> Verdict:
    """Run one check; its failure is `error` (the step applies `fail`)."""
    started = time.perf_counter()
    try:
        hit, score = run()
    except Exception:
        return Verdict(check.name, check.check, side, "error", 0.0, (time.perf_counter() - started) * 1000)
    return Verdict(check.name, check.check, side, check.outcome(hit), score, (time.perf_counter() - started) * 1000)


@dataclass(slots=True)
class Guardrails:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def for_call(self, model: str, key: str, tags: list[str]) -> list[Check]:
        return [c for c in self.checks if c.applies(model, key, tags)]


def compile_guardrails(stored: list[dict[str, Any]]) -> Guardrails:
    checks = []
    for row in stored:
        applies = row.get("applies_to") or {}
        checks.append(
            Check(
                name=row["name"],
                check=row["check"],
                on=row["on"],
                action=row["action"],
                fail=row["fail"],
                timeout_s=row["timeout_s"],
                threshold=row.get("threshold", 0.5),
                limit=row.get("max", 0),
                pattern=term_pattern(row["words"]) if row.get("words") else None,
                model=row.get("model", ""),
                api=row.get("api", "chat"),
                categories=tuple(row.get("categories", ())),
                embedding_model=row.get("embedding_model", ""),
                models=frozenset(applies.get("models", ())),
                keys=frozenset(applies.get("keys", ())),
                tags=frozenset(applies.get("tags", ())),
            )
        )
    return Guardrails(tuple(checks))


# --- the console's preview --------------------------------------------------------------------------------

# Where a pasted text could come from on the input side: a user turn, or a tool result (indirect injection).
PREVIEW_SOURCES = ("user", "tool")


@dataclass(frozen=True, slots=True)
class PreviewVerdict:
    verdict: Verdict
    action: str  # the check's action, to say what a hit would do
    fail: str
    signals: tuple[str, ...] = ()  # the injection pack's rules that fired; names, never the text


def preview(stored: list[dict[str, Any]], text: str, *, source: str) -> list[PreviewVerdict]:
    """Each input-side text check's verdict on `text` arriving as a user turn or a tool result, as the
    pipeline step reaches it (timed, a failure an `error`); applies_to aside. The token and schema checks
    and output-only ones are not run: a pasted text is not a whole request or answer."""
    if source not in PREVIEW_SOURCES:
        raise ValueError(f"source must be one of {PREVIEW_SOURCES}, not {source!r}")
    out = []
    for check in compile_guardrails(stored).checks:
        if check.check not in TEXT_CHECKS or not check.on_side("input"):
            continue
        verdict = timed(check, "input", lambda c=check: text_check(c, text, source))
        signals: tuple[str, ...] = ()
        if check.check == "prompt_injection" and verdict.outcome != "error":
            # Run again, untimed, to say why: the verdict stays exactly the step's.
            signals = injection_score(text, source=source).signals
        out.append(PreviewVerdict(verdict, check.action, check.fail, signals))
    return out
