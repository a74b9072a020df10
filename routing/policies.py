"""Data policies: the `pii:` and `cache:` sections of the tenant YAML (issue 11), checked and normalized.

One set of pure functions serves the YAML file, the console and the management API, so a policy is
refused with the same words wherever it is written; the YAML adds line numbers through its checker.
The normalized form is what `Tenant.pii_policy`, `VirtualKey.pii_policy` and `Tenant.cache_policy`
store and what the proxy compiles (proxy.policies.pii.compile_policy):

    pii:   {"mode", "detectors": {name: action}, "custom": [{name, pattern, action}],
            "terms": {"words": [...], "action"}, "scan_responses"}   (every key present)
    cache: {"enabled", "ttl_s", "models"?}                            (models only when given)

In the YAML, an absent section leaves the stored policy as it is and an empty one removes it (like the
money sections). The engine has the last word on a PII policy (its detector list, its regex flavour),
so it is asked here, imported inside the functions: a domain app must not import the proxy at load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

# The engine's own list wins when it is installed (it may add detectors, e.g. an NER one); this is the
# list of the issue, used when the engine is not importable.
BUILTIN_DETECTORS: tuple[str, ...] = ("email", "phone", "card", "iban", "us_ssn", "ip", "secret")
ACTIONS: tuple[str, ...] = ("redact", "mask", "pseudonymize", "block", "log-only")
MODES: tuple[str, ...] = ("enforce", "log-only")
DEFAULT_ACTION = "redact"

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
# Custom names become placeholders ([ORDER_ID], <ORDER_ID_1>) and log keys, as the engine requires.
_CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
# The term list reports under this name, so no custom pattern may take it.
_RESERVED_NAMES = {"terms"}


def detector_names() -> tuple[str, ...]:
    try:
        from proxy.policies.pii import DETECTORS  # the engine is optional while it is being built
    except ImportError:
        return BUILTIN_DETECTORS
    return tuple(DETECTORS)


def _compile_policy(spec: dict) -> Any:
    """The engine's compile_policy, or None when the engine is not installed."""
    try:
        from proxy.policies.pii import compile_policy
    except ImportError:
        return None
    return compile_policy(spec)


# --- Checking without a file: the console and the API ----------------------------------------------


class PolicyError(Exception):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.message = message
        self.path = path


class FieldChecker:
    """What parse_pii/parse_cache need of tenants.config's checker, for input that has no line numbers."""

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


def parse_pii(value: Any, path: str, c: Any) -> dict:
    """The `pii:` section, normalized with every key present. Errors name the field (c.fail adds the line)."""
    _mapping(value, path, c, PII_FIELDS)
    mode = _choice(value.get("mode", "enforce"), f"{path}.mode", c, MODES, "mode")

    detectors: dict[str, str] = {}
    known = detector_names()
    raw_detectors = value.get("detectors")
    if raw_detectors is not None:
        if not isinstance(raw_detectors, dict):
            raise c.fail(
                f"expected a mapping of detector to action, got {_type_name(raw_detectors)}", f"{path}.detectors"
            )
        for name, action in raw_detectors.items():
            dpath = f"{path}.detectors.{name}"
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
    # The engine has the last word (it compiles exactly what the proxy will run): a spec it refuses
    # would otherwise be saved and then fail closed on every call.
    try:
        _compile_policy(policy)
    except ValueError as exc:
        raise c.fail(str(exc), _engine_error_path(str(exc), path, custom)) from None
    return policy


def _pattern_problem(pattern: str) -> str:
    """Why `pattern` does not compile (with the `regex` module the engine uses), or ""."""
    import regex

    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        return str(exc)
    except (ValueError, RecursionError, OverflowError) as exc:
        return str(exc) or type(exc).__name__
    if compiled.match("") is not None:
        return "it matches the empty string, so it would match everywhere"
    return ""


def _engine_error_path(message: str, path: str, custom: list[dict]) -> str:
    # Point at the field the engine names ("custom[0].pattern (order_id) does not compile"), if any.
    found = re.search(r"custom\[(\d+)\](\.\w+)?", message)
    if found and int(found.group(1)) < len(custom):
        return f"{path}.custom[{found.group(1)}]{found.group(2) or ''}"
    return path


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


# --- Used by the services (console, API): a ValidationError keyed by the field path ----------------


def _clean(parser: Any, value: Any, path: str) -> dict:
    try:
        return parser(value, path, FieldChecker())
    except PolicyError as exc:
        raise ValidationError({exc.path: exc.message}) from None


def pii_policy_clean(value: Any, path: str = "pii") -> dict:
    return _clean(parse_pii, value, path)


def cache_policy_clean(value: Any, path: str = "cache") -> dict:
    return _clean(parse_cache, value, path)


def preview(policy: dict, text: str, answer: str | None = None) -> dict:
    """What the proxy would send upstream for `text` under `policy`, and what the client would see of
    `answer` (the sent text when None) after restore. Raises ValidationError when the engine is missing
    or refuses the policy."""
    try:
        compiled = _compile_policy(policy)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if compiled is None:
        raise ValidationError("The PII engine is not installed in this build, so there is nothing to preview.")
    try:
        return compiled.preview(text, answer)
    except ValueError as exc:
        # A custom pattern ran out of its time budget: the proxy would refuse such a request too.
        raise ValidationError(f"The scan failed, so the proxy would refuse this request: {exc}") from None


# --- YAML: registered in tenants.config.EXTENSIONS ---------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A section that is present in the file; `policy` None when it is written empty (`pii:`), which
    removes the tenant's policy. An absent section leaves the stored policy as it is."""

    policy: dict | None


def parse_pii_section(value: Any, path: str, c: Any) -> Section:
    return Section(None if value is None or value == {} else parse_pii(value, path, c))


def parse_cache_section(value: Any, path: str, c: Any) -> Section:
    return Section(None if value is None or value == {} else parse_cache(value, path, c))


def apply_pii_section(tenant: Any, section: Section | None, *, actor: Any) -> list[str]:
    from routing.services import tenant_pii_policy_set

    if section is None:
        return []
    return ["~ pii"] if tenant_pii_policy_set(tenant, policy=section.policy, actor=actor) else []


def apply_cache_section(tenant: Any, section: Section | None, *, actor: Any) -> list[str]:
    from routing.services import tenant_cache_policy_set

    if section is None:
        return []
    return ["~ cache"] if tenant_cache_policy_set(tenant, policy=section.policy, actor=actor) else []


def _stored(tenant: Any, field: str) -> dict | None:
    # Read afresh: the instance handed to export may predate the apply that changed it.
    return type(tenant).objects.filter(pk=tenant.pk).values_list(field, flat=True).first()


apply_pii_section.export = lambda tenant: export_pii(_stored(tenant, "pii_policy"))  # type: ignore[attr-defined]
apply_cache_section.export = lambda tenant: export_cache(_stored(tenant, "cache_policy"))  # type: ignore[attr-defined]
