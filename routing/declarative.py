"""Routing's part of the tenant YAML: the top-level `providers`, `models` and `rules`.

Registered with the YAML engine (tenants.config.SECTIONS) from RoutingConfig.ready(), as one section:
models name providers, routes and rules name models. Values are checked by the same functions the
services use (routing.services); only the line numbers and field paths are added here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from routing.models import (
    AWS_SECRET_FIELDS,
    MAX_WEIGHT,
    ROUTE_DEFAULTS,
    ModelDeployment,
    ModelRoute,
    ProviderCredential,
    ProviderKind,
    RouteRule,
)
from routing.services import (
    COOLDOWN_FIELDS,
    KIND_FIELDS,
    MAX_PROVIDER_NAME_CHARS,
    REQUIRED_FIELDS,
    ROUTE_FIELDS,
    RULE_CONDITIONS,
    SPLIT_FIELDS,
    STOP_WHEN_FIELDS,
    header_problem,
    model_delete,
    model_deployments_set,
    model_routes_set,
    provider_delete,
    provider_settings_check,
    provider_upsert,
    route_references_check,
    route_rules_set,
    route_settings_clean,
    rule_match_clean,
)
from tenants.audit import Actor
from tenants.bounds import MAX_NAME_CHARS, text_problem
from tenants.config import SECTIONS, ConfigError, Section
from tenants.models import Tenant

RULE_FIELDS = {"if", "route"}
PROVIDER_FIELDS = {"name", "kind", "base_url", "api_key", "api_version", "region", "headers", *AWS_SECRET_FIELDS}
MODEL_FIELDS = {"name", "deployments"} | ROUTE_FIELDS
DEPLOYMENT_FIELDS = {"provider", "model", "weight", "base_model"}


def _name(value: Any, path: str, c: Any, *, max_chars: int = MAX_NAME_CHARS, what: str = "name") -> str:
    """A name of the file, bounded and printable (it becomes a column, a log field and a metric label)."""
    name = c.string(value, path)
    problem = text_problem(name, max_chars=max_chars, what=what)
    if problem:
        raise c.fail(problem, path)
    return name


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
        if split.get("stop_when") is not None:
            c.mapping(split["stop_when"], f"{path}.split.stop_when", STOP_WHEN_FIELDS, {"score"})
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
        if split.get("stop_when"):
            out["split"]["stop_when"] = dict(split["stop_when"])
    cooldown = {
        k: _plain(v) if k != "failures" else v
        for k, v in settings["cooldown"].items()
        if v != ROUTE_DEFAULTS["cooldown"][k]
    }
    if cooldown:
        out["cooldown"] = cooldown
    return out


def route_settings_by_model(tenant: Tenant) -> dict[str, dict]:
    """Cleaned route settings of every model of the tenant that has a row (others use ROUTE_DEFAULTS)."""
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


# --- The section: providers, models and rules ----------------------------------------------------------


@dataclass
class ProviderSpec:
    name: str
    kind: str
    base_url: str
    api_key: str | None  # resolved secret, None when the file gives none
    api_key_source: str  # "env:NAME" or "literal" or ""
    api_version: str = ""
    region: str = ""
    aws: dict[str, str] = dataclasses.field(default_factory=dict)  # aws_* field -> resolved secret
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> resolved value
    # Where the secrets above came from, in provider_upsert's shape: {"aws_...": "env:X", "headers": {...}}.
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class ModelSpec:
    name: str
    deployments: list[tuple[str, str, int, str]]  # (provider name, upstream model, weight, base_model)
    routing: dict = dataclasses.field(default_factory=lambda: dict(ROUTE_DEFAULTS))  # strategy, retries, fallbacks, ...


@dataclass
class RoutingSpec:
    providers: list[ProviderSpec] = dataclasses.field(default_factory=list)
    models: list[ModelSpec] = dataclasses.field(default_factory=list)
    rules: list[dict] = dataclasses.field(default_factory=list)  # routing rules, in order


def _resolve_secret(raw: str, path: str, checker: Any) -> tuple[str, str]:
    if raw.startswith("env:"):
        var = raw[4:].strip()
        if not var:
            raise checker.fail("env: needs a variable name, e.g. env:OPENAI_API_KEY", path)
        if var not in os.environ:
            raise checker.fail(f"environment variable {var} is not set", path)
        return os.environ[var], f"env:{var}"
    return raw, "literal"


def parse_headers(value: Any, hpath: str, c: Any) -> tuple[dict[str, str], dict[str, str]]:
    """A `headers:` mapping (a provider's, an MCP server's): the resolved values, and where each came
    from ("env:NAME" or "literal"), refused at its line when invalid or given twice."""
    if not isinstance(value, dict):
        raise c.fail(f"expected a mapping of header names to values, got {type(value).__name__}", hpath)
    headers: dict[str, str] = {}
    sources: dict[str, str] = {}
    seen: set[str] = set()
    for name, given in value.items():
        vpath = f"{hpath}.{name}"
        text = given if isinstance(given, str) else c.string(given, vpath)
        # Checked as written and again once resolved: an env variable could hold a line break too.
        problem = header_problem(name, text)
        if not problem:
            text, sources[name] = _resolve_secret(text.strip(), vpath, c)
            problem = header_problem(name, text)
        if problem:
            raise c.fail(problem, vpath)
        if name.lower() in seen:
            raise c.fail(f"header {name} is given twice", vpath)
        seen.add(name.lower())
        headers[name] = text
    return headers, sources


def export_secret(source: str, *env_parts: str) -> str:
    """A secret as `gateway export` writes it: its env: name, or for a literal, the name of the variable
    that should hold it (never the value)."""
    return source if source.startswith("env:") else f"env:{_env_name(*env_parts)}"


def _parse_provider_settings(raw: dict, path: str, c: Any, spec: ProviderSpec) -> ProviderSpec:
    """The kind-specific fields of one providers[i] item: refused when the kind does not take them."""
    kind = spec.kind
    for key in sorted(PROVIDER_FIELDS - {"name", "kind", "base_url"}):
        if raw.get(key) is not None and key not in KIND_FIELDS[kind]:
            takes = ", ".join(sorted(KIND_FIELDS[kind])) or "nothing else"
            raise c.fail(f"unknown field {key!r} for a {kind} provider (it takes: {takes})", f"{path}.{key}")
    for key in REQUIRED_FIELDS.get(kind, ()):
        if raw.get(key) is None or raw.get(key) == "":
            raise c.fail(f"a {kind} provider needs {key}", f"{path}.{key}")
    if raw.get("api_key") is not None:
        spec.api_key, spec.api_key_source = _resolve_secret(
            c.string(raw["api_key"], f"{path}.api_key"), f"{path}.api_key", c
        )
    for key in ("api_version", "region"):
        if raw.get(key) is not None:
            setattr(spec, key, c.string(raw[key], f"{path}.{key}"))
            try:
                provider_settings_check(kind, {key: getattr(spec, key)})
            except ValidationError as exc:
                raise c.fail(exc.message_dict[key][0], f"{path}.{key}") from None
    for key in AWS_SECRET_FIELDS:
        if raw.get(key) is not None:
            spec.aws[key], spec.sources[key] = _resolve_secret(c.string(raw[key], f"{path}.{key}"), f"{path}.{key}", c)
    if raw.get("headers") is not None:
        spec.headers, spec.sources["headers"] = parse_headers(raw["headers"], f"{path}.headers", c)
    return spec


def parse_section(data: dict, c: Any) -> RoutingSpec:
    """`providers`, `models` (with their routing fields) and `rules` of the file, checked together."""
    spec = RoutingSpec()
    seen: set[str] = set()
    for i, raw in enumerate(c.sequence(data.get("providers"), "providers")):
        path = f"providers[{i}]"
        c.mapping(raw, path, PROVIDER_FIELDS, {"name", "kind"})
        name = _name(raw["name"], f"{path}.name", c, max_chars=MAX_PROVIDER_NAME_CHARS, what="provider name")
        if name in seen:
            raise c.fail(f"provider name {name!r} is used twice", f"{path}.name")
        seen.add(name)
        kind = c.string(raw["kind"], f"{path}.kind")
        if kind not in ProviderKind.values:
            raise c.fail(f"unknown kind {kind!r} (use one of: {', '.join(ProviderKind.values)})", f"{path}.kind")
        base_url = c.string(raw.get("base_url") or "", f"{path}.base_url", allow_empty=True)
        if kind == ProviderKind.OPENAI_COMPATIBLE and not base_url:
            raise c.fail("an openai-compatible provider needs a base_url", f"{path}.base_url")
        spec.providers.append(_parse_provider_settings(raw, path, c, ProviderSpec(name, kind, base_url, None, "")))

    model_names: set[str] = set()
    for i, raw in enumerate(c.sequence(data.get("models"), "models")):
        path = f"models[{i}]"
        c.mapping(raw, path, MODEL_FIELDS, {"name", "deployments"})
        name = _name(raw["name"], f"{path}.name", c, what="model name")
        if name in model_names:
            raise c.fail(f"model name {name!r} is used twice", f"{path}.name")
        model_names.add(name)
        deployments = []
        items = c.sequence(raw["deployments"], f"{path}.deployments")
        if not items:
            raise c.fail("a model needs at least one deployment", f"{path}.deployments")
        for j, dep in enumerate(items):
            dpath = f"{path}.deployments[{j}]"
            c.mapping(dep, dpath, DEPLOYMENT_FIELDS, {"provider", "model"})
            provider = c.string(dep["provider"], f"{dpath}.provider")
            if provider not in seen:
                raise c.fail(f"unknown provider {provider!r} (not listed under providers)", f"{dpath}.provider")
            upstream = _name(dep["model"], f"{dpath}.model", c, what="upstream model name")
            if any((provider, upstream) == (p, m) for p, m, _w, _b in deployments):
                raise c.fail(f"{provider}/{upstream} is listed twice", dpath)
            weight = dep.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
                raise c.fail(f"must be a whole number from 1 to {MAX_WEIGHT}", f"{dpath}.weight")
            base_model = ""
            if dep.get("base_model") is not None:
                base_model = _name(dep["base_model"], f"{dpath}.base_model", c, what="base_model")
            deployments.append((provider, upstream, weight, base_model))
        spec.models.append(ModelSpec(name, deployments, parse_model_routing(raw, path, c)))
    check_model_references({m.name: m.routing for m in spec.models}, {m.name: i for i, m in enumerate(spec.models)}, c)
    spec.rules = parse_rules(data.get("rules"), "rules", c, model_names)
    return spec


def apply_section(tenant: Tenant, spec: RoutingSpec, *, actor: Actor) -> list[str]:
    """The file is the whole truth: providers and models it leaves out are removed. Returns change lines."""
    changes: list[str] = []
    providers: dict[str, ProviderCredential] = {}
    for i, p in enumerate(spec.providers):
        existed = ProviderCredential.objects.filter(tenant=tenant, name=p.name).exists()
        try:
            provider, changed = provider_upsert(
                tenant,
                name=p.name,
                kind=p.kind,
                base_url=p.base_url,
                api_key=p.api_key if p.api_key is not None else "",
                api_key_source=p.api_key_source,
                api_version=p.api_version,
                region=p.region,
                # The file is the whole truth: a secret it leaves out is removed.
                **{f: p.aws.get(f, "") for f in AWS_SECRET_FIELDS},
                headers=p.headers,
                secret_sources=p.sources,
                actor=actor,
            )
        except ValidationError as exc:
            field_name, messages = next(iter(exc.message_dict.items()))
            raise ConfigError(messages[0], path=f"providers[{i}].{field_name}") from None
        providers[p.name] = provider
        if changed:
            changes.append(f"{'~' if existed else '+'} provider {p.name}")
    wanted_models = {m.name for m in spec.models}
    touched: dict[str, str] = {}  # model -> "+" or "~", printed in file order
    for m in spec.models:
        existed = ModelDeployment.objects.filter(tenant=tenant, model_name=m.name).exists()
        entries = [(providers[pn], upstream, weight, base) for pn, upstream, weight, base in m.deployments]
        if model_deployments_set(tenant, model_name=m.name, deployments=entries, actor=actor):
            touched[m.name] = "~" if existed else "+"
    # Every model's deployments exist before any route names them (fallbacks may point forward).
    for name in model_routes_set(tenant, routes={m.name: m.routing for m in spec.models}, actor=actor):
        touched.setdefault(name, "~")
    changes.extend(f"{touched[m.name]} model {m.name}" for m in spec.models if m.name in touched)
    # Like models, rules are the whole truth: a file without `rules:` leaves the tenant with none.
    if route_rules_set(tenant, rules=spec.rules, actor=actor):
        changes.append("~ rules")
    stale_models = (
        ModelDeployment.objects.filter(tenant=tenant)
        .exclude(model_name__in=wanted_models)
        .values_list("model_name", flat=True)
        .distinct()
    )
    for name in sorted(set(stale_models)):
        model_delete(tenant, model_name=name, actor=actor)
        changes.append(f"- model {name}")
    for provider in ProviderCredential.objects.filter(tenant=tenant).exclude(name__in=providers.keys()):
        provider_delete(tenant, provider=provider, actor=actor)
        changes.append(f"- provider {provider.name}")
    return changes


def _env_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", "_".join(parts)).upper()


def _export_provider_settings(tenant: Tenant, p: ProviderCredential) -> dict[str, Any]:
    """api_version, region, AWS secrets and headers, in the contract's order; secrets only as env: names."""
    out: dict[str, Any] = {}
    if p.api_version:
        out["api_version"] = p.api_version
    if p.region:
        out["region"] = p.region
    sources = p.secret_sources or {}
    for key in AWS_SECRET_FIELDS:
        source = sources.get(key)
        if source:
            out[key] = export_secret(source, tenant.slug, p.name, key)
    if sources.get("headers"):
        out["headers"] = export_headers(sources["headers"], tenant.slug, p.name)
    return out


