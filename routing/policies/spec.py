"""The data-policy grammar: the `pii:` and `cache:` sections, checked and normalized.

The one grammar of both policies: the YAML file (routing.policies.declarative, which adds line numbers
through its checker), the console and the management API refuse a policy with the same words, and the
engine (routing.policies.engine) compiles only what this module normalized. The normalized form is what
`Tenant.pii_policy`, `VirtualKey.pii_policy` and `Tenant.cache_policy` store:

    pii:   {"mode", "detectors": {name: action}, "custom": [{name, pattern, action}],
            "terms": {"words": [...], "action"}, "scan_responses"}   (every key present)
    cache: {"enabled", "ttl_s", "models"?}                            (models only when given)
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import regex
from django.core.exceptions import ValidationError

# Built-in detector names, in the order the policy YAML lists them.
BUILTIN_DETECTORS: tuple[str, ...] = ("email", "phone", "card", "iban", "us_ssn", "ip", "secret")
# Names of people, found by Presidio's NER: offered only where presidio-analyzer (and its spaCy model)
# is installed; never required.
NER_DETECTOR = "person"
NER_AVAILABLE = importlib.util.find_spec("presidio_analyzer") is not None
DETECTORS: tuple[str, ...] = BUILTIN_DETECTORS + ((NER_DETECTOR,) if NER_AVAILABLE else ())
ACTIONS: tuple[str, ...] = ("redact", "mask", "pseudonymize", "block", "log-only")
MODES: tuple[str, ...] = ("enforce", "log-only")
DEFAULT_ACTION = "redact"
TERMS = "terms"  # the detector name the term list reports as

PII_FIELDS = {"mode", "detectors", "custom", "terms", "scan_responses"}
CUSTOM_FIELDS = {"name", "pattern", "action"}
TERMS_FIELDS = {"words", "action"}
CACHE_FIELDS = {"enabled", "ttl_s", "models"}

MAX_CUSTOM = 50
MAX_PATTERN_CHARS = 1000
MAX_TERMS = 1000
MAX_TERM_CHARS = 200
MAX_CACHE_MODELS = 500
DEFAULT_TTL_S = 3600
MAX_TTL_S = 30 * 24 * 3600  # 30 days
# Custom names become placeholders ([ORDER_ID], <ORDER_ID_1>) and log keys.
_CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
# Names a custom pattern may not take: the term list reports as "terms", and the NER detector's name
# stays reserved where Presidio is not installed.
_RESERVED_NAMES = {TERMS, NER_DETECTOR}


# --- Checking without a file: the console and the API ----------------------------------------------


class PolicyError(ValueError):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.message = message
        self.path = path


class FieldChecker:
    """What parse_pii/parse_cache need of the YAML checker (tenants.config), for input without line numbers."""

    def fail(self, message: str, path: str) -> PolicyError:
        return PolicyError(message, path)


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _mapping(value: Any, path: str, c: Any, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise c.fail(f"expected a mapping, got {_type_name(value)}", path)
    for key in value:
        if key not in allowed:
            raise c.fail(f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})", f"{path}.{key}")
    return value


def _list(value: Any, path: str, c: Any) -> list:
    if not isinstance(value, list):
        raise c.fail(f"expected a list, got {_type_name(value)}", path)
    return value


def _text(value: Any, path: str, c: Any) -> str:
    if not isinstance(value, str):
        raise c.fail(f"expected a string, got {_type_name(value)}", path)
    text = value.strip()
    if not text:
        raise c.fail("must not be empty", path)
    return text


def _choice(value: Any, path: str, c: Any, choices: tuple[str, ...], what: str) -> str:
    text = _text(value, path, c)
    if text not in choices:
        raise c.fail(f"unknown {what} {text!r} (use one of: {', '.join(choices)})", path)
    return text


def _boolean(value: Any, path: str, c: Any) -> bool:
    if not isinstance(value, bool):
        raise c.fail(f"expected true or false, got {value!r}", path)
    return value


# --- pii: ------------------------------------------------------------------------------------------


def parse_pii(value: Any, path: str, c: Any, *, saving: bool = True) -> dict:  # noqa: C901
    """The `pii:` section, normalized with every key present. Errors name the field (c.fail adds the line)."""
    _mapping(value, path, c, PII_FIELDS)
    mode = _choice(value.get("mode", "enforce"), f"{path}.mode", c, MODES, "mode")

    detectors: dict[str, str] = {}
    known = DETECTORS
    raw_detectors = value.get("detectors")
    if raw_detectors is not None:
        if not isinstance(raw_detectors, dict):
            raise c.fail(
                f"expected a mapping of detector to action, got {_type_name(raw_detectors)}", f"{path}.detectors"
            )
        for name, action in raw_detectors.items():
            dpath = f"{path}.detectors.{name}"
            if name == NER_DETECTOR and not NER_AVAILABLE:
                raise c.fail(f"the {name!r} detector needs Presidio (presidio-analyzer), which is not installed", dpath)
            if name not in known:
                raise c.fail(f"unknown detector {name!r} (use one of: {', '.join(known)})", dpath)
            detectors[name] = _choice(action, dpath, c, ACTIONS, "action")

    custom: list[dict[str, str]] = []
    seen: set[str] = set()
    items = _list(value["custom"], f"{path}.custom", c) if value.get("custom") is not None else []
    if len(items) > MAX_CUSTOM:
        raise c.fail(f"at most {MAX_CUSTOM} custom patterns", f"{path}.custom")
    for i, item in enumerate(items):
        ipath = f"{path}.custom[{i}]"
        _mapping(item, ipath, c, CUSTOM_FIELDS)
        for required in ("name", "pattern"):
            if item.get(required) is None:
                raise c.fail(f"missing required field {required!r}", ipath)
        name = _text(item["name"], f"{ipath}.name", c)
        if not _CUSTOM_NAME.match(name):
            raise c.fail(
                f"{name!r} is not a usable name: a lowercase letter, then lowercase letters, digits and _ (max 50)",
                f"{ipath}.name",
            )
        if name in seen:
            raise c.fail(f"custom name {name!r} is used twice", f"{ipath}.name")
        if name in known or name in _RESERVED_NAMES:
            raise c.fail(f"{name!r} is a built-in detector; give the custom pattern another name", f"{ipath}.name")
        seen.add(name)
        if not isinstance(item["pattern"], str) or not item["pattern"].strip():
            raise c.fail("must be a non-empty regular expression", f"{ipath}.pattern")
        pattern = item["pattern"]  # not stripped: a space may be part of what it matches
        if len(pattern) > MAX_PATTERN_CHARS:
            raise c.fail(f"must be at most {MAX_PATTERN_CHARS} characters", f"{ipath}.pattern")
        problem = _pattern_problem(pattern)
        if problem:
            raise c.fail(f"not a valid regular expression: {problem}", f"{ipath}.pattern")
        slow = _too_slow(pattern) if saving else ""
        if slow:
            raise c.fail(slow, f"{ipath}.pattern")
        action = _choice(item.get("action", DEFAULT_ACTION), f"{ipath}.action", c, ACTIONS, "action")
        custom.append({"name": name, "pattern": pattern, "action": action})

    terms: dict[str, Any] = {"words": [], "action": DEFAULT_ACTION}
    if value.get("terms") is not None:
        tpath = f"{path}.terms"
        _mapping(value["terms"], tpath, c, TERMS_FIELDS)
        words: list[str] = []
        raw_words = _list(value["terms"].get("words"), f"{tpath}.words", c)
        if len(raw_words) > MAX_TERMS:
            raise c.fail(f"at most {MAX_TERMS} words", f"{tpath}.words")
        for j, word in enumerate(raw_words):
            # YAML reads `[Falcon, 2024]` as a string and a number; a term is text either way.
            if isinstance(word, (int, float)) and not isinstance(word, bool):
                word = str(word)
            text = _text(word, f"{tpath}.words[{j}]", c)
            if len(text) > MAX_TERM_CHARS:
                raise c.fail(f"must be at most {MAX_TERM_CHARS} characters", f"{tpath}.words[{j}]")
            if text not in words:
                words.append(text)
        terms = {
            "words": words,
            "action": _choice(value["terms"].get("action", DEFAULT_ACTION), f"{tpath}.action", c, ACTIONS, "action"),
        }

    scan_responses = _boolean(value.get("scan_responses", False), f"{path}.scan_responses", c)
    policy = {
        "mode": mode,
        "detectors": detectors,
        "custom": custom,
        "terms": terms,
        "scan_responses": scan_responses,
    }
    return policy


def _pattern_problem(pattern: str) -> str:
    """Why `pattern` does not compile (with the `regex` module the engine uses), or ""."""
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        return str(exc)
    except (ValueError, RecursionError, OverflowError) as exc:
        return str(exc) or type(exc).__name__
    if compiled.match("") is not None:
        return "it matches the empty string, so it would match everywhere"
    return ""


# Saving a custom pattern runs it on adversarial text: runs of each character it names (and of what
# its classes match), a few KB each. One that backtracks catastrophically takes seconds on them and is
# refused; a sound pattern takes microseconds.
PROBE_CHARS = 3000
PROBE_TIMEOUT_S = 0.02
_CLASS_SAMPLES = {"\\d": "1", "\\w": "a", "\\s": " ", ".": "a", "\\D": "a", "\\W": "!", "\\S": "a"}


def _probes(pattern: str) -> list[str]:
    chars = [ch for ch in dict.fromkeys(pattern) if ch.isalnum() or ch in "@.-_ :/"]
    chars += [sample for cls, sample in _CLASS_SAMPLES.items() if cls in pattern]
    probes = [ch * PROBE_CHARS for ch in dict.fromkeys(chars[:24])]
    pairs = "".join(chars[:2]) or "ab"
    probes.append(pairs * (PROBE_CHARS // len(pairs)))
    return probes


def _too_slow(pattern: str) -> str:
    """Why `pattern` may not be saved for its speed (catastrophic backtracking), or ""."""
    compiled = regex.compile(pattern)
    for probe in _probes(pattern):
        try:
            compiled.search(probe, timeout=PROBE_TIMEOUT_S)
            compiled.search(probe + "!", timeout=PROBE_TIMEOUT_S)
        except TimeoutError:
            sample = probe[:6] + "…"
            return (
                f"this pattern takes too long on text like {sample!r} ({PROBE_CHARS:,} characters): it backtracks "
                "catastrophically (nested repetition such as (a+)+). Rewrite it without repeating a repetition."
            )
    return ""


def export_pii(policy: dict | None) -> dict | None:
    """The section as people write it: defaults (no custom patterns, no terms) left out."""
    if not policy:
        return None
    out: dict[str, Any] = {"mode": policy.get("mode", "enforce"), "detectors": dict(policy.get("detectors") or {})}
    if policy.get("custom"):
        out["custom"] = [dict(item) for item in policy["custom"]]
    terms = policy.get("terms") or {}
    if terms.get("words"):
        out["terms"] = {"words": list(terms["words"]), "action": terms.get("action", DEFAULT_ACTION)}
    out["scan_responses"] = bool(policy.get("scan_responses", False))
    return out


# --- cache: ----------------------------------------------------------------------------------------


def parse_cache(value: Any, path: str, c: Any) -> dict:
    """The `cache:` section: {"enabled", "ttl_s", "models"?}. Unknown model names are allowed (a model
    may be added later), but they must be strings."""
    _mapping(value, path, c, CACHE_FIELDS)
    enabled = _boolean(value.get("enabled", True), f"{path}.enabled", c)
    ttl = value.get("ttl_s", DEFAULT_TTL_S)
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise c.fail(f"must be a whole number of seconds, got {ttl!r}", f"{path}.ttl_s")
    if not 1 <= ttl <= MAX_TTL_S:
        raise c.fail(f"must be from 1 to {MAX_TTL_S} seconds (30 days)", f"{path}.ttl_s")
    policy: dict[str, Any] = {"enabled": enabled, "ttl_s": ttl}
    if value.get("models") is not None:
        mpath = f"{path}.models"
        raw = _list(value["models"], mpath, c)
        if not raw:
            raise c.fail("leave models out to cache every model (or set enabled: false to cache none)", mpath)
        if len(raw) > MAX_CACHE_MODELS:
            raise c.fail(f"at most {MAX_CACHE_MODELS} models", mpath)
        models: list[str] = []
        for i, name in enumerate(raw):
            text = _text(name, f"{mpath}[{i}]", c)
            if len(text) > 200:
                raise c.fail("must be at most 200 characters", f"{mpath}[{i}]")
            if text not in models:
                models.append(text)
        policy["models"] = models
    return policy


def export_cache(policy: dict | None) -> dict | None:
    if not policy:
        return None
    out: dict[str, Any] = {
        "enabled": bool(policy.get("enabled", True)),
        "ttl_s": int(policy.get("ttl_s", DEFAULT_TTL_S)),
    }
    if policy.get("models"):
        out["models"] = list(policy["models"])
    return out


# --- Outside the YAML: PolicyError for the proxy, a ValidationError keyed by the field path for the services


def _clean(parser: Any, value: Any, path: str) -> dict:
    try:
        return parser(value, path, FieldChecker())
    except PolicyError as exc:
        raise ValidationError({exc.path: exc.message}) from None


def normalize_pii(value: Any) -> dict:
    """A stored policy in its normalized form (at config load: patterns were vetted when saved);
    PolicyError (a ValueError) when invalid."""
    return parse_pii(value, "pii", FieldChecker(), saving=False)


def pii_policy_clean(value: Any, path: str = "pii") -> dict:
    return _clean(parse_pii, value, path)


def cache_policy_clean(value: Any, path: str = "cache") -> dict:
    return _clean(parse_cache, value, path)
