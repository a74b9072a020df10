"""Declarative tenant configuration: `gateway apply FILE.yaml` and `gateway export`.

The file describes one tenant completely: providers and models not in the file are removed, so
applying the same file twice changes nothing, and `export` output applies back unchanged.
Errors name the line and the field; nothing is written unless the whole file is valid.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from routing import declarative as routing_yaml
from routing import policies as routing_policies
from routing.models import (
    AWS_SECRET_FIELDS,
    MAX_WEIGHT,
    ROUTE_DEFAULTS,
    ModelDeployment,
    ProviderCredential,
    ProviderKind,
)
from routing.services import (
    KIND_FIELDS,
    REQUIRED_FIELDS,
    ROUTE_FIELDS,
    header_problem,
    model_delete,
    model_deployments_set,
    model_routes_set,
    provider_delete,
    provider_settings_check,
    provider_upsert,
    route_rules_set,
)
from tenants.audit import Actor
from tenants.models import Tenant, slug_validator
from tenants.services import tenant_upsert

SCHEMA_VERSION = 1


class ConfigError(Exception):
    """A problem with the file, located by line and field path."""

    def __init__(self, message: str, *, line: int | None = None, path: str = "") -> None:
        self.line = line
        self.path = path
        where = []
        if line is not None:
            where.append(f"line {line}")
        if path:
            where.append(path)
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


# --- YAML loading with line numbers ------------------------------------------------------------------


class _Located:
    """Maps a field path ("providers[0].kind") to the line it was written on."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rsplit(".", 1)[0] if "." in path else (path.rsplit("[", 1)[0] if "[" in path else "")
        return self.lines.get("")


def _to_python(node: yaml.Node, path: str, loc: _Located) -> Any:
    loc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("keys must be plain strings", line=key_node.start_mark.line + 1, path=path)
            key = key_node.value
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1, path=child)
            loc.lines[child] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, child, loc)
            loc.lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, f"{path}[{i}]", loc) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_yaml(text: str) -> tuple[Any, _Located]:
    loc = _Located()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", line=(mark.line + 1) if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}") from None
    if node is None:
        raise ConfigError("the file is empty")
    return _to_python(node, "", loc), loc


# --- Schema ----------------------------------------------------------------------------------------


@dataclass
class ProviderSpec:
    name: str
    kind: str
    base_url: str
    api_key: str | None  # resolved secret, None when the file gives none
    api_key_source: str  # "env:NAME" or "literal" or ""
    api_version: str = ""
    region: str = ""
    aws: dict[str, str] = field(default_factory=dict)  # aws_* field -> resolved secret
    headers: dict[str, str] = field(default_factory=dict)  # name -> resolved value
    # Where the secrets above came from, in provider_upsert's shape: {"aws_...": "env:X", "headers": {...}}.
    sources: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    name: str
    deployments: list[tuple[str, str, int, str]]  # (provider name, upstream model, weight, base_model)
    routing: dict = field(default_factory=lambda: dict(ROUTE_DEFAULTS))  # strategy, retries, fallbacks, ...


@dataclass
class TenantSpec:
    slug: str
    name: str
    providers: list[ProviderSpec] = field(default_factory=list)
    models: list[ModelSpec] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)  # routing rules, in order (routing.declarative)
    extra: dict[str, Any] = field(default_factory=dict)


TOP_LEVEL = {"version", "tenant", "name", "providers", "models", "rules"}
PROVIDER_FIELDS = {"name", "kind", "base_url", "api_key", "api_version", "region", "headers", *AWS_SECRET_FIELDS}
MODEL_FIELDS = {"name", "deployments"} | ROUTE_FIELDS
DEPLOYMENT_FIELDS = {"provider", "model", "weight", "base_model"}


class _Checker:
    def __init__(self, loc: _Located) -> None:
        self.loc = loc

    def fail(self, message: str, path: str) -> ConfigError:
        return ConfigError(message, line=self.loc.line(path), path=path)

    def mapping(self, value: Any, path: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(f"expected a mapping, got {type(value).__name__}", path)
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})",
                    f"{path}.{key}" if path else key,
                )
        for key in sorted(required):
            if key not in value or value[key] is None:
                raise self.fail(f"missing required field {key!r}", path)
        return value

    def string(self, value: Any, path: str, *, allow_empty: bool = False) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(f"expected a string, got {type(value).__name__}", path)
        text = str(value).strip()
        if not text and not allow_empty:
            raise self.fail("must not be empty", path)
        return text

    def sequence(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"expected a list, got {type(value).__name__}", path)
        return value


def _resolve_secret(raw: str, path: str, checker: _Checker) -> tuple[str, str]:
    if raw.startswith("env:"):
        var = raw[4:].strip()
        if not var:
            raise checker.fail("env: needs a variable name, e.g. env:OPENAI_API_KEY", path)
        if var not in os.environ:
            raise checker.fail(f"environment variable {var} is not set", path)
        return os.environ[var], f"env:{var}"
    return raw, "literal"


def _parse_provider_settings(raw: dict, path: str, c: _Checker, spec: ProviderSpec) -> ProviderSpec:
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
        hpath = f"{path}.headers"
        if not isinstance(raw["headers"], dict):
            raise c.fail(f"expected a mapping of header names to values, got {type(raw['headers']).__name__}", hpath)
        seen: set[str] = set()
        header_sources: dict[str, str] = {}
        for name, value in raw["headers"].items():
            vpath = f"{hpath}.{name}"
            text = value if isinstance(value, str) else c.string(value, vpath)
            # Checked as written and again once resolved: an env variable could hold a line break too.
            problem = header_problem(name, text)
            if not problem:
                text, header_sources[name] = _resolve_secret(text.strip(), vpath, c)
                problem = header_problem(name, text)
            if problem:
                raise c.fail(problem, vpath)
            if name.lower() in seen:
                raise c.fail(f"header {name} is given twice", vpath)
            seen.add(name.lower())
            spec.headers[name] = text
        spec.sources["headers"] = header_sources
    return spec