def export_headers(sources: dict[str, str], *owner: str) -> dict[str, str]:
    """`headers:` as exported: each as its env: name. Sorted: the JSON column does not keep the file's
    order, and exports must be stable."""
    return {name: export_secret(source, *owner, "header", name) for name, source in sorted(sources.items())}


def export_section(tenant: Tenant) -> dict[str, Any]:
    """`providers` and `models` (always written, maybe empty) and `rules` (only when there are any)."""
    doc: dict[str, Any] = {"providers": [], "models": []}
    for p in ProviderCredential.objects.filter(tenant=tenant).order_by("name"):
        item: dict[str, Any] = {"name": p.name, "kind": p.kind}
        if p.base_url:
            item["base_url"] = p.base_url
        if p.api_key_source.startswith("env:"):
            item["api_key"] = p.api_key_source
        elif p.api_key_encrypted:
            # A literal key cannot be written back in clear; name the variable that should hold it.
            var = f"{tenant.slug}_{p.name}_API_KEY".upper().replace("-", "_")
            item["api_key"] = f"env:{var}"
        item.update(_export_provider_settings(tenant, p))
        doc["providers"].append(item)
    models: dict[str, list] = {}
    for d in ModelDeployment.objects.filter(tenant=tenant).select_related("provider"):
        item = {"provider": d.provider.name, "model": d.upstream_model}
        if d.weight != 1:
            item["weight"] = d.weight
        if d.base_model:
            item["base_model"] = d.base_model
        models.setdefault(d.model_name, []).append(item)
    routes = route_settings_by_model(tenant)
    for name, deps in sorted(models.items()):
        settings = routes.get(name, ROUTE_DEFAULTS)
        # Defaults are left out, so a tenant that never used routing exports exactly as before.
        doc["models"].append(
            {
                "name": name,
                **export_model_routing(settings),
                "deployments": deps,
                **export_model_links(settings),
            }
        )
    rules = export_rules(tenant)
    if rules:
        doc["rules"] = rules
    return doc


def register() -> None:
    SECTIONS["routing"] = Section(("providers", "models", "rules"), parse_section, apply_section, export_section)
