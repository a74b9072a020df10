"""The routing parts of the tenant YAML: per-model routing fields and the top-level `rules` list.

tenants/config.py reads providers and models and calls in here for what routing owns, so the values
are checked by the same functions the services use (routing.services), and only the line numbers
and field paths are added here.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from routing.models import ROUTE_DEFAULTS, ModelRoute, RouteRule
from routing.services import (
    COOLDOWN_FIELDS,
    ROUTE_FIELDS,
    RULE_CONDITIONS,
    SPLIT_FIELDS,
    route_references_check,
    route_settings_clean,
    rule_match_clean,
)
from tenants.models import Tenant

RULE_FIELDS = {"if", "route"}


def _fail_from(exc: ValidationError, path: str, c: Any) -> Exception:
    field, messages = next(iter(exc.message_dict.items()))
    return c.fail(messages[0], f"{path}.{field}" if field else path)


def parse_model_routing(raw: dict, path: str, c: Any) -> dict:
    """The routing fields of one `models[i]` item (already checked for unknown keys), cleaned."""
    settings = {k: raw[k] for k in ROUTE_FIELDS if raw.get(k) is not None}
    if "strategy" in settings:
        settings["strategy"] = c.string(settings["strategy"], f"{path}.strategy")
    for field in ("fallbacks", "context_window_fallbacks"):
        if field in settings:
            settings[field] = [
                c.string(item, f"{path}.{field}[{i}]")
                for i, item in enumerate(c.sequence(settings[field], f"{path}.{field}"))
            ]
    if "split" in settings:
        c.mapping(settings["split"], f"{path}.split", SPLIT_FIELDS, {"model", "percent"})
        split = dict(settings["split"])
        split["model"] = c.string(split["model"], f"{path}.split.model")
        if split.get("sticky") is not None:
            split["sticky"] = c.string(split["sticky"], f"{path}.split.sticky")
        settings["split"] = split
    if "cooldown" in settings:
        c.mapping(settings["cooldown"], f"{path}.cooldown", COOLDOWN_FIELDS, set())
    try:
        return route_settings_clean(settings)
    except ValidationError as exc:
        raise _fail_from(exc, path, c) from None


def check_model_references(routes: dict[str, dict], index: dict[str, int], c: Any) -> None:
    """Fallbacks, context-window fallbacks and splits name models of this file, without cycles."""
    try:
        route_references_check(routes, set(index), where=lambda name, field: f"models[{index[name]}].{field}")
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise c.fail(messages[0], field) from None


def parse_rules(value: Any, path: str, c: Any, model_names: set[str]) -> list[dict]:
    """The top-level `rules:` list: [{"if": normalized conditions, "route": model}], in file order."""
    out = []
    for i, item in enumerate(c.sequence(value, path)):
        p = f"{path}[{i}]"
        c.mapping(item, p, RULE_FIELDS, {"if", "route"})
        c.mapping(item["if"], f"{p}.if", RULE_CONDITIONS, set())
        try:
            match = rule_match_clean(item["if"])
        except ValidationError as exc:
            raise _fail_from(exc, p, c) from None
        route = c.string(item["route"], f"{p}.route")
        if route not in model_names:
            raise c.fail(f"unknown model {route!r} (not listed under models)", f"{p}.route")
        out.append({"if": match, "route": route})
    return out


def _plain(number: float) -> int | float:
    """60.0 -> 60, so exports read like what people write."""
    return int(number) if float(number).is_integer() else number


def export_model_routing(settings: dict) -> dict:
    """The fields of a model item that differ from the defaults, in the order of the documented contract."""
    out: dict[str, Any] = {}
    for field in ("strategy", "retries", "timeout_s"):
        if settings[field] != ROUTE_DEFAULTS[field]:
            out[field] = _plain(settings[field]) if field == "timeout_s" else settings[field]
    return out


def export_model_links(settings: dict) -> dict:
    """Fallbacks, split and cooldown of a model (written after its deployments), defaults omitted."""
    out: dict[str, Any] = {}
    for field in ("fallbacks", "context_window_fallbacks"):
        if settings[field]:
            out[field] = list(settings[field])
    if settings["split"]:
        split = settings["split"]
        out["split"] = {"model": split["model"], "percent": _plain(split["percent"]), "sticky": split["sticky"]}
    cooldown = {
        k: _plain(v) if k != "failures" else v
        for k, v in settings["cooldown"].items()
        if v != ROUTE_DEFAULTS["cooldown"][k]
    }
    if cooldown:
        out["cooldown"] = cooldown
    return out


def route_settings_by_model(tenant: Tenant) -> dict[str, dict]:
    return {r.model_name: r.settings() for r in ModelRoute.objects.filter(tenant=tenant)}


def export_rules(tenant: Tenant) -> list[dict] | None:
    rules = []
    for r in RouteRule.objects.filter(tenant=tenant).order_by("position", "id"):
        cond: dict[str, Any] = {}
        for field in ("key", "metadata", "tags", "user", "prompt_bytes_over"):
            if field not in r.match:
                continue
            value = r.match[field]
            # One name is written as a plain string, as people write it.
            cond[field] = value[0] if field in ("key", "user") and len(value) == 1 else value
        rules.append({"if": cond, "route": r.route})
    return rules or None