def parse_config(text: str, extensions: dict | None = None) -> TenantSpec:
    data, loc = load_yaml(text)
    c = _Checker(loc)
    allowed = TOP_LEVEL | set((extensions or {}).keys())
    c.mapping(data, "", allowed, {"tenant"})
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise c.fail(f"unsupported version {version!r}; this gateway reads version {SCHEMA_VERSION}", "version")
    slug = c.string(data["tenant"], "tenant")
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise c.fail(f"{slug!r}: {exc.messages[0]}", "tenant") from None
    spec = TenantSpec(slug=slug, name=c.string(data.get("name") or slug, "name"))

    seen: set[str] = set()
    for i, raw in enumerate(c.sequence(data.get("providers"), "providers")):
        path = f"providers[{i}]"
        c.mapping(raw, path, PROVIDER_FIELDS, {"name", "kind"})
        name = c.string(raw["name"], f"{path}.name")
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
        name = c.string(raw["name"], f"{path}.name")
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
            upstream = c.string(dep["model"], f"{dpath}.model")
            if any((provider, upstream) == (p, m) for p, m, _w, _b in deployments):
                raise c.fail(f"{provider}/{upstream} is listed twice", dpath)
            weight = dep.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
                raise c.fail(f"must be a whole number from 1 to {MAX_WEIGHT}", f"{dpath}.weight")
            base_model = ""
            if dep.get("base_model") is not None:
                base_model = c.string(dep["base_model"], f"{dpath}.base_model")
                if len(base_model) > 200:
                    raise c.fail("must be at most 200 characters", f"{dpath}.base_model")
            deployments.append((provider, upstream, weight, base_model))
        spec.models.append(ModelSpec(name, deployments, routing_yaml.parse_model_routing(raw, path, c)))
    routing_yaml.check_model_references(
        {m.name: m.routing for m in spec.models}, {m.name: i for i, m in enumerate(spec.models)}, c
    )
    spec.rules = routing_yaml.parse_rules(data.get("rules"), "rules", c, model_names)

    for key, parser in (extensions or {}).items():
        if key in data:
            spec.extra[key] = parser(data[key], key, c)
    return spec


# Later issues register extra top-level sections here: name -> (parse(value, path, checker), apply).
EXTENSIONS: dict[str, tuple[Any, Any]] = {}
# Data policies (issue 11); routing.policies checks them. An absent section leaves the stored policy.
EXTENSIONS["pii"] = (routing_policies.parse_pii_section, routing_policies.apply_pii_section)
EXTENSIONS["cache"] = (routing_policies.parse_cache_section, routing_policies.apply_cache_section)


def apply_config(text: str, *, actor: Actor | None = None) -> tuple[Tenant, list[str]]:
    """Validate the whole file, then apply it in one transaction. Returns the tenant and change lines."""
    actor = actor or Actor.cli()
    spec = parse_config(text, {k: v[0] for k, v in EXTENSIONS.items()})
    changes: list[str] = []
    try:
        with transaction.atomic():
            tenant, created = tenant_upsert(slug=spec.slug, name=spec.name, actor=actor)
            if created:
                changes.append(f"+ tenant {tenant.slug}")
            elif tenant.name != spec.name:
                changes.append(f"~ tenant {tenant.slug} name")
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
            for key, (_parse, apply) in EXTENSIONS.items():
                changes.extend(apply(tenant, spec.extra.get(key), actor=actor))
    except ValidationError as exc:
        raise ConfigError("; ".join(exc.messages)) from None
    return tenant, changes


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
            # A literal cannot be written back in clear; name the variable that should hold it.
            out[key] = source if source.startswith("env:") else f"env:{_env_name(tenant.slug, p.name, key)}"
    header_sources = sources.get("headers") or {}
    if header_sources:
        out["headers"] = {
            name: source if source.startswith("env:") else f"env:{_env_name(tenant.slug, p.name, 'header', name)}"
            # Sorted: the JSON column does not keep the file's order, and exports must be stable.
            for name, source in sorted(header_sources.items())
        }
    return out


def export_config(tenant: Tenant) -> str:
    """YAML that apply_config accepts back unchanged. Secrets appear only as env: references."""
    doc: dict[str, Any] = {"tenant": tenant.slug, "name": tenant.name, "providers": [], "models": []}
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
    routes = routing_yaml.route_settings_by_model(tenant)
    for name, deps in sorted(models.items()):
        settings = routes.get(name, ROUTE_DEFAULTS)
        # Defaults are left out, so a tenant that never used routing exports exactly as before.
        doc["models"].append(
            {
                "name": name,
                **routing_yaml.export_model_routing(settings),
                "deployments": deps,
                **routing_yaml.export_model_links(settings),
            }
        )
    rules = routing_yaml.export_rules(tenant)
    if rules:
        doc["rules"] = rules
    for key, (_parse, apply) in EXTENSIONS.items():
        exporter = getattr(apply, "export", None)
        if exporter is not None:
            value = exporter(tenant)
            if value is not None:
                doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
